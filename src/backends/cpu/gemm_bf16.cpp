#include "backends/cpu/gemm_bf16.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "backends/cpu/amx_gemm.hpp"
#include "backends/cpu/convert.hpp"
#include "backends/cpu/gemm.hpp"
#include "backends/cpu/onednn_matmul.hpp"
#include "backends/cpu/scratch_buffer.hpp"
#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"

namespace magix::cpu {

namespace {

enum class Engine {
  kAmx,     // magix's AMX kernels (amx_gemm.hpp) where they apply, oneDNN's matmul elsewhere
  kOnednn,  // oneDNN matmul, bf16 operands as they are
  kFp32,    // operands widened to fp32, then gemm() (OpenBLAS sgemm)
};

// The products the AMX kernels take (with A not transposed): few rows against a large B, as the
// frozen weights of a LoRA step. Measured (docs/kernels.md) faster than oneDNN 2.6's matmul at
// M = 128 and 512 on the decoder's weight products, slower at M = 2048, where oneDNN's blocking
// reuses each weight tile more, and slower on small B (attention's per-head products, the
// 256 x 2048 k/v weights), where packing A and transposing C back weigh more.
constexpr int64_t kAmxMaxRows = 512;
constexpr int64_t kAmxMinBElems = int64_t{1} << 20;

Engine choose_engine() {
  const char* forced = std::getenv("MAGIX_GEMM_BF16_ENGINE");
  if (forced != nullptr && *forced != '\0') {
    if (std::strcmp(forced, "amx") == 0) {
      MAGIX_CHECK(amx_gemm_available(),
                  "MAGIX_GEMM_BF16_ENGINE=amx: this CPU (or its OS) offers no AMX-BF16");
      return Engine::kAmx;
    }
    if (std::strcmp(forced, "onednn") == 0) return Engine::kOnednn;
    if (std::strcmp(forced, "fp32") == 0) return Engine::kFp32;
    MAGIX_FAIL("MAGIX_GEMM_BF16_ENGINE={} is not one of: amx, onednn, fp32", forced);
  }
  // Measured (docs/kernels.md): with AMX oneDNN runs 2.7-4.6x the fp32 GFLOP/s on the decoder's
  // shapes. Without AMX its AVX512-BF16 kernels reached 0.6-1.0x the widened fp32 path on this
  // Xeon, and without AVX512-BF16 it emulates bf16 at a quarter of fp32 speed (AVX-512) or
  // refuses bf16 matmul (AVX2); so everything else widens to fp32.
  if (!onednn_uses_amx()) return Engine::kFp32;
  return amx_gemm_available() ? Engine::kAmx : Engine::kOnednn;
}

Engine engine() {
  static const Engine chosen = choose_engine();  // once; a throw is retried at the next call
  return chosen;
}

struct Workspace {
  ScratchBuffer a, b, c;
};

Workspace& thread_workspace() {
  thread_local Workspace workspace;
  return workspace;
}

void check_args(const char* op, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                int64_t lda, int64_t ldb, int64_t ldc) {
  MAGIX_CHECK(M >= 0 && N >= 0 && K >= 0, "{}: negative size M={} N={} K={}", op, M, N, K);
  const int64_t a_cols = trans_a ? M : K;
  const int64_t b_cols = trans_b ? K : N;
  MAGIX_CHECK(lda >= std::max<int64_t>(1, a_cols), "{}: lda={} < {}", op, lda, a_cols);
  MAGIX_CHECK(ldb >= std::max<int64_t>(1, b_cols), "{}: ldb={} < {}", op, ldb, b_cols);
  MAGIX_CHECK(ldc >= std::max<int64_t>(1, N), "{}: ldc={} < N={}", op, ldc, N);
}

// Copies rows (rows, cols) with leading dimension ld into dst (rows, cols) with ld = cols.
template <typename T>
void copy_rows(const T* src, int64_t src_ld, T* dst, int64_t dst_ld, int64_t rows, int64_t cols) {
#pragma omp parallel for if (rows * cols >= kConvertParallelMin)
  for (int64_t r = 0; r < rows; r++) {
    std::memcpy(dst + r * dst_ld, src + r * src_ld, cols * sizeof(T));
  }
}

// X (rows, cols) with leading dimension ld, as a dense array: X itself, or a packed copy.
const uint16_t* dense(const uint16_t* X, int64_t rows, int64_t cols, int64_t ld,
                      ScratchBuffer& buffer) {
  if (ld == cols || rows <= 1) return X;
  uint16_t* packed = buffer.get<uint16_t>(rows * cols, "gemm_bf16");
  copy_rows(X, ld, packed, cols, rows, cols);
  return packed;
}

// X (rows, cols) bf16 with leading dimension ld into dense fp32 (rows, cols), split between the
// threads of the enclosing parallel region (an orphaned `omp for`; serial outside a region).
void widen_rows(const uint16_t* X, int64_t rows, int64_t cols, int64_t ld, float* dst) {
  if (ld == cols || rows <= 1) {
    constexpr int64_t kBlock = int64_t{1} << 14;
    const int64_t n = rows * cols, blocks = (n + kBlock - 1) / kBlock;
#pragma omp for schedule(static) nowait
    for (int64_t b = 0; b < blocks; b++) {
      bf16_to_f32(X + b * kBlock, dst + b * kBlock, std::min(kBlock, n - b * kBlock));
    }
  } else {
#pragma omp for schedule(static) nowait
    for (int64_t r = 0; r < rows; r++) bf16_to_f32(X + r * ld, dst + r * cols, cols);
  }
}

// C (M, N) = alpha op(A)·op(B) [+ bias] [+ C] with checked arguments, M, N, K > 0, alpha != 0.
// C is fp32, or bf16 if c_bf16 (then accumulate is false).
void run(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
         const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, const float* bias,
         bool accumulate, void* C, int64_t ldc, bool c_bf16) {
  Workspace& ws = thread_workspace();
  const int64_t a_rows = trans_a ? K : M, a_cols = trans_a ? M : K;
  const int64_t b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
  if (engine() == Engine::kAmx && M <= kAmxMaxRows && N * K >= kAmxMinBElems &&
      amx_gemm_takes(trans_a, M, N, K)) {
    amx_gemm_bf16(trans_b, M, N, K, alpha, A, lda, B, ldb, bias, accumulate, C, ldc, c_bf16);
    return;
  }
  if (engine() != Engine::kFp32) {
    const uint16_t* a = dense(A, a_rows, a_cols, lda, ws.a);
    const uint16_t* b = dense(B, b_rows, b_cols, ldb, ws.b);
    if (ldc == N || M == 1) {
      onednn_matmul_bf16(trans_a, trans_b, M, N, K, alpha, a, b, bias, accumulate, C, c_bf16);
      return;
    }
    // C with padded rows goes through a dense copy (oneDNN's brgemm matmul needs dense C too).
    if (c_bf16) {
      uint16_t* c = ws.c.get<uint16_t>(M * N, "gemm_bf16");
      onednn_matmul_bf16(trans_a, trans_b, M, N, K, alpha, a, b, bias, false, c, true);
      copy_rows(c, N, static_cast<uint16_t*>(C), ldc, M, N);
    } else {
      float* c = ws.c.get<float>(M * N, "gemm_bf16");
      if (accumulate) copy_rows(static_cast<const float*>(C), ldc, c, N, M, N);
      onednn_matmul_bf16(trans_a, trans_b, M, N, K, alpha, a, b, nullptr, accumulate, c, false);
      copy_rows(c, N, static_cast<float*>(C), ldc, M, N);
    }
    return;
  }
  float* a = ws.a.get<float>(a_rows * a_cols, "gemm_bf16");
  float* b = ws.b.get<float>(b_rows * b_cols, "gemm_bf16");
  // One parallel region for both operands: on a busy machine every region start can wait a
  // scheduler time slice for the team, which costs more than the conversion itself.
#pragma omp parallel if (a_rows * a_cols + b_rows * b_cols >= kConvertParallelMin)
  {
    widen_rows(A, a_rows, a_cols, lda, a);
    widen_rows(B, b_rows, b_cols, ldb, b);
  }
  if (!c_bf16) {
    gemm(trans_a, trans_b, M, N, K, alpha, a, a_cols, b, b_cols, accumulate ? 1.0f : 0.0f,
         static_cast<float*>(C), ldc);
    return;
  }
  float* c = ws.c.get<float>(M * N, "gemm_bf16");
  gemm(trans_a, trans_b, M, N, K, alpha, a, a_cols, b, b_cols, 0.0f, c, N);
  uint16_t* out = static_cast<uint16_t*>(C);
#pragma omp parallel for if (M * N >= kConvertParallelMin)
  for (int64_t i = 0; i < M; i++) {
    float* row = c + i * N;
    if (bias != nullptr) {
      for (int64_t j = 0; j < N; j++) row[j] += bias[j];
    }
    f32_to_bf16(row, out + i * ldc, N);
  }
}

}  // namespace

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C,
               int64_t ldc) {
  check_args("gemm_bf16", trans_a, trans_b, M, N, K, lda, ldb, ldc);
  MAGIX_CHECK(beta == 0.0f || beta == 1.0f, "gemm_bf16: beta={} (only 0 and 1 are supported)",
              beta);
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {
    if (beta == 0.0f) {
      for (int64_t i = 0; i < M; i++) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    }
    return;
  }
  run(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, nullptr, beta == 1.0f, C, ldc, false);
}

void gemm_bf16_out_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb,
                        const float* bias, uint16_t* C, int64_t ldc) {
  check_args("gemm_bf16_out_bf16", trans_a, trans_b, M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {
    for (int64_t i = 0; i < M; i++) {
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] = float_to_bf16(bias ? bias[j] : 0.0f);
    }
    return;
  }
  run(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, bias, false, C, ldc, true);
}

std::string gemm_bf16_engine_name() {
  if (engine() == Engine::kAmx) {
    return "magix AMX kernels (A not transposed, up to " + std::to_string(kAmxMaxRows) +
           " rows, B of 2^20 values or more), else " + onednn_matmul_name();
  }
  if (engine() == Engine::kOnednn) return onednn_matmul_name();
  return "widened to fp32, " + gemm_backend_name();
}

void gemm_bf16_naive(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta,
                     float* C, int64_t ldc) {
  check_args("gemm_bf16_naive", trans_a, trans_b, M, N, K, lda, ldb, ldc);
  MAGIX_CHECK(beta == 0.0f || beta == 1.0f, "gemm_bf16_naive: beta={} (only 0 and 1)", beta);
  // Products of bf16 values (8-bit significands) are exact in double; the double sum errs by at
  // most K 2^-53 sum |a b|, negligible next to the fp32 accumulation of the engines.
#pragma omp parallel for if (M * N * K > (1 << 16))
  for (int64_t i = 0; i < M; i++) {
    for (int64_t j = 0; j < N; j++) {
      double acc = 0.0;
      for (int64_t k = 0; k < K; k++) {
        const uint16_t a = trans_a ? A[k * lda + i] : A[i * lda + k];
        const uint16_t b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
        acc += static_cast<double>(bf16_to_float(a)) * bf16_to_float(b);
      }
      float& c = C[i * ldc + j];
      c = static_cast<float>(static_cast<double>(alpha) * acc + (beta == 0.0f ? 0.0 : c));
    }
  }
}

}  // namespace magix::cpu
