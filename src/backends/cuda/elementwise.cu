// Elementwise and column kernels of the CUDA backend: conversions, add/scale, dropout, residual,
// column sums, soft-capping, GLU, embedding, AdamW and RoPE. Each element is one thread of a
// grid-stride loop (kernel_math.hpp's geometry); fp32 arithmetic written as the CPU kernels
// write it, bf16 outputs rounded once (bf16_round).
#include <cmath>

#include "backends/cuda/kernel_math.hpp"
#include "backends/cuda/kernels.hpp"

namespace magix::cuda {
namespace {

template <class F>
__global__ void each_kernel(int64_t n, F f) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    f(i);
}

// f(i) for i in [0, n), each once.
template <class F>
void each(int64_t n, cudaStream_t s, F f) {
  if (n <= 0) return;
  each_kernel<<<static_cast<unsigned>(elementwise_blocks(n)), kThreads, 0, s>>>(n, f);
}

__device__ __forceinline__ float load(const float* p, int64_t i) {
  return p[i];
}
__device__ __forceinline__ float load(const uint16_t* p, int64_t i) {
  return bf16_widen(p[i]);
}
__device__ __forceinline__ void store(float* p, int64_t i, float v) {
  p[i] = v;
}
__device__ __forceinline__ void store(uint16_t* p, int64_t i, float v) {
  p[i] = bf16_round(v);
}

// Constants of torch's gelu(approximate="tanh"), as the CPU backend: sqrt(2/pi), 0.044715.
constexpr float kGeluBeta = 0.7978845608028654f;
constexpr float kGeluKappa = 0.044715f;

__device__ __forceinline__ float silu(float x) {
  return x / (1.0f + expf(-x));
}
__device__ __forceinline__ float silu_grad(float x) {
  const float s = 1.0f / (1.0f + expf(-x));
  return s * (1.0f + x * (1.0f - s));
}
// 0.5 x (1 + tanh(u)) = x · sigmoid(2u), u = beta (x + kappa x³) (the CPU backend's form).
__device__ __forceinline__ float gelu_tanh(float x) {
  const float u = kGeluBeta * (x + kGeluKappa * x * x * x);
  return x / (1.0f + expf(-2.0f * u));
}
__device__ __forceinline__ float gelu_tanh_grad(float x) {
  const float x2 = x * x;
  const float s = 1.0f / (1.0f + expf(-2.0f * kGeluBeta * (x + kGeluKappa * x2 * x)));
  return s + 2.0f * x * s * (1.0f - s) * kGeluBeta * (1.0f + 3.0f * kGeluKappa * x2);
}

template <class T>
void glu_forward_t(T* out, const T* gate, const T* up, int64_t n, bool gelu, cudaStream_t s) {
  if (gelu) {
    each(n, s,
         [=] __device__(int64_t i) { store(out, i, gelu_tanh(load(gate, i)) * load(up, i)); });
  } else {
    each(n, s, [=] __device__(int64_t i) { store(out, i, silu(load(gate, i)) * load(up, i)); });
  }
}

template <class T>
void glu_backward_t(T* dgate, T* dup, const float* dout, const T* gate, const T* up, int64_t n,
                    bool gelu, cudaStream_t s) {
  if (gelu) {
    each(n, s, [=] __device__(int64_t i) {
      const float g = load(gate, i), d = dout[i];
      store(dgate, i, d * load(up, i) * gelu_tanh_grad(g));
      store(dup, i, d * gelu_tanh(g));
    });
  } else {
    each(n, s, [=] __device__(int64_t i) {
      const float g = load(gate, i), d = dout[i];
      store(dgate, i, d * load(up, i) * silu_grad(g));
      store(dup, i, d * silu(g));
    });
  }
}

template <class T>
void dropout_t(float* out, const T* inp, int64_t rows, int64_t cl, uint64_t key, int64_t row0,
               int64_t col0, int64_t cols, uint64_t threshold, float keep_scale, cudaStream_t s) {
  each(rows * cl, s, [=] __device__(int64_t i) {
    const int64_t n = i / cl, j = i % cl;
    const float v = load(inp, i);  // read before the write: out may alias inp
    out[i] = dropout_keep(key, row0, col0, cols, n, j, threshold) ? v * keep_scale : 0.0f;
  });
}

template <class T>
__global__ void column_sums_kernel(float* dbias, const T* dout, int64_t N, int64_t C) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc = 0.0f;
  for (int64_t n = 0; n < N; ++n) acc += load(dout, n * C + c);
  dbias[c] += acc;
}

__global__ void embedding_backward_kernel(float* dtable, const float* dout, const int32_t* ids,
                                          int64_t N, int64_t C, int64_t row_start, int64_t rows,
                                          float scale) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t row = static_cast<int64_t>(ids[n]) - row_start;
    if (row < 0 || row >= rows) continue;
    dtable[row * C + c] += scale * dout[n * C + c];
  }
}

template <class W>
void adamw_t(W* w, const float* g, float* m, float* v, int64_t n, AdamWArgs k, cudaStream_t s) {
  each(n, s, [=] __device__(int64_t i) {
    const float gi = g[i] * k.grad_scale;
    const float mi = k.beta1 * m[i] + (1.0f - k.beta1) * gi;
    const float vi = k.beta2 * v[i] + (1.0f - k.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi / k.bias1, vhat = vi / k.bias2;
    float wi = load(w, i);
    wi -= k.lr * (mhat / (sqrtf(vhat) + k.eps) + k.weight_decay * wi);
    store(w, i, wi);
  });
}

// Separately rounded products and sums, as the CPU kernel (compiled without FMA contraction):
// the same bits.
template <class T>
void rope_rotate_t(T* x, const float* table, int64_t N, int64_t H, int64_t D, int64_t R, float sign,
                   cudaStream_t s) {
  const int64_t half = R / 2;
  each(N * H * half, s, [=] __device__(int64_t e) {
    const int64_t i = e % half, nh = e / half, n = nh / H;
    const float c = table[n * R + i], sn = sign * table[n * R + half + i];
    T* x1 = x + nh * D;
    const float a = load(x1, i), b = load(x1, i + half);
    store(x1, i, __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, sn)));
    store(x1, i + half, __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, sn)));
  });
}

unsigned column_blocks(int64_t C) {
  return static_cast<unsigned>(ceil_div(C, kThreads));
}

}  // namespace

void convert_f32_to_bf16(uint16_t* dst, const float* src, int64_t n, cudaStream_t s) {
  each(n, s, [=] __device__(int64_t i) { dst[i] = bf16_round(src[i]); });
}

void convert_bf16_to_f32(float* dst, const uint16_t* src, int64_t n, cudaStream_t s) {
  each(n, s, [=] __device__(int64_t i) { dst[i] = bf16_widen(src[i]); });
}

void add_f32(float* dst, const float* src, int64_t n, cudaStream_t s) {
  each(n, s, [=] __device__(int64_t i) { dst[i] += src[i]; });
}

void scale_f32(float* x, float k, int64_t n, cudaStream_t s) {
  each(n, s, [=] __device__(int64_t i) { x[i] *= k; });
}

void dropout(float* out, const void* inp, bool bf16, int64_t rows, int64_t cols_local, uint64_t key,
             int64_t row0, int64_t col0, int64_t cols, uint64_t threshold, float keep_scale,
             cudaStream_t s) {
  if (bf16) {
    dropout_t(out, static_cast<const uint16_t*>(inp), rows, cols_local, key, row0, col0, cols,
              threshold, keep_scale, s);
  } else {
    dropout_t(out, static_cast<const float*>(inp), rows, cols_local, key, row0, col0, cols,
              threshold, keep_scale, s);
  }
}

void residual_forward(float* out, const float* residual, const float* y, const float* bias,
                      int64_t N, int64_t C, cudaStream_t s) {
  each(N * C, s, [=] __device__(int64_t i) {
    float v = y[i];
    if (bias) v += bias[i % C];
    out[i] = residual[i] + v;
  });
}

void column_sums(float* dbias, const void* dout, bool bf16, int64_t N, int64_t C, cudaStream_t s) {
  if (C <= 0) return;
  if (bf16) {
    column_sums_kernel<<<column_blocks(C), kThreads, 0, s>>>(
        dbias, static_cast<const uint16_t*>(dout), N, C);
  } else {
    column_sums_kernel<<<column_blocks(C), kThreads, 0, s>>>(dbias, static_cast<const float*>(dout),
                                                             N, C);
  }
}

void add_bias(float* out, const float* bias, int64_t N, int64_t C, cudaStream_t s) {
  each(N * C, s, [=] __device__(int64_t i) { out[i] += bias[i % C]; });
}

void bias_round_bf16(uint16_t* out, const float* acc, const float* bias, int64_t N, int64_t C,
                     cudaStream_t s) {
  each(N * C, s,
       [=] __device__(int64_t i) { out[i] = bf16_round(bias ? acc[i] + bias[i % C] : acc[i]); });
}

void softcap_forward(void* x, bool bf16, int64_t n, float cap, cudaStream_t s) {
  if (bf16) {
    auto* p = static_cast<uint16_t*>(x);
    each(n, s, [=] __device__(int64_t i) { store(p, i, tanhf(load(p, i) / cap) * cap); });
  } else {
    auto* p = static_cast<float*>(x);
    each(n, s, [=] __device__(int64_t i) { p[i] = tanhf(p[i] / cap) * cap; });
  }
}

void softcap_backward(void* dx, const void* y, bool bf16, int64_t n, float cap, cudaStream_t s) {
  if (bf16) {
    auto* d = static_cast<uint16_t*>(dx);
    const auto* yy = static_cast<const uint16_t*>(y);
    each(n, s, [=] __device__(int64_t i) {
      const float t = load(yy, i) / cap;
      store(d, i, load(d, i) * (1.0f - t * t));
    });
  } else {
    auto* d = static_cast<float*>(dx);
    const auto* yy = static_cast<const float*>(y);
    each(n, s, [=] __device__(int64_t i) {
      const float t = yy[i] / cap;
      d[i] *= 1.0f - t * t;
    });
  }
}

void glu_forward(void* out, const void* gate, const void* up, bool bf16, int64_t n, bool gelu,
                 cudaStream_t s) {
  if (bf16) {
    glu_forward_t(static_cast<uint16_t*>(out), static_cast<const uint16_t*>(gate),
                  static_cast<const uint16_t*>(up), n, gelu, s);
  } else {
    glu_forward_t(static_cast<float*>(out), static_cast<const float*>(gate),
                  static_cast<const float*>(up), n, gelu, s);
  }
}

void glu_backward(void* dgate, void* dup, const float* dout, const void* gate, const void* up,
                  bool bf16, int64_t n, bool gelu, cudaStream_t s) {
  if (bf16) {
    glu_backward_t(static_cast<uint16_t*>(dgate), static_cast<uint16_t*>(dup), dout,
                   static_cast<const uint16_t*>(gate), static_cast<const uint16_t*>(up), n, gelu,
                   s);
  } else {
    glu_backward_t(static_cast<float*>(dgate), static_cast<float*>(dup), dout,
                   static_cast<const float*>(gate), static_cast<const float*>(up), n, gelu, s);
  }
}

template <class T>
void embedding_forward_t(float* out, const int32_t* ids, const T* table, int64_t N, int64_t C,
                         int64_t row_start, int64_t rows, float scale, cudaStream_t s) {
  each(N * C, s, [=] __device__(int64_t i) {
    const int64_t n = i / C, c = i % C;
    const int64_t row = static_cast<int64_t>(ids[n]) - row_start;
    out[i] = (row < 0 || row >= rows) ? 0.0f : scale * load(table, row * C + c);
  });
}

void embedding_forward(float* out, const int32_t* ids, const void* table, bool bf16, int64_t N,
                       int64_t C, int64_t row_start, int64_t rows, float scale, cudaStream_t s) {
  if (bf16) {
    embedding_forward_t(out, ids, static_cast<const uint16_t*>(table), N, C, row_start, rows, scale,
                        s);
  } else {
    embedding_forward_t(out, ids, static_cast<const float*>(table), N, C, row_start, rows, scale,
                        s);
  }
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t C,
                        int64_t row_start, int64_t rows, float scale, cudaStream_t s) {
  if (C <= 0) return;
  embedding_backward_kernel<<<column_blocks(C), kThreads, 0, s>>>(dtable, dout, ids, N, C,
                                                                  row_start, rows, scale);
}

void adamw_update(void* w, bool bf16, const float* g, float* m, float* v, int64_t n,
                  const AdamWArgs& k, cudaStream_t s) {
  if (bf16) {
    adamw_t(static_cast<uint16_t*>(w), g, m, v, n, k, s);
  } else {
    adamw_t(static_cast<float*>(w), g, m, v, n, k, s);
  }
}

void rope_table(float* table, const int32_t* pos, const float* inv_freq, int64_t N, int64_t D,
                cudaStream_t s) {
  const int64_t half = D / 2;
  each(N * half, s, [=] __device__(int64_t e) {
    const int64_t n = e / half, i = e % half;
    // cos/sin of the fp32 angle float(pos) · inv_freq, in double, rounded once (as the CPU).
    const double angle = static_cast<double>(__fmul_rn(static_cast<float>(pos[n]), inv_freq[i]));
    table[n * D + i] = static_cast<float>(cos(angle));
    table[n * D + half + i] = static_cast<float>(sin(angle));
  });
}

void rope_rotate(void* x, bool bf16, const float* table, int64_t N, int64_t H, int64_t D, int64_t R,
                 float sign, cudaStream_t s) {
  if (bf16) {
    rope_rotate_t(static_cast<uint16_t*>(x), table, N, H, D, R, sign, s);
  } else {
    rope_rotate_t(static_cast<float*>(x), table, N, H, D, R, sign, s);
  }
}

}  // namespace magix::cuda
