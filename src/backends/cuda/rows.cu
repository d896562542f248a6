// Row kernels of the CUDA backend: RMSNorm, the four cross-entropy stages, sum of squares and the
// decode GEMV. One block per row; block reductions run a fixed tree in shared memory, so every
// result is the same from run to run. Sums the CPU backend keeps in double (RMSNorm's mean of
// squares and its backward dot, cross-entropy's sum of exponentials, sum of squares) are double
// here too.
#include <cfloat>
#include <cmath>

#include "backends/cuda/kernel_math.hpp"
#include "backends/cuda/kernels.hpp"

namespace magix::cuda {
namespace {

constexpr int kRowThreads = 256;  // threads of a row block (a power of two)

__device__ __forceinline__ float load(const float* p, int64_t i) {
  return p[i];
}
__device__ __forceinline__ float load(const uint16_t* p, int64_t i) {
  return bf16_widen(p[i]);
}

// The sum of every thread's x over the block (kRowThreads threads), the same tree each time;
// every thread gets the result. `sh` holds kRowThreads values.
template <class T>
__device__ T block_sum(T x, T* sh) {
  const int t = threadIdx.x;
  sh[t] = x;
  __syncthreads();
  for (int s = kRowThreads / 2; s > 0; s >>= 1) {
    if (t < s) sh[t] += sh[t + s];
    __syncthreads();
  }
  const T r = sh[0];
  __syncthreads();
  return r;
}

__device__ float block_max(float x, float* sh) {
  const int t = threadIdx.x;
  sh[t] = x;
  __syncthreads();
  for (int s = kRowThreads / 2; s > 0; s >>= 1) {
    if (t < s) sh[t] = sh[t + s] > sh[t] ? sh[t + s] : sh[t];
    __syncthreads();
  }
  const float r = sh[0];
  __syncthreads();
  return r;
}

// Rows are blocks of a 1-d grid of at most kMaxBlocks blocks, striding over the rows.
unsigned row_blocks(int64_t N) {
  return static_cast<unsigned>(N < kMaxBlocks ? N : kMaxBlocks);
}

template <class Out>
__global__ void rmsnorm_forward_kernel(Out* out, float* rstd, const float* inp, const float* weight,
                                       int64_t N, int64_t C, float eps, float offset) {
  __shared__ double sh[kRowThreads];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* x = inp + n * C;
    double sum_sq = 0.0;
    for (int64_t c = threadIdx.x; c < C; c += kRowThreads)
      sum_sq += static_cast<double>(x[c]) * x[c];
    sum_sq = block_sum(sum_sq, sh);
    // As HF in fp32: r = 1 / sqrt(float(mean(x²)) + eps).
    const float variance = static_cast<float>(sum_sq / static_cast<double>(C));
    const float r = 1.0f / sqrtf(variance + eps);
    if (threadIdx.x == 0) rstd[n] = r;
    for (int64_t c = threadIdx.x; c < C; c += kRowThreads) {
      const float v = (x[c] * r) * (weight[c] + offset);
      if constexpr (sizeof(Out) == 2) {
        out[n * C + c] = bf16_round(v);
      } else {
        out[n * C + c] = v;
      }
    }
  }
}

// dx = r g dy - x r³ / C · Σ dy g x, g = weight + offset.
__global__ void rmsnorm_backward_kernel(float* dinp, const float* dout, const float* inp,
                                        const float* weight, const float* rstd, int64_t N,
                                        int64_t C, float offset) {
  __shared__ double sh[kRowThreads];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* x = inp + n * C;
    const float* dy = dout + n * C;
    const float r = rstd[n];
    double dot = 0.0;
    for (int64_t c = threadIdx.x; c < C; c += kRowThreads)
      dot += static_cast<double>(dy[c]) * (weight[c] + offset) * x[c];
    dot = block_sum(dot, sh);
    const float k = static_cast<float>(dot * r * r * r / static_cast<double>(C));
    for (int64_t c = threadIdx.x; c < C; c += kRowThreads)
      dinp[n * C + c] += r * (weight[c] + offset) * dy[c] - k * x[c];
  }
}

// dweight[c] += Σ_n dy x r, rows in order (the CPU backend's order).
__global__ void rmsnorm_dweight_kernel(float* dweight, const float* dout, const float* inp,
                                       const float* rstd, int64_t N, int64_t C) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc = 0.0f;
  for (int64_t n = 0; n < N; ++n) acc += dout[n * C + c] * inp[n * C + c] * rstd[n];
  dweight[c] += acc;
}

template <class T>
__global__ void ce_max_kernel(float* row_max, const T* logits, int64_t N, int64_t V) {
  __shared__ float sh[kRowThreads];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    float m = -INFINITY;
    for (int64_t v = threadIdx.x; v < V; v += kRowThreads) {
      const float x = load(logits, n * V + v);
      m = x > m ? x : m;
    }
    m = block_max(m, sh);
    if (threadIdx.x == 0) row_max[n] = m;
  }
}

template <class T>
__global__ void ce_sumexp_kernel(float* sumexp, float* target_logit, const T* logits,
                                 const float* row_max, const int32_t* targets, int64_t v0,
                                 int64_t N, int64_t V) {
  __shared__ double sh[kRowThreads];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float m = row_max[n];
    double sum = 0.0;  // each term <= 1
    for (int64_t v = threadIdx.x; v < V; v += kRowThreads) sum += expf(load(logits, n * V + v) - m);
    sum = block_sum(sum, sh);
    if (threadIdx.x == 0) {
      sumexp[n] = static_cast<float>(sum);
      const int64_t t = static_cast<int64_t>(targets[n]) - v0;
      target_logit[n] = (targets[n] >= 0 && t >= 0 && t < V) ? load(logits, n * V + t) : 0.0f;
    }
  }
}

template <class T>
__global__ void ce_backward_kernel(T* dlogits, const T* logits, const float* row_max,
                                   const float* sumexp, const int32_t* targets, float dloss,
                                   int64_t v0, int64_t N, int64_t V) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  // dlogits may alias logits: each element is read, then written, by one thread.
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N * V;
       i += stride) {
    const int64_t n = i / V, v = i % V;
    float d = 0.0f;
    if (targets[n] >= 0) {
      const float scale = dloss / sumexp[n];
      d = scale * expf(load(logits, i) - row_max[n]);
      if (static_cast<int64_t>(targets[n]) - v0 == v) d -= dloss;  // softmax - 1, rounded once
    }
    if constexpr (sizeof(T) == 2) {
      dlogits[i] = bf16_round(d);
    } else {
      dlogits[i] = d;
    }
  }
}

constexpr int64_t kSquaresChunk = 1 << 16;  // elements per block of the first pass

__global__ void squares_partial_kernel(double* partials, const float* g, int64_t n) {
  __shared__ double sh[kRowThreads];
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kSquaresChunk;
  const int64_t end = begin + kSquaresChunk < n ? begin + kSquaresChunk : n;
  double s = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kRowThreads)
    s += static_cast<double>(g[i]) * g[i];
  s = block_sum(s, sh);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void squares_total_kernel(double* result, const double* partials, int64_t blocks) {
  __shared__ double sh[kRowThreads];
  double s = 0.0;
  for (int64_t b = threadIdx.x; b < blocks; b += kRowThreads) s += partials[b];
  s = block_sum(s, sh);
  if (threadIdx.x == 0) *result = s;
}

// One warp per output column o: lanes stride over C, each keeping N <= kDecodeRows partial dot
// products; then a warp reduction (a fixed butterfly).
template <class W>
__global__ void decode_rows_kernel(float* out, const float* inp, const W* weight, const float* bias,
                                   int64_t N, int64_t C, int64_t OC) {
  const int lane = threadIdx.x % 32;
  const int64_t o = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (o >= OC) return;
  float acc[kDecodeRows];
#pragma unroll
  for (int r = 0; r < kDecodeRows; ++r) acc[r] = 0.0f;
  const W* w = weight + o * C;
  for (int64_t c = lane; c < C; c += 32) {
    const float wc = load(w, c);
#pragma unroll
    for (int r = 0; r < kDecodeRows; ++r)
      if (r < N) acc[r] += wc * inp[r * C + c];
  }
#pragma unroll
  for (int r = 0; r < kDecodeRows; ++r) {
    float v = acc[r];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0 && r < N) out[r * OC + o] = v + (bias ? bias[o] : 0.0f);
  }
}

template <class AB, class Out>
__global__ void gemm_fallback_kernel(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                                     const AB* A, int64_t lda, const AB* B, int64_t ldb, float beta,
                                     Out* C, int64_t ldc, const float* bias) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t m = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y;
  if (m >= M || n >= N) return;
  float acc = 0.0f;
  for (int64_t k = 0; k < K; ++k) {
    const float a = load(A, ta ? k * lda + m : m * lda + k);
    const float b = load(B, tb ? n * ldb + k : k * ldb + n);
    acc += a * b;
  }
  float v = alpha * acc;
  if (beta != 0.0f) v += beta * load(C, m * ldc + n);
  if (bias) v += bias[n];
  if constexpr (sizeof(Out) == 2) {
    C[m * ldc + n] = bf16_round(v);
  } else {
    C[m * ldc + n] = v;
  }
}

}  // namespace

void gemm_fallback(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
                   int64_t lda, const void* B, int64_t ldb, float beta, void* C, int64_t ldc,
                   bool ab_bf16, bool c_bf16, const float* bias, cudaStream_t s) {
  if (M <= 0 || N <= 0) return;
  const dim3 block(32, 8);
  const dim3 grid(static_cast<unsigned>(ceil_div(N, 32)), static_cast<unsigned>(ceil_div(M, 8)));
  if (!ab_bf16) {
    gemm_fallback_kernel<<<grid, block, 0, s>>>(
        ta, tb, M, N, K, alpha, static_cast<const float*>(A), lda, static_cast<const float*>(B),
        ldb, beta, static_cast<float*>(C), ldc, bias);
  } else if (!c_bf16) {
    gemm_fallback_kernel<<<grid, block, 0, s>>>(
        ta, tb, M, N, K, alpha, static_cast<const uint16_t*>(A), lda,
        static_cast<const uint16_t*>(B), ldb, beta, static_cast<float*>(C), ldc, bias);
  } else {
    gemm_fallback_kernel<<<grid, block, 0, s>>>(
        ta, tb, M, N, K, alpha, static_cast<const uint16_t*>(A), lda,
        static_cast<const uint16_t*>(B), ldb, beta, static_cast<uint16_t*>(C), ldc, bias);
  }
}

void rmsnorm_forward(void* out, bool out_bf16, float* rstd, const float* inp, const float* weight,
                     int64_t N, int64_t C, float eps, float offset, cudaStream_t s) {
  if (N <= 0) return;
  if (out_bf16) {
    rmsnorm_forward_kernel<<<row_blocks(N), kRowThreads, 0, s>>>(static_cast<uint16_t*>(out), rstd,
                                                                 inp, weight, N, C, eps, offset);
  } else {
    rmsnorm_forward_kernel<<<row_blocks(N), kRowThreads, 0, s>>>(static_cast<float*>(out), rstd,
                                                                 inp, weight, N, C, eps, offset);
  }
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int64_t N, int64_t C, float offset,
                      cudaStream_t s) {
  if (N <= 0) return;
  rmsnorm_backward_kernel<<<row_blocks(N), kRowThreads, 0, s>>>(dinp, dout, inp, weight, rstd, N, C,
                                                                offset);
  if (dweight) {
    rmsnorm_dweight_kernel<<<static_cast<unsigned>(ceil_div(C, kThreads)), kThreads, 0, s>>>(
        dweight, dout, inp, rstd, N, C);
  }
}

void cross_entropy_max(float* row_max, const void* logits, bool bf16, int64_t N, int64_t V,
                       cudaStream_t s) {
  if (N <= 0) return;
  if (bf16) {
    ce_max_kernel<<<row_blocks(N), kRowThreads, 0, s>>>(row_max,
                                                        static_cast<const uint16_t*>(logits), N, V);
  } else {
    ce_max_kernel<<<row_blocks(N), kRowThreads, 0, s>>>(row_max, static_cast<const float*>(logits),
                                                        N, V);
  }
}

void cross_entropy_sumexp(float* sumexp, float* target_logit, const void* logits, bool bf16,
                          const float* row_max, const int32_t* targets, int64_t v0, int64_t N,
                          int64_t V, cudaStream_t s) {
  if (N <= 0) return;
  if (bf16) {
    ce_sumexp_kernel<<<row_blocks(N), kRowThreads, 0, s>>>(
        sumexp, target_logit, static_cast<const uint16_t*>(logits), row_max, targets, v0, N, V);
  } else {
    ce_sumexp_kernel<<<row_blocks(N), kRowThreads, 0, s>>>(
        sumexp, target_logit, static_cast<const float*>(logits), row_max, targets, v0, N, V);
  }
}

__global__ void ce_loss_kernel(float* losses, const float* row_max, const float* sumexp,
                               const float* target_logit, const int32_t* targets, int64_t N) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  if (targets[n] < 0) {
    losses[n] = 0.0f;
    return;
  }
  const double lse = log(static_cast<double>(sumexp[n])) + row_max[n];
  losses[n] = static_cast<float>(lse - target_logit[n]);
}

void cross_entropy_loss(float* losses, const float* row_max, const float* sumexp,
                        const float* target_logit, const int32_t* targets, int64_t N,
                        cudaStream_t s) {
  if (N <= 0) return;
  ce_loss_kernel<<<static_cast<unsigned>(ceil_div(N, kThreads)), kThreads, 0, s>>>(
      losses, row_max, sumexp, target_logit, targets, N);
}

void cross_entropy_backward(void* dlogits, const void* logits, bool bf16, const float* row_max,
                            const float* sumexp, const int32_t* targets, float dloss, int64_t v0,
                            int64_t N, int64_t V, cudaStream_t s) {
  if (N * V <= 0) return;
  const auto blocks = static_cast<unsigned>(elementwise_blocks(N * V));
  if (bf16) {
    ce_backward_kernel<<<blocks, kThreads, 0, s>>>(static_cast<uint16_t*>(dlogits),
                                                   static_cast<const uint16_t*>(logits), row_max,
                                                   sumexp, targets, dloss, v0, N, V);
  } else {
    ce_backward_kernel<<<blocks, kThreads, 0, s>>>(static_cast<float*>(dlogits),
                                                   static_cast<const float*>(logits), row_max,
                                                   sumexp, targets, dloss, v0, N, V);
  }
}

int64_t sum_of_squares_blocks(int64_t n) {
  const int64_t b = ceil_div(n, kSquaresChunk);
  return b < 1 ? 1 : b;
}

void sum_of_squares(double* result, double* partials, const float* g, int64_t n, cudaStream_t s) {
  const int64_t blocks = sum_of_squares_blocks(n);
  squares_partial_kernel<<<static_cast<unsigned>(blocks), kRowThreads, 0, s>>>(partials, g, n);
  squares_total_kernel<<<1, kRowThreads, 0, s>>>(result, partials, blocks);
}

void matmul_decode_rows(float* out, const float* inp, const void* weight, bool w_bf16,
                        const float* bias, int64_t N, int64_t C, int64_t OC, cudaStream_t s) {
  if (N <= 0 || OC <= 0) return;
  constexpr int kWarps = kThreads / 32;
  const auto blocks = static_cast<unsigned>(ceil_div(OC, kWarps));
  if (w_bf16) {
    decode_rows_kernel<<<blocks, kThreads, 0, s>>>(out, inp, static_cast<const uint16_t*>(weight),
                                                   bias, N, C, OC);
  } else {
    decode_rows_kernel<<<blocks, kThreads, 0, s>>>(out, inp, static_cast<const float*>(weight),
                                                   bias, N, C, OC);
  }
}

}  // namespace magix::cuda
