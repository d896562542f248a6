// Dense matrix products on the CPU, through the BLAS chosen at run time (see docs/kernels.md).
#pragma once

#include <cstdint>
#include <string>

namespace magix::cpu {

// Row-major C (M, N) = alpha * op(A) · op(B) + beta * C, op(X) = X or X^T.
// A is (M, K) or (K, M) if trans_a; B is (K, N) or (N, K) if trans_b.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Name of the GEMM engine in use, e.g. "OpenBLAS 0.3.21 (SkylakeX)".
std::string gemm_backend_name();

// Plain triple loop, the reference the BLAS path is tested against.
void gemm_naive(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                int64_t ldc);

}  // namespace magix::cpu
