# The CUDA backend (src/backends/cuda/, docs/gpu.md): nvcc, the CUDA runtime and cuBLASLt (whose
# headers are needed here; the library itself is loaded at run time).
#
# MAGIX_CUDA: AUTO (default: on when nvcc and cuBLASLt are found), ON (an error when they are
# not) or OFF (the CPU-only build). nvcc is CMAKE_CUDA_COMPILER, else $CUDACXX, else nvcc on
# PATH or in /usr/local/cuda/bin. CMAKE_CUDA_ARCHITECTURES defaults to 90 (H100/H200); set it
# (e.g. -DCMAKE_CUDA_ARCHITECTURES="80;90") for other GPUs.
#
# Sets MAGIX_CUDA_FOUND (and MAGIX_NCCL_FOUND, MAGIX_NCCL_INCLUDE_DIR when nccl.h is there too);
# src/CMakeLists.txt then builds the kernels and defines MAGIX_HAS_CUDA (and MAGIX_HAS_NCCL).
set(MAGIX_CUDA AUTO CACHE STRING "CUDA backend (nvcc, cuBLASLt): AUTO, ON or OFF")
set_property(CACHE MAGIX_CUDA PROPERTY STRINGS AUTO ON OFF)
set(MAGIX_CUDA_FOUND OFF)
set(MAGIX_NCCL_FOUND OFF)

if(NOT MAGIX_CUDA STREQUAL "OFF")
  set(_why "")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    find_program(MAGIX_NVCC nvcc PATHS /usr/local/cuda/bin NO_CACHE)
    if(MAGIX_NVCC)
      set(CMAKE_CUDA_COMPILER "${MAGIX_NVCC}" CACHE FILEPATH "CUDA compiler")
    endif()
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
      set(CMAKE_CUDA_ARCHITECTURES 90 CACHE STRING "CUDA architectures (90: H100/H200)")
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit)
    if(CUDAToolkit_FOUND AND TARGET CUDA::cudart AND TARGET CUDA::cublasLt)
      set(MAGIX_CUDA_FOUND ON)
    else()
      set(_why "the CUDA toolkit's runtime or cuBLASLt was not found")
    endif()
  else()
    set(_why "no nvcc (set CMAKE_CUDA_COMPILER or CUDACXX, or put nvcc on PATH)")
  endif()
  if(MAGIX_CUDA_FOUND)
    # ccache caches nvcc's objects too.
    if(MAGIX_CCACHE AND NOT CMAKE_CUDA_COMPILER_LAUNCHER)
      set(CMAKE_CUDA_COMPILER_LAUNCHER ${MAGIX_CCACHE})
    endif()
    message(STATUS "magix: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, "
                   "architectures ${CMAKE_CUDA_ARCHITECTURES})")
    # NCCL (src/backends/cuda/nccl_*.cpp: collectives of CUDA tensors) needs only its header
    # here: libnccl.so.2 is loaded with dlopen at the first collective of CUDA tensors over a
    # group of several ranks, so a process that makes none, or a machine without NCCL, does not
    # need it. Without the header the collectives of CUDA tensors stage through host memory.
    find_path(MAGIX_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} NO_CACHE)
    if(MAGIX_NCCL_INCLUDE_DIR)
      set(MAGIX_NCCL_FOUND ON)
      message(STATUS "magix: NCCL collectives ON (${MAGIX_NCCL_INCLUDE_DIR}/nccl.h; "
                     "libnccl.so.2 loaded at run time)")
    else()
      message(STATUS "magix: NCCL collectives OFF (no nccl.h beside the CUDA headers)")
    endif()
  elseif(MAGIX_CUDA STREQUAL "ON")
    message(FATAL_ERROR "MAGIX_CUDA=ON but the CUDA backend cannot be built: ${_why}. Install the "
                        "CUDA toolkit (nvcc, cudart, cuBLASLt) or configure with -DMAGIX_CUDA=OFF.")
  else()
    message(STATUS "magix: CUDA backend OFF (${_why})")
  endif()
else()
  message(STATUS "magix: CUDA backend OFF (MAGIX_CUDA=OFF)")
endif()
