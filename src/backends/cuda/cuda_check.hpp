// Checks of CUDA runtime and cuBLASLt calls: a failure throws magix::Error naming the call, the
// error and the source location. Host code of src/backends/cuda/ only.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "backends/cuda/cublaslt_library.hpp"
#include "magix/error.hpp"

#define MAGIX_CUDA_CHECK(call)                                                                    \
  do {                                                                                            \
    const cudaError_t magix_cuda_err_ = (call);                                                   \
    if (magix_cuda_err_ != cudaSuccess) {                                                         \
      ::magix::throw_error(                                                                       \
          __FILE__, __LINE__,                                                                     \
          ::fmt::format("CUDA call {} failed: {} ({})", #call,                                    \
                        cudaGetErrorString(magix_cuda_err_), cudaGetErrorName(magix_cuda_err_))); \
    }                                                                                             \
  } while (0)

#define MAGIX_CUBLAS_CHECK(call)                                                   \
  do {                                                                             \
    const cublasStatus_t magix_cublas_st_ = (call);                                \
    if (magix_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                               \
      ::magix::throw_error(                                                        \
          __FILE__, __LINE__,                                                      \
          ::fmt::format("cuBLASLt call {} failed: {} ({})", #call,                 \
                        ::magix::cuda::cublaslt().status_string(magix_cublas_st_), \
                        ::magix::cuda::cublaslt().status_name(magix_cublas_st_))); \
    }                                                                              \
  } while (0)

// After a kernel launch: a bad configuration or an earlier asynchronous fault, named by the op.
#define MAGIX_CUDA_CHECK_LAUNCH(op)                                                               \
  do {                                                                                            \
    const cudaError_t magix_cuda_err_ = cudaGetLastError();                                       \
    if (magix_cuda_err_ != cudaSuccess) {                                                         \
      ::magix::throw_error(                                                                       \
          __FILE__, __LINE__,                                                                     \
          ::fmt::format("{}: CUDA kernel launch failed: {} ({})", op,                             \
                        cudaGetErrorString(magix_cuda_err_), cudaGetErrorName(magix_cuda_err_))); \
    }                                                                                             \
  } while (0)
