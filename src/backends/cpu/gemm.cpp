#include "backends/cpu/gemm.hpp"

#include <algorithm>
#include <limits>

#include "backends/cpu/blas_library.hpp"
#include "magix/error.hpp"

namespace magix::cpu {

namespace {

// Shapes and leading dimensions as row-major CBLAS requires; the BLAS takes 32-bit ints.
void check_gemm_args(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, int64_t lda,
                     int64_t ldb, int64_t ldc) {
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  MAGIX_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size M={} N={} K={}", M, N, K);
  const int64_t a_cols = trans_a ? M : K;
  const int64_t b_cols = trans_b ? K : N;
  MAGIX_CHECK(lda >= std::max<int64_t>(1, a_cols), "gemm: lda={} < {}", lda, a_cols);
  MAGIX_CHECK(ldb >= std::max<int64_t>(1, b_cols), "gemm: ldb={} < {}", ldb, b_cols);
  MAGIX_CHECK(ldc >= std::max<int64_t>(1, N), "gemm: ldc={} < N={}", ldc, N);
  MAGIX_CHECK(M <= kIntMax && N <= kIntMax && K <= kIntMax && lda <= kIntMax && ldb <= kIntMax &&
                  ldc <= kIntMax,
              "gemm: a size exceeds the BLAS's 32-bit range (M={} N={} K={})", M, N, K);
}

// C (M, N) = beta * C, with beta == 0 meaning "overwrite" (NaNs in C are not propagated).
void scale_rows(float* C, int64_t ldc, int64_t M, int64_t N, float beta) {
  for (int64_t i = 0; i < M; i++) {
    float* row = C + i * ldc;
    for (int64_t j = 0; j < N; j++) row[j] = beta == 0.0f ? 0.0f : beta * row[j];
  }
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  check_gemm_args(trans_a, trans_b, M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {
    scale_rows(C, ldc, M, N, beta);
    return;
  }
  blas_library().sgemm(kCblasRowMajor, trans_a ? kCblasTrans : kCblasNoTrans,
                       trans_b ? kCblasTrans : kCblasNoTrans, static_cast<int>(M),
                       static_cast<int>(N), static_cast<int>(K), alpha, A, static_cast<int>(lda), B,
                       static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
}

std::string gemm_backend_name() {
  return blas_library().name;
}

void gemm_naive(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                int64_t ldc) {
  check_gemm_args(trans_a, trans_b, M, N, K, lda, ldb, ldc);
  // Accumulates in double so that it can serve as the reference for the BLAS path.
#pragma omp parallel for if (M * N * K > (1 << 16))
  for (int64_t i = 0; i < M; i++) {
    for (int64_t j = 0; j < N; j++) {
      double acc = 0.0;
      for (int64_t k = 0; k < K; k++) {
        const float a = trans_a ? A[k * lda + i] : A[i * lda + k];
        const float b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
        acc += static_cast<double>(a) * b;
      }
      float& c = C[i * ldc + j];
      const double prior = beta == 0.0f ? 0.0 : static_cast<double>(beta) * c;
      c = static_cast<float>(alpha * acc + prior);
    }
  }
}

}  // namespace magix::cpu
