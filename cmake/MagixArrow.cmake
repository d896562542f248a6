# Apache Arrow / Parquet C++ for the parquet and arrow data sources (docs/data.md).
#
# Debian does not package Arrow; the pyarrow wheel ships its C++ headers and shared libraries.
# scripts/setup.sh installs the pinned pyarrow into .venv; this file asks that interpreter where
# they are and defines the imported target magix::arrow (libarrow + libparquet, with the wheel's
# folder in the RPATH of whatever links it, so `magix` runs without LD_LIBRARY_PATH).
#
# MAGIX_ARROW: AUTO (default: on when found), ON (an error when not found) or OFF.
# MAGIX_ARROW_PYTHON: the interpreter whose pyarrow is used (default: .venv/bin/python, else
# Python_EXECUTABLE, else python3 on PATH).
set(MAGIX_ARROW AUTO CACHE STRING "Parquet/Arrow data sources through pyarrow's C++ libraries: AUTO, ON or OFF")
set_property(CACHE MAGIX_ARROW PROPERTY STRINGS AUTO ON OFF)
set(MAGIX_ARROW_PYTHON "" CACHE FILEPATH "Python interpreter with pyarrow (default: .venv/bin/python)")
set(MAGIX_ARROW_FOUND OFF)
# The pyarrow version scripts/setup.sh installs; another version is used with a warning.
set(MAGIX_PYARROW_PIN "26.0.1")

if(NOT MAGIX_ARROW STREQUAL "OFF")
  set(_py "${MAGIX_ARROW_PYTHON}")
  if(NOT _py)
    if(EXISTS "${PROJECT_SOURCE_DIR}/.venv/bin/python")
      set(_py "${PROJECT_SOURCE_DIR}/.venv/bin/python")
    elseif(Python_EXECUTABLE)
      set(_py "${Python_EXECUTABLE}")
    else()
      find_program(_py NAMES python3)
    endif()
  endif()
  set(_why "no Python interpreter")
  if(_py)
    execute_process(
      COMMAND "${_py}" -c "import pyarrow; print(pyarrow.__version__); print(pyarrow.get_include()); print(pyarrow.get_library_dirs()[0])"
      OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(_rc EQUAL 0)
      string(REPLACE "\n" ";" _out "${_out}")
      list(GET _out 0 MAGIX_PYARROW_VERSION)
      list(GET _out 1 _inc)
      list(GET _out 2 _libdir)
      file(GLOB _arrow_lib "${_libdir}/libarrow.so.[0-9]*")
      file(GLOB _parquet_lib "${_libdir}/libparquet.so.[0-9]*")
      # libarrow.so.2600 (the SONAME), not libarrow.so.2600.1.0 where both exist.
      list(FILTER _arrow_lib EXCLUDE REGEX "\\.so\\.[0-9]+\\.")
      list(FILTER _parquet_lib EXCLUDE REGEX "\\.so\\.[0-9]+\\.")
      if(_arrow_lib AND _parquet_lib AND EXISTS "${_inc}/parquet/arrow/reader.h")
        list(GET _arrow_lib 0 _arrow_lib)
        list(GET _parquet_lib 0 _parquet_lib)
        # The wheel's C++ ABI must be ours: a function returning std::string links only when the
        # _GLIBCXX_USE_CXX11_ABI setting agrees.
        include(CheckCXXSourceCompiles)
        set(CMAKE_REQUIRED_INCLUDES "${_inc}")
        set(CMAKE_REQUIRED_LIBRARIES "${_arrow_lib}" "${_parquet_lib}")
        set(CMAKE_REQUIRED_LINK_OPTIONS "-Wl,-rpath,${_libdir}")
        set(CMAKE_REQUIRED_FLAGS "-std=c++20")
        unset(MAGIX_ARROW_LINKS CACHE)
        check_cxx_source_compiles([[
          #include <arrow/status.h>
          #include <parquet/exception.h>
          int main() { return static_cast<int>(arrow::Status::OK().ToString().size() +
                                               parquet::ParquetException("x").what()[0]); }
        ]] MAGIX_ARROW_LINKS)
        unset(CMAKE_REQUIRED_INCLUDES)
        unset(CMAKE_REQUIRED_LIBRARIES)
        unset(CMAKE_REQUIRED_LINK_OPTIONS)
        unset(CMAKE_REQUIRED_FLAGS)
        if(MAGIX_ARROW_LINKS)
          set(MAGIX_ARROW_FOUND ON)
        else()
          set(_why "pyarrow ${MAGIX_PYARROW_VERSION}'s C++ libraries do not link with this compiler (C++ ABI?)")
        endif()
      else()
        set(_why "pyarrow ${MAGIX_PYARROW_VERSION} in ${_libdir} has no libarrow/libparquet or headers")
      endif()
    else()
      set(_why "${_py} has no pyarrow")
    endif()
  endif()
  if(MAGIX_ARROW_FOUND)
    # magix::arrow_libs: the libraries only; magix::arrow: with the headers. Linked by full path:
    # CMake puts the folder in the build tree's RPATH; installed binaries get it through
    # INSTALL_RPATH (src/CMakeLists.txt).
    add_library(magix_arrow_libs INTERFACE)
    add_library(magix::arrow_libs ALIAS magix_arrow_libs)
    target_link_libraries(magix_arrow_libs INTERFACE "${_arrow_lib}" "${_parquet_lib}")
    add_library(magix_arrow INTERFACE)
    add_library(magix::arrow ALIAS magix_arrow)
    target_include_directories(magix_arrow SYSTEM INTERFACE "${_inc}")
    target_link_libraries(magix_arrow INTERFACE magix_arrow_libs)
    set(MAGIX_ARROW_LIBDIR "${_libdir}")
    set(MAGIX_ARROW_INCLUDE_DIR "${_inc}")
    message(STATUS "magix: Parquet/Arrow sources ON (pyarrow ${MAGIX_PYARROW_VERSION}, ${_libdir})")
    if(NOT MAGIX_PYARROW_VERSION STREQUAL MAGIX_PYARROW_PIN)
      message(WARNING "magix: pyarrow ${MAGIX_PYARROW_VERSION} found; scripts/setup.sh pins ${MAGIX_PYARROW_PIN}")
    endif()
  elseif(MAGIX_ARROW STREQUAL "ON")
    message(FATAL_ERROR "MAGIX_ARROW=ON but Arrow was not found: ${_why}. Run scripts/setup.sh "
                        "(installs pyarrow==${MAGIX_PYARROW_PIN} into .venv) or set MAGIX_ARROW_PYTHON.")
  else()
    message(STATUS "magix: Parquet/Arrow sources OFF (${_why}; scripts/setup.sh installs pyarrow)")
  endif()
else()
  message(STATUS "magix: Parquet/Arrow sources OFF (MAGIX_ARROW=OFF)")
endif()
