// Causal attention with grouped KV heads on the GPU, flash-style: tiles of keys in shared
// memory, an online softmax in fp32, only the row log-sum-exp saved; the backward recomputes
// P = exp(s - lse). Written for correctness and clarity first (kernel_math.hpp's tiles):
//
// - forward and dq: a block of kQueryRows warps, warp w owning query row i0 + w of one
//   (b, query head); per tile of kKeyTile keys, lane l scores key j0 + l (a dot product over D
//   in fp32, q from shared memory), the warp updates its running max and sum, and lane l
//   accumulates output dims l, l + 32, ... (registers) from the tile's V rows.
// - dk and dv: a block of kQueryRows warps owning key rows j0 + w of one (b, kv head); per tile
//   of kKeyTile queries of every query head of the group, lane l recomputes P and dS of query
//   i0 + l, and the warp accumulates its key's dk, dv rows. No atomics: every output row is
//   summed by one warp in a fixed order, so results are the same from run to run.
//
// The mask is kernel_math.hpp's attention_visible per element, over the key (query) range that
// causality and the window leave. bf16 (q, k, v, out, dout as uint16_t bits): products of bf16
// values are exact in fp32 and accumulate in fp32; P (forward and backward) and dS are rounded
// to bf16 as the inputs of their products with V, dO, K and Q; out is rounded once. In the
// forward P is exp(s - running max) (the CPU backend rounds exp(s - final max)): both are within
// the bf16 tolerance of the op table.
#include <cmath>

#include "backends/cuda/kernel_math.hpp"
#include "backends/cuda/kernels.hpp"

namespace magix::cuda {
namespace {

constexpr unsigned kFull = 0xffffffffu;

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

// A GEMM operand as the kernel of element type T sees it: bf16 kernels round P and dS to bf16.
template <class T>
__device__ __forceinline__ float operand(float x) {
  if constexpr (sizeof(T) == 2) {
    return bf16_rounded(x);
  } else {
    return x;
  }
}

__device__ __forceinline__ float warp_max(float x) {
  for (int off = 16; off > 0; off >>= 1) x = fmaxf(x, __shfl_xor_sync(kFull, x, off));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(kFull, x, off);
  return x;
}

__device__ __forceinline__ float dot(const float* a, const float* b, int64_t D) {
  float s = 0.0f;
  for (int64_t d = 0; d < D; ++d) s += a[d] * b[d];
  return s;
}

// The soft-capped score and its slope d capped / d raw (1 without capping).
__device__ __forceinline__ float cap_score(float s, float softcap, float* slope) {
  if (softcap <= 0) {
    *slope = 1.0f;
    return s;
  }
  const float t = tanhf(s / softcap);
  *slope = 1.0f - t * t;
  return t * softcap;
}

// Shared memory, in floats: tiles of kKeyTile rows of D + 1 (padded: lane l reading row l walks
// distinct banks) and per-warp rows of D.
__host__ __device__ int64_t tile_floats(int64_t D) {
  return kKeyTile * (D + 1);
}
__host__ __device__ int64_t warp_rows_floats(int64_t D) {
  return kQueryRows * D;
}

__device__ __forceinline__ int64_t qkv_off(int64_t b, int64_t t, int64_t h, int64_t T, int64_t H,
                                           int64_t D) {
  return ((b * T + t) * H + h) * D;
}

// Rows [r0, r0 + kKeyTile) of head h of x (B, T, H, D) into tile (kKeyTile, D + 1) as fp32; rows
// at or past `end` are zero. All threads of the block take part.
template <class T>
__device__ void load_tile(float* tile, const T* x, int64_t b, int64_t r0, int64_t end, int64_t h,
                          int64_t T_, int64_t H, int64_t D) {
  for (int64_t e = threadIdx.x; e < kKeyTile * D; e += blockDim.x) {
    const int64_t r = e / D, d = e % D;
    tile[r * (D + 1) + d] = r0 + r < end ? load(x, qkv_off(b, r0 + r, h, T_, H, D) + d) : 0.0f;
  }
}

struct MaskView {
  const int32_t* key_valid;
  const int32_t* segment;
  int64_t window;

  __device__ bool visible(int64_t b, int64_t T, int64_t i, int64_t j) const {
    const int32_t valid_j = key_valid ? key_valid[b * T + j] : 1;
    const int32_t seg_i = segment ? segment[b * T + i] : 0;
    const int32_t seg_j = segment ? segment[b * T + j] : 0;
    return attention_visible(i, j, window, valid_j, seg_i, seg_j);
  }
};

struct Geometry {
  int64_t B, T, Hq, Hkv, D;
  float scale, softcap;
  MaskView mask;
};

Geometry geometry(const AttentionArgs& a) {
  return {a.B, a.T, a.Hq, a.Hkv, a.D, a.scale, a.softcap, {a.key_valid, a.segment, a.window}};
}

// grid (query blocks, Hq, B); kQueryRows warps.
template <class T>
__global__ void forward_kernel(T* out, float* lse, const T* q, const T* k, const T* v, Geometry g) {
  extern __shared__ float smem[];
  float* ks = smem;
  float* vs = ks + tile_floats(g.D);
  float* qs = vs + tile_floats(g.D);
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = blockIdx.z, h = blockIdx.y, i0 = static_cast<int64_t>(blockIdx.x) * kQueryRows;
  const int64_t rows = g.T - i0 < kQueryRows ? g.T - i0 : kQueryRows;
  const int64_t i = i0 + w, kvh = kv_head(h, g.Hq, g.Hkv), D = g.D;
  const bool active = w < rows;
  float* qrow = qs + w * D;
  if (active)
    for (int64_t d = lane; d < D; d += 32) qrow[d] = load(q, qkv_off(b, i, h, g.T, g.Hq, D) + d);
  float acc[kDimsPerLane];
#pragma unroll
  for (int c = 0; c < kDimsPerLane; ++c) acc[c] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  const int64_t jb = attention_key_begin(i0, g.mask.window), je = attention_key_end(i0, rows);
  for (int64_t j0 = jb; j0 < je; j0 += kKeyTile) {
    __syncthreads();  // the previous tile is consumed (and qrow written)
    load_tile(ks, k, b, j0, je, kvh, g.T, g.Hkv, D);
    load_tile(vs, v, b, j0, je, kvh, g.T, g.Hkv, D);
    __syncthreads();
    if (!active) continue;
    const int64_t j = j0 + lane;
    float s = -INFINITY, slope;
    if (j < je && g.mask.visible(b, g.T, i, j)) {
      s = cap_score(g.scale * dot(qrow, ks + lane * (D + 1), D), g.softcap, &slope);
    }
    const float m_new = fmaxf(m, warp_max(s));
    if (m_new == -INFINITY) continue;  // nothing visible yet
    const float p = s == -INFINITY ? 0.0f : expf(s - m_new);
    const float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
    l = l * corr + warp_sum(p);
    m = m_new;
    const float pv = operand<T>(p);
#pragma unroll
    for (int c = 0; c < kDimsPerLane; ++c) acc[c] *= corr;
    for (int jj = 0; jj < kKeyTile; ++jj) {
      const float pj = __shfl_sync(kFull, pv, jj);
      if (pj == 0.0f) continue;  // warp-uniform
#pragma unroll
      for (int c = 0; c < kDimsPerLane; ++c) {
        const int64_t d = lane + 32 * c;
        if (d < D) acc[c] += pj * vs[jj * (D + 1) + d];
      }
    }
  }
  if (!active) return;
  const bool none = m == -INFINITY;  // sees no key: out = 0, lse = -inf
  const float inv = none ? 0.0f : 1.0f / l;
  const int64_t o = qkv_off(b, i, h, g.T, g.Hq, D);
#pragma unroll
  for (int c = 0; c < kDimsPerLane; ++c) {
    const int64_t d = lane + 32 * c;
    if (d < D) store(out, o + d, acc[c] * inv);
  }
  if (lane == 0) lse[(b * g.Hq + h) * g.T + i] = none ? -INFINITY : m + logf(l);
}

// row_dot (B, Hq, T) = rowsum(dO ∘ O), one warp per row.
template <class T>
__global__ void row_dot_kernel(float* row_dot, const T* dout, const T* out, Geometry g) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= g.B * g.Hq * g.T) return;
  const int64_t i = row % g.T, h = (row / g.T) % g.Hq, b = row / (g.T * g.Hq);
  const int64_t o = qkv_off(b, i, h, g.T, g.Hq, g.D);
  float s = 0.0f;
  for (int64_t d = lane; d < g.D; d += 32) s += load(dout, o + d) * load(out, o + d);
  s = warp_sum(s);
  if (lane == 0) row_dot[row] = s;
}

// dq += scale · dS · K; grid (query blocks, Hq, B).
template <class T>
__global__ void dq_kernel(float* dq, const T* dout, const float* lse, const float* row_dot,
                          const T* q, const T* k, const T* v, Geometry g) {
  extern __shared__ float smem[];
  float* ks = smem;
  float* vs = ks + tile_floats(g.D);
  float* qs = vs + tile_floats(g.D);
  float* dos = qs + warp_rows_floats(g.D);
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = blockIdx.z, h = blockIdx.y, i0 = static_cast<int64_t>(blockIdx.x) * kQueryRows;
  const int64_t rows = g.T - i0 < kQueryRows ? g.T - i0 : kQueryRows;
  const int64_t i = i0 + w, kvh = kv_head(h, g.Hq, g.Hkv), D = g.D;
  const int64_t stat = (b * g.Hq + h) * g.T + i;
  // A row that sees no key (lse = -inf) gets no gradient.
  const bool active = w < rows && lse[stat] != -INFINITY;
  float* qrow = qs + w * D;
  float* dorow = dos + w * D;
  float li = 0.0f, di = 0.0f;
  if (active) {
    const int64_t o = qkv_off(b, i, h, g.T, g.Hq, D);
    for (int64_t d = lane; d < D; d += 32) {
      qrow[d] = load(q, o + d);
      dorow[d] = load(dout, o + d);
    }
    li = lse[stat];
    di = row_dot[stat];
  }
  float acc[kDimsPerLane];
#pragma unroll
  for (int c = 0; c < kDimsPerLane; ++c) acc[c] = 0.0f;
  const int64_t jb = attention_key_begin(i0, g.mask.window), je = attention_key_end(i0, rows);
  for (int64_t j0 = jb; j0 < je; j0 += kKeyTile) {
    __syncthreads();
    load_tile(ks, k, b, j0, je, kvh, g.T, g.Hkv, D);
    load_tile(vs, v, b, j0, je, kvh, g.T, g.Hkv, D);
    __syncthreads();
    if (!active) continue;
    const int64_t j = j0 + lane;
    float ds = 0.0f;
    if (j < je && g.mask.visible(b, g.T, i, j)) {
      float slope;
      const float s = cap_score(g.scale * dot(qrow, ks + lane * (D + 1), D), g.softcap, &slope);
      const float p = expf(s - li);
      const float dp = dot(dorow, vs + lane * (D + 1), D);
      ds = (p * slope) * (dp - di);
    }
    const float dsv = operand<T>(ds);
    for (int jj = 0; jj < kKeyTile; ++jj) {
      const float dj = __shfl_sync(kFull, dsv, jj);
      if (dj == 0.0f) continue;
#pragma unroll
      for (int c = 0; c < kDimsPerLane; ++c) {
        const int64_t d = lane + 32 * c;
        if (d < D) acc[c] += dj * ks[jj * (D + 1) + d];
      }
    }
  }
  if (!active) return;
  const int64_t o = qkv_off(b, i, h, g.T, g.Hq, D);
#pragma unroll
  for (int c = 0; c < kDimsPerLane; ++c) {
    const int64_t d = lane + 32 * c;
    if (d < D) dq[o + d] += g.scale * acc[c];
  }
}

// dk += scale · dSᵀ · Q, dv += Pᵀ · dO over every query head of the group; grid (key blocks,
// Hkv, B).
template <class T>
__global__ void dkdv_kernel(float* dk, float* dv, const T* dout, const float* lse,
                            const float* row_dot, const T* q, const T* k, const T* v, Geometry g) {
  extern __shared__ float smem[];
  float* qs = smem;
  float* dos = qs + tile_floats(g.D);
  float* krows = dos + tile_floats(g.D);
  float* vrows = krows + warp_rows_floats(g.D);
  float* lses = vrows + warp_rows_floats(g.D);
  float* dis = lses + kKeyTile;
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = blockIdx.z, kvh = blockIdx.y,
                j0 = static_cast<int64_t>(blockIdx.x) * kQueryRows;
  const int64_t rows = g.T - j0 < kQueryRows ? g.T - j0 : kQueryRows;
  const int64_t j = j0 + w, D = g.D, group = g.Hq / g.Hkv;
  const bool active = w < rows;
  float* krow = krows + w * D;
  float* vrow = vrows + w * D;
  if (active) {
    const int64_t o = qkv_off(b, j, kvh, g.T, g.Hkv, D);
    for (int64_t d = lane; d < D; d += 32) {
      krow[d] = load(k, o + d);
      vrow[d] = load(v, o + d);
    }
  }
  float dk_acc[kDimsPerLane], dv_acc[kDimsPerLane];
#pragma unroll
  for (int c = 0; c < kDimsPerLane; ++c) dk_acc[c] = dv_acc[c] = 0.0f;
  const int64_t ib = attention_query_begin(j0),
                ie = attention_query_end(j0, rows, g.mask.window, g.T);
  for (int64_t hh = 0; hh < group; ++hh) {
    const int64_t h = kvh * group + hh;
    for (int64_t i0 = ib; i0 < ie; i0 += kKeyTile) {
      __syncthreads();
      load_tile(qs, q, b, i0, ie, h, g.T, g.Hq, D);
      load_tile(dos, dout, b, i0, ie, h, g.T, g.Hq, D);
      if (threadIdx.x < kKeyTile) {
        const int64_t i = i0 + threadIdx.x;
        lses[threadIdx.x] = i < ie ? lse[(b * g.Hq + h) * g.T + i] : -INFINITY;
        dis[threadIdx.x] = i < ie ? row_dot[(b * g.Hq + h) * g.T + i] : 0.0f;
      }
      __syncthreads();
      if (!active) continue;
      const int64_t i = i0 + lane;
      float p = 0.0f, ds = 0.0f;
      if (i < ie && lses[lane] != -INFINITY && g.mask.visible(b, g.T, i, j)) {
        float slope;
        const float s = cap_score(g.scale * dot(qs + lane * (D + 1), krow, D), g.softcap, &slope);
        p = expf(s - lses[lane]);
        const float dp = dot(dos + lane * (D + 1), vrow, D);
        ds = (p * slope) * (dp - dis[lane]);
      }
      const float pv = operand<T>(p), dsv = operand<T>(ds);
      for (int ii = 0; ii < kKeyTile; ++ii) {
        const float pi = __shfl_sync(kFull, pv, ii), di = __shfl_sync(kFull, dsv, ii);
        if (pi == 0.0f && di == 0.0f) continue;
#pragma unroll
        for (int c = 0; c < kDimsPerLane; ++c) {
          const int64_t d = lane + 32 * c;
          if (d < D) {
            dv_acc[c] += pi * dos[ii * (D + 1) + d];
            dk_acc[c] += di * qs[ii * (D + 1) + d];
          }
        }
      }
    }
  }
  if (!active) return;
  const int64_t o = qkv_off(b, j, kvh, g.T, g.Hkv, D);
#pragma unroll
  for (int c = 0; c < kDimsPerLane; ++c) {
    const int64_t d = lane + 32 * c;
    if (d < D) {
      dk[o + d] += g.scale * dk_acc[c];
      dv[o + d] += dv_acc[c];
    }
  }
}

// One warp per (b, query head) against the cache's slots [lo, slot] (slot j held at j mod S):
// lane l scores slot j0 + l straight from the cache, then the online softmax of the forward.
template <class T>
__global__ void decode_kernel(float* out, const float* q, const T* kc, const T* vc,
                              const int32_t* valid, int64_t B, int64_t S, int64_t Hq, int64_t Hkv,
                              int64_t D, int64_t slot, float scale, int64_t window, float softcap) {
  extern __shared__ float smem[];
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kQueryRows + w;  // b * Hq + h
  if (row >= B * Hq) return;
  const int64_t b = row / Hq, h = row % Hq, kvh = kv_head(h, Hq, Hkv);
  float* qrow = smem + w * D;
  for (int64_t d = lane; d < D; d += 32) qrow[d] = q[row * D + d];
  __syncwarp();
  float acc[kDimsPerLane];
#pragma unroll
  for (int c = 0; c < kDimsPerLane; ++c) acc[c] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  const int64_t lo = attention_key_begin(slot, window);
  for (int64_t j0 = lo; j0 <= slot; j0 += kKeyTile) {
    const int64_t j = j0 + lane;
    float s = -INFINITY;
    if (j <= slot && valid[b * S + j % S] != 0) {
      const T* kj = kc + ((b * S + j % S) * Hkv + kvh) * D;
      float dotv = 0.0f;
      for (int64_t d = 0; d < D; ++d) dotv += qrow[d] * load(kj, d);
      float slope;
      s = cap_score(dotv * scale, softcap, &slope);
    }
    const float m_new = fmaxf(m, warp_max(s));
    if (m_new == -INFINITY) continue;
    const float p = s == -INFINITY ? 0.0f : expf(s - m_new);
    const float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
    l = l * corr + warp_sum(p);
    m = m_new;
#pragma unroll
    for (int c = 0; c < kDimsPerLane; ++c) acc[c] *= corr;
    for (int jj = 0; jj < kKeyTile; ++jj) {
      const float pj = __shfl_sync(kFull, p, jj);
      if (pj == 0.0f) continue;
      const T* vj = vc + ((b * S + (j0 + jj) % S) * Hkv + kvh) * D;
#pragma unroll
      for (int c = 0; c < kDimsPerLane; ++c) {
        const int64_t d = lane + 32 * c;
        if (d < D) acc[c] += pj * load(vj, d);
      }
    }
  }
  const float inv = m == -INFINITY ? 0.0f : 1.0f / l;
#pragma unroll
  for (int c = 0; c < kDimsPerLane; ++c) {
    const int64_t d = lane + 32 * c;
    if (d < D) out[row * D + d] = acc[c] * inv;
  }
}

constexpr int kBlockThreads = kQueryRows * 32;

int64_t forward_floats(int64_t D) {
  return 2 * tile_floats(D) + warp_rows_floats(D);
}
int64_t dq_floats(int64_t D) {
  return 2 * tile_floats(D) + 2 * warp_rows_floats(D);
}
int64_t dkdv_floats(int64_t D) {
  return 2 * tile_floats(D) + 2 * warp_rows_floats(D) + 2 * kKeyTile;
}

// Launches kernel with `floats` of dynamic shared memory (above 48 KiB needs the opt-in).
template <class Kernel, class... Args>
void launch(Kernel kernel, dim3 grid, int64_t floats, cudaStream_t s, Args... args) {
  const int bytes = static_cast<int>(floats * sizeof(float));
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  kernel<<<grid, kBlockThreads, bytes, s>>>(args...);
}

template <class T>
void forward_t(T* out, float* lse, const T* q, const T* k, const T* v, const Geometry& g,
               cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(ceil_div(g.T, kQueryRows)), static_cast<unsigned>(g.Hq),
                  static_cast<unsigned>(g.B));
  launch(forward_kernel<T>, grid, forward_floats(g.D), s, out, lse, q, k, v, g);
}

template <class T>
void backward_t(float* dq, float* dk, float* dv, const T* dout, const T* out, const float* lse,
                const T* q, const T* k, const T* v, float* row_dot, const Geometry& g,
                cudaStream_t s) {
  const int64_t rows = g.B * g.Hq * g.T;
  row_dot_kernel<T>
      <<<static_cast<unsigned>(ceil_div(rows, kBlockThreads / 32)), kBlockThreads, 0, s>>>(
          row_dot, dout, out, g);
  const auto blocks = static_cast<unsigned>(ceil_div(g.T, kQueryRows));
  launch(dq_kernel<T>, dim3(blocks, static_cast<unsigned>(g.Hq), static_cast<unsigned>(g.B)),
         dq_floats(g.D), s, dq, dout, lse, static_cast<const float*>(row_dot), q, k, v, g);
  launch(dkdv_kernel<T>, dim3(blocks, static_cast<unsigned>(g.Hkv), static_cast<unsigned>(g.B)),
         dkdv_floats(g.D), s, dk, dv, dout, lse, static_cast<const float*>(row_dot), q, k, v, g);
}

}  // namespace

int64_t attention_shared_bytes(int64_t D) {
  const int64_t f = dkdv_floats(D) > dq_floats(D) ? dkdv_floats(D) : dq_floats(D);
  return f * static_cast<int64_t>(sizeof(float));
}

void attention_forward(void* out, float* lse, const void* q, const void* k, const void* v,
                       bool bf16, const AttentionArgs& a, cudaStream_t s) {
  if (a.B * a.T * a.Hq == 0) return;
  const Geometry g = geometry(a);
  if (bf16) {
    forward_t(static_cast<uint16_t*>(out), lse, static_cast<const uint16_t*>(q),
              static_cast<const uint16_t*>(k), static_cast<const uint16_t*>(v), g, s);
  } else {
    forward_t(static_cast<float*>(out), lse, static_cast<const float*>(q),
              static_cast<const float*>(k), static_cast<const float*>(v), g, s);
  }
}

void attention_backward(float* dq, float* dk, float* dv, const void* dout, const void* out,
                        const float* lse, const void* q, const void* k, const void* v, bool bf16,
                        float* row_dot, const AttentionArgs& a, cudaStream_t s) {
  if (a.B * a.T * a.Hq == 0) return;
  const Geometry g = geometry(a);
  if (bf16) {
    using H = uint16_t;
    backward_t(dq, dk, dv, static_cast<const H*>(dout), static_cast<const H*>(out), lse,
               static_cast<const H*>(q), static_cast<const H*>(k), static_cast<const H*>(v),
               row_dot, g, s);
  } else {
    backward_t(dq, dk, dv, static_cast<const float*>(dout), static_cast<const float*>(out), lse,
               static_cast<const float*>(q), static_cast<const float*>(k),
               static_cast<const float*>(v), row_dot, g, s);
  }
}

void attention_decode(float* out, const float* q, const void* k_cache, const void* v_cache,
                      bool bf16, const int32_t* valid, int64_t B, int64_t S, int64_t Hq,
                      int64_t Hkv, int64_t D, int64_t slot, float scale, int64_t window,
                      float softcap, cudaStream_t s) {
  if (B * Hq == 0) return;
  const auto blocks = static_cast<unsigned>(ceil_div(B * Hq, kQueryRows));
  const int bytes = static_cast<int>(warp_rows_floats(D) * sizeof(float));
  if (bf16) {
    decode_kernel<<<blocks, kBlockThreads, bytes, s>>>(
        out, q, static_cast<const uint16_t*>(k_cache), static_cast<const uint16_t*>(v_cache), valid,
        B, S, Hq, Hkv, D, slot, scale, window, softcap);
  } else {
    decode_kernel<<<blocks, kBlockThreads, bytes, s>>>(out, q, static_cast<const float*>(k_cache),
                                                       static_cast<const float*>(v_cache), valid, B,
                                                       S, Hq, Hkv, D, slot, scale, window, softcap);
  }
}

}  // namespace magix::cuda
