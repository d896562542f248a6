// The arithmetic the CUDA kernels share with the host: bf16 rounding, the dropout counter, the
// attention mask predicate and the launch/tiling geometry. Plain C++ when not compiled by nvcc
// (the qualifiers vanish), so tests/backends/cuda_helpers_test.cpp checks every function here
// against the CPU backend on a machine without a GPU.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MAGIX_HD __host__ __device__ __forceinline__
#else
#define MAGIX_HD inline
#endif

namespace magix::cuda {

// ---- bf16 (raw uint16_t bits) -----------------------------------------------------------------

MAGIX_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

MAGIX_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

// Exact widening.
MAGIX_HD float bf16_widen(uint16_t h) {
  return bits_float(static_cast<uint32_t>(h) << 16);
}

// Round to nearest, ties to even; NaN stays a quiet NaN (magix::float_to_bf16's rule).
MAGIX_HD uint16_t bf16_round(float x) {
  const uint32_t bits = float_bits(x);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// The fp32 value of x rounded to bf16 (the operand a bf16 GEMM would read).
MAGIX_HD float bf16_rounded(float x) {
  return bf16_widen(bf16_round(x));
}

// ---- dropout (backend.hpp: a pure function of the element's global index) ---------------------

MAGIX_HD uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Element (n, j) of a (rows, cols_local) box at (row0, col0) of a matrix with `cols` columns is
// kept iff splitmix64(key ^ splitmix64((row0 + n) · cols + col0 + j)) >> 40 >= threshold, with
// threshold = round(p · 2^24) (computed on the host with llround, as the CPU backend does).
MAGIX_HD bool dropout_keep(uint64_t key, int64_t row0, int64_t col0, int64_t cols, int64_t n,
                           int64_t j, uint64_t threshold) {
  const auto e = static_cast<uint64_t>((row0 + n) * cols + col0 + j);
  return (splitmix64(key ^ splitmix64(e)) >> 40) >= threshold;
}

// ---- attention mask ---------------------------------------------------------------------------

// Query i sees key j (backend.hpp's AttentionMask): causal, within the window, a valid key, the
// same segment. valid_j = 1 and seg_i == seg_j when the mask has no key_valid / segment.
MAGIX_HD bool attention_visible(int64_t i, int64_t j, int64_t window, int32_t valid_j,
                                int32_t seg_i, int32_t seg_j) {
  return j <= i && (window <= 0 || i - j < window) && valid_j != 0 && seg_i == seg_j;
}

// ---- launch geometry --------------------------------------------------------------------------

MAGIX_HD int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Elementwise kernels: blocks of kThreads threads, at most kMaxBlocks blocks, a grid-stride loop
// (element i is handled by thread i mod (blocks · kThreads) of the grid, once).
inline constexpr int kThreads = 256;
inline constexpr int64_t kMaxBlocks = 65536;

MAGIX_HD int64_t elementwise_blocks(int64_t n) {
  const int64_t b = ceil_div(n, kThreads);
  return b < 1 ? 1 : (b > kMaxBlocks ? kMaxBlocks : b);
}

// Attention tiles. Forward and dq: a block of kQueryRows warps, warp w owning query row
// i0 + w of one (b, head); keys go through shared memory kKeyTile at a time, lane l scoring key
// j0 + l. dk/dv: a block of kQueryRows warps owning key rows j0 + w of one (b, kv head), queries
// kKeyTile at a time. Head dims up to kMaxHeadDim: lane l holds dims l, l + 32, ... (at most
// kMaxHeadDim / 32 per lane).
inline constexpr int kQueryRows = 8;
inline constexpr int kKeyTile = 32;
inline constexpr int kMaxHeadDim = 256;
inline constexpr int kDimsPerLane = kMaxHeadDim / 32;

// Keys [lo, hi) that query rows [i0, i0 + rows) (rows >= 1, i0 + rows <= T) may see: causality
// and the window (key_valid and segment are checked per element).
MAGIX_HD int64_t attention_key_begin(int64_t i0, int64_t window) {
  const int64_t lo = window > 0 ? i0 - window + 1 : 0;
  return lo < 0 ? 0 : lo;
}
MAGIX_HD int64_t attention_key_end(int64_t i0, int64_t rows) {
  return i0 + rows;  // the last row's own position, inclusive
}

// Queries [lo, hi) that may see keys [j0, j0 + rows) of T positions.
MAGIX_HD int64_t attention_query_begin(int64_t j0) {
  return j0;
}
MAGIX_HD int64_t attention_query_end(int64_t j0, int64_t rows, int64_t window, int64_t T) {
  const int64_t last_key = j0 + rows - 1;
  const int64_t hi = window > 0 ? last_key + window : T;  // i - j < window for some j in the block
  return hi < T ? hi : T;
}

// The kv head of query head h with Hq / Hkv query heads per kv head.
MAGIX_HD int64_t kv_head(int64_t h, int64_t Hq, int64_t Hkv) {
  return h / (Hq / Hkv);
}

// ---- GEMM layout (host) -----------------------------------------------------------------------

// A row-major C (M, N) = op(A) (M, K) · op(B) (K, N), with A, B, C stored row-major, is the
// column-major C' (N, M) = op(B') · op(A') over the same memory (X' = X read column-major), which
// is what cuBLASLt computes: its first operand is the row-major B, its second the row-major A.
// Stored layouts (column-major rows x cols with the caller's leading dimensions) and operations:
struct ColumnMajorGemm {
  int64_t m, n, k;                 // of the column-major product
  bool trans_first, trans_second;  // op of the first (row-major B) and second (row-major A)
  int64_t first_rows, first_cols;  // the row-major B as stored, read column-major
  int64_t second_rows, second_cols;
};

inline ColumnMajorGemm column_major_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K) {
  ColumnMajorGemm g{};
  g.m = N;
  g.n = M;
  g.k = K;
  g.trans_first = tb;  // B stored (K, N) row-major = (N, K) column-major; op = N gives (N, K)
  g.first_rows = tb ? K : N;
  g.first_cols = tb ? N : K;
  g.trans_second = ta;  // A stored (M, K) row-major = (K, M) column-major; op = N gives (K, M)
  g.second_rows = ta ? M : K;
  g.second_cols = ta ? K : M;
  return g;
}

}  // namespace magix::cuda
