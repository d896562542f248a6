// Launchers of the CUDA kernels (elementwise.cu, rows.cu, attention.cu): raw device pointers,
// sizes and the backend's stream; every launch is asynchronous. The caller (cuda_backend.cpp)
// has checked shapes and dtypes and checks the launch with cudaGetLastError. bf16 tensors are
// uint16_t bit patterns; `void*` operands are float or bf16 as their `bf16` flag says.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace magix::cuda {

// ---- elementwise.cu ---------------------------------------------------------------------------

void convert_f32_to_bf16(uint16_t* dst, const float* src, int64_t n, cudaStream_t s);
void convert_bf16_to_f32(float* dst, const uint16_t* src, int64_t n, cudaStream_t s);
void add_f32(float* dst, const float* src, int64_t n, cudaStream_t s);
void scale_f32(float* x, float k, int64_t n, cudaStream_t s);
// out (rows, cols_local) F32 = inp · keep / (1 - p) (kernel_math.hpp's dropout_keep).
void dropout(float* out, const void* inp, bool bf16, int64_t rows, int64_t cols_local, uint64_t key,
             int64_t row0, int64_t col0, int64_t cols, uint64_t threshold, float keep_scale,
             cudaStream_t s);
// out (N, C) = residual + (y + bias).
void residual_forward(float* out, const float* residual, const float* y, const float* bias,
                      int64_t N, int64_t C, cudaStream_t s);
// dbias (C) += column sums of dout (N, C): one thread per column, rows in order (deterministic).
void column_sums(float* dbias, const void* dout, bool bf16, int64_t N, int64_t C, cudaStream_t s);
// out (N, C) F32 += bias, or out (N, C) BF16 = round(acc + bias): the GEMMs' bias when cuBLASLt
// has no bias epilogue for the case.
void add_bias(float* out, const float* bias, int64_t N, int64_t C, cudaStream_t s);
void bias_round_bf16(uint16_t* out, const float* acc, const float* bias, int64_t N, int64_t C,
                     cudaStream_t s);
void softcap_forward(void* x, bool bf16, int64_t n, float cap, cudaStream_t s);
void softcap_backward(void* dx, const void* y, bool bf16, int64_t n, float cap, cudaStream_t s);
// gelu: tanh-GELU, else SiLU. Backward writes (=) dgate and dup.
void glu_forward(void* out, const void* gate, const void* up, bool bf16, int64_t n, bool gelu,
                 cudaStream_t s);
void glu_backward(void* dgate, void* dup, const float* dout, const void* gate, const void* up,
                  bool bf16, int64_t n, bool gelu, cudaStream_t s);
// table: fp32, or bf16 bits (`bf16`, widened exactly per element).
void embedding_forward(float* out, const int32_t* ids, const void* table, bool bf16, int64_t N,
                       int64_t C, int64_t row_start, int64_t rows, float scale, cudaStream_t s);
// One thread per column, tokens in order: deterministic, and the CPU backend's summation order.
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t C,
                        int64_t row_start, int64_t rows, float scale, cudaStream_t s);

struct AdamWArgs {
  float grad_scale, beta1, beta2, bias1, bias2, eps, lr, weight_decay;
};
void adamw_update(void* w, bool bf16, const float* g, float* m, float* v, int64_t n,
                  const AdamWArgs& k, cudaStream_t s);

void rope_table(float* table, const int32_t* pos, const float* inv_freq, int64_t N, int64_t D,
                cudaStream_t s);
// x (N, H, D): the first R dims of each head rotated by the table's (N, R) angles; sign -1 is
// the inverse rotation (backward).
void rope_rotate(void* x, bool bf16, const float* table, int64_t N, int64_t H, int64_t D, int64_t R,
                 float sign, cudaStream_t s);

// ---- rows.cu ----------------------------------------------------------------------------------

void rmsnorm_forward(void* out, bool out_bf16, float* rstd, const float* inp, const float* weight,
                     int64_t N, int64_t C, float eps, float offset, cudaStream_t s);
// dinp += ...; dweight (may be null) += ... (one thread per column, rows in order).
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int64_t N, int64_t C, float offset,
                      cudaStream_t s);
void cross_entropy_max(float* row_max, const void* logits, bool bf16, int64_t N, int64_t V,
                       cudaStream_t s);
void cross_entropy_sumexp(float* sumexp, float* target_logit, const void* logits, bool bf16,
                          const float* row_max, const int32_t* targets, int64_t v0, int64_t N,
                          int64_t V, cudaStream_t s);
void cross_entropy_loss(float* losses, const float* row_max, const float* sumexp,
                        const float* target_logit, const int32_t* targets, int64_t N,
                        cudaStream_t s);
void cross_entropy_backward(void* dlogits, const void* logits, bool bf16, const float* row_max,
                            const float* sumexp, const int32_t* targets, float dloss, int64_t v0,
                            int64_t N, int64_t V, cudaStream_t s);
// Sum of squares of g (n) in double: fixed-order block partials into `partials` (at least
// sum_of_squares_blocks(n) doubles), then one block sums them in order into *result (device).
int64_t sum_of_squares_blocks(int64_t n);
void sum_of_squares(double* result, double* partials, const float* g, int64_t n, cudaStream_t s);
// out (N, OC) = inp (N, C) F32 · weight (OC, C; F32 or BF16)ᵀ + bias, one warp per output
// column reading its weight row once for all N <= kDecodeRows rows.
inline constexpr int64_t kDecodeRows = 8;
void matmul_decode_rows(float* out, const float* inp, const void* weight, bool w_bf16,
                        const float* bias, int64_t N, int64_t C, int64_t OC, cudaStream_t s);

// Row-major C (M, N) = alpha · op(A) · op(B) + beta · C (+ bias (N) before the rounding), one
// thread per output, fp32 sums over k in order: the GEMM of the calls for which cuBLASLt offers no
// algorithm (odd leading dimensions or alignments). A, B bf16 when ab_bf16; C bf16 when c_bf16
// (then beta = 0).
void gemm_fallback(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
                   int64_t lda, const void* B, int64_t ldb, float beta, void* C, int64_t ldc,
                   bool ab_bf16, bool c_bf16, const float* bias, cudaStream_t s);

// ---- attention.cu -----------------------------------------------------------------------------

struct AttentionArgs {
  int64_t B, T, Hq, Hkv, D;
  float scale;
  const int32_t* key_valid;  // (B, T) or null
  const int32_t* segment;    // (B, T) or null
  int64_t window;            // <= 0: unlimited
  float softcap;             // <= 0: none
};
// Bytes of dynamic shared memory the attention kernels need for head dim D (<= kMaxHeadDim).
int64_t attention_shared_bytes(int64_t D);
void attention_forward(void* out, float* lse, const void* q, const void* k, const void* v,
                       bool bf16, const AttentionArgs& a, cudaStream_t s);
// dq, dk, dv (F32) += ...; row_dot: scratch of B·Hq·T floats.
void attention_backward(float* dq, float* dk, float* dv, const void* dout, const void* out,
                        const float* lse, const void* q, const void* k, const void* v, bool bf16,
                        float* row_dot, const AttentionArgs& a, cudaStream_t s);
// q, out (B, Hq, D) F32; caches (B, S, Hkv, D) F32 or BF16; valid (B, S).
void attention_decode(float* out, const float* q, const void* k_cache, const void* v_cache,
                      bool bf16, const int32_t* valid, int64_t B, int64_t S, int64_t Hq,
                      int64_t Hkv, int64_t D, int64_t slot, float scale, int64_t window,
                      float softcap, cudaStream_t s);

// ---- collectives.cu (the device collectives, collective_math.hpp) -----------------------------

// full (rows, n * cols) = blocks (n, rows, cols): block r to columns [r * cols, (r + 1) * cols).
void blocks_to_columns(float* full, const float* blocks, int64_t rows, int64_t cols, int64_t n,
                       cudaStream_t s);
// The inverse: blocks (n, rows, cols) = the column blocks of full (rows, n * cols).
void columns_to_blocks(float* blocks, const float* full, int64_t rows, int64_t cols, int64_t n,
                       cudaStream_t s);
// local (m) += the rank-order sum of chunks (n, m).
void rank_order_sum_add(float* local, const float* chunks, int64_t m, int64_t n, cudaStream_t s);

}  // namespace magix::cuda
