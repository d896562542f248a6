#include "backends/cpu/matmul.hpp"

#include <algorithm>
#include <type_traits>

#include "backends/cpu/gemm.hpp"
#include "backends/cpu/gemm_bf16.hpp"
#include "backends/cpu/onednn_matmul.hpp"
#include "magix/dtype_convert.hpp"

namespace magix::cpu {

namespace {

void add_bias(float* out, const float* bias, int64_t N, int64_t OC) {
  if (bias == nullptr) return;
#pragma omp parallel for if (N * OC > (1 << 15))
  for (int64_t n = 0; n < N; n++) {
    float* row = out + n * OC;
    for (int64_t o = 0; o < OC; o++) row[o] += bias[o];
  }
}

// dbias (OC) += column sums of dout (N, OC): each thread owns a slice of columns and walks all
// rows, so the sum order per column is fixed (deterministic whatever the thread count).
template <class T>
void bias_grad(float* dbias, const T* dout, int64_t N, int64_t OC) {
  constexpr int64_t kBlock = 256;
  const int64_t blocks = (OC + kBlock - 1) / kBlock;
#pragma omp parallel for if (N * OC > (1 << 15))
  for (int64_t b = 0; b < blocks; b++) {
    const int64_t o0 = b * kBlock;
    const int64_t o1 = std::min(OC, o0 + kBlock);
    float acc[kBlock] = {};
    for (int64_t n = 0; n < N; n++) {
      const T* row = dout + n * OC;
      for (int64_t o = o0; o < o1; o++) {
        if constexpr (std::is_same_v<T, float>) {
          acc[o - o0] += row[o];
        } else {
          acc[o - o0] += bf16_to_float(row[o]);
        }
      }
    }
    for (int64_t o = o0; o < o1; o++) dbias[o] += acc[o - o0];
  }
}

}  // namespace

void matmul_forward(float* out, const uint16_t* inp, const uint16_t* weight, const float* bias,
                    int64_t N, int64_t C, int64_t OC) {
  gemm_bf16(false, true, N, OC, C, 1.0f, inp, C, weight, C, 0.0f, out, OC);
  add_bias(out, bias, N, OC);
}

void matmul_forward(uint16_t* out, const uint16_t* inp, const uint16_t* weight, const float* bias,
                    int64_t N, int64_t C, int64_t OC) {
  gemm_bf16_out_bf16(false, true, N, OC, C, 1.0f, inp, C, weight, C, bias, out, OC);
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const uint16_t* dout,
                     const uint16_t* inp, const uint16_t* weight, int64_t N, int64_t C,
                     int64_t OC) {
  if (dinp != nullptr) gemm_bf16(false, false, N, C, OC, 1.0f, dout, OC, weight, C, 1.0f, dinp, C);
  if (dweight != nullptr) {
    gemm_bf16(true, false, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
  }
  if (dbias != nullptr) bias_grad(dbias, dout, N, OC);
}

namespace {

constexpr int64_t kSkinnyDim = 16;

// The fp32 products of a linear layer (dense operands; beta 0: C =, 1: C +=). Where one
// dimension is at most 16 (a LoRA adapter's rank-r products, a few rows) through oneDNN's
// matmul: OpenBLAS 0.3.21 runs such products no faster on two threads than on one while
// keeping both busy, oneDNN's brgemm 1.1-3.2x faster (docs/kernels.md); OpenBLAS otherwise.
void linear_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                 const float* B, float beta, float* C) {
  if (std::min({M, N, K}) >= 1 && std::min({M, N, K}) <= kSkinnyDim) {
    onednn_matmul_f32(trans_a, trans_b, M, N, K, A, B, /*accumulate=*/beta != 0.0f, C);
    return;
  }
  gemm(trans_a, trans_b, M, N, K, 1.0f, A, trans_a ? M : K, B, trans_b ? K : N, beta, C, N);
}

}  // namespace

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                    int64_t C, int64_t OC) {
  // out (N, OC) = inp (N, C) · weight^T, weight (OC, C).
  linear_gemm(false, true, N, OC, C, inp, weight, 0.0f, out);
  add_bias(out, bias, N, OC);
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int64_t C, int64_t OC) {
  // dinp (N, C) += dout (N, OC) · weight (OC, C)
  if (dinp != nullptr) linear_gemm(false, false, N, C, OC, dout, weight, 1.0f, dinp);
  // dweight (OC, C) += dout^T (OC, N) · inp (N, C)
  if (dweight != nullptr) linear_gemm(true, false, OC, C, N, dout, inp, 1.0f, dweight);
  if (dbias != nullptr) bias_grad(dbias, dout, N, OC);
}

}  // namespace magix::cpu
