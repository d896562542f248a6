// The BLAS library behind gemm(), loaded with dlopen on first use (see docs/kernels.md).
// magix does not link a BLAS at link time: it opens OpenBLAS (OpenMP build) at run time so that
// it can pick OpenBLAS's AVX-512 kernels on CPUs where OpenBLAS's own detection does not.
#pragma once

#include <string>

namespace magix::cpu {

// CBLAS constants (the values every CBLAS uses).
inline constexpr int kCblasRowMajor = 101;
inline constexpr int kCblasNoTrans = 111;
inline constexpr int kCblasTrans = 112;

struct BlasLibrary {
  // cblas_sgemm with 32-bit integers (LP64 CBLAS, as Debian's OpenBLAS and BLIS export it).
  using Sgemm = void (*)(int layout, int trans_a, int trans_b, int M, int N, int K, float alpha,
                         const float* A, int lda, const float* B, int ldb, float beta, float* C,
                         int ldc);
  Sgemm sgemm = nullptr;
  std::string name;  // e.g. "OpenBLAS 0.3.21 (SkylakeX, OpenMP)"
  std::string path;  // the file dlopen found
};

// The process-wide library, loaded once (thread-safe). Search order:
//   1. $MAGIX_BLAS_LIBRARY if set (a path or soname of a library exporting cblas_sgemm), only;
//   2. Debian's OpenMP OpenBLAS, /usr/lib/<multiarch>/openblas-openmp/libopenblas.so.0;
//   3. "libopenblas.so.0" through the normal library search (may be the pthread build).
// Before opening OpenBLAS, if the user has not set OPENBLAS_CORETYPE and the CPU has AVX-512
// (F, BW, DQ, VL), OPENBLAS_CORETYPE is set to blas_avx512_coretype() for the load and restored
// afterwards. Throws magix::Error naming every path tried when none loads.
const BlasLibrary& blas_library();

// The OpenBLAS core type magix asks for on AVX-512 CPUs (chosen by bench/gemm, docs/kernels.md).
const char* blas_avx512_coretype();

// True when this CPU and OS support AVX-512 F/BW/DQ/VL (what OpenBLAS's SkylakeX kernels need).
bool cpu_has_avx512();

}  // namespace magix::cpu
