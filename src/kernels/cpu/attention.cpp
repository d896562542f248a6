// Causal attention (GQA/MQA, sliding window, key padding, packing), flash-style on the CPU.
//
// Work is split into blocks of kQueryBlock query rows of one head. For such a block only the
// keys in [jlo, jhi] can be visible (the union of the rows' visible intervals: causality, the
// window, the first/last valid key and the first key of the row's segment), so the score
// buffer is (kQueryBlock, jhi - jlo + 1) <= (kQueryBlock, T) per thread and fully masked key
// ranges are never touched. Inside the interval the exact mask is applied per element.
//
// The forward saves lse = max + log(sum exp) per (b, head, query); a query that sees no key
// gets out = 0 and lse = -inf. The backward recomputes P = exp(s - lse) (rows with lse = -inf
// contribute nothing) and runs one task per (b, kv head), so the dk/dv rows of a kv head, which
// all query heads of its group accumulate into, are written by a single thread.
#include "kernels/cpu/attention.hpp"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "magix/error.hpp"

namespace magix::cpu {
namespace {

constexpr int64_t kQueryBlock = 64;
constexpr int64_t kColTile = 16;  // columns per register tile in matmul_nt
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// exp(x) in float for x in [-87, 88], ~1 ulp; returns exactly 0 below -87.3 (so -inf -> 0) where
// expf would give a denormal (< 1.2e-38, negligible against a softmax sum >= 1). Callers pass
// x <= ~0 (scores minus the row max or the lse).
// Written so that loops over it vectorize: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2,
// degree-6 minimax polynomial for e^r, then 2^n from the exponent bits.
inline float exp_neg(float x) {
  const float xc = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  const float y = p * std::bit_cast<float>(bits);
  return x < -87.33f ? 0.0f : y;
}

// C (M, N) = alpha * A (M, K) · B^T, B (N, K) row-major with leading dims lda, ldb, ldc.
// bt is scratch of K * round_up(N, kColTile) floats (B is packed transposed into it).
void matmul_nt(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float* C, int64_t ldc, float* bt) {
  const int64_t np = (N + kColTile - 1) / kColTile * kColTile;
  for (int64_t k = 0; k < K; ++k) {
    float* dst = bt + k * np;
    for (int64_t n = 0; n < N; ++n) dst[n] = B[n * ldb + k];
    for (int64_t n = N; n < np; ++n) dst[n] = 0.0f;
  }
  for (int64_t n0 = 0; n0 < N; n0 += kColTile) {
    const int64_t nn = std::min(kColTile, N - n0);
    int64_t m0 = 0;
    for (; m0 + 4 <= M; m0 += 4) {
      float acc[4][kColTile] = {};
      const float* a = A + m0 * lda;
      for (int64_t k = 0; k < K; ++k) {
        const float* b = bt + k * np + n0;
        for (int r = 0; r < 4; ++r) {
          const float ar = a[r * lda + k];
          for (int64_t c = 0; c < kColTile; ++c) acc[r][c] += ar * b[c];
        }
      }
      for (int r = 0; r < 4; ++r)
        for (int64_t c = 0; c < nn; ++c) C[(m0 + r) * ldc + n0 + c] = alpha * acc[r][c];
    }
    for (; m0 < M; ++m0) {
      float acc[kColTile] = {};
      for (int64_t k = 0; k < K; ++k) {
        const float ar = A[m0 * lda + k];
        const float* b = bt + k * np + n0;
        for (int64_t c = 0; c < kColTile; ++c) acc[c] += ar * b[c];
      }
      for (int64_t c = 0; c < nn; ++c) C[m0 * ldc + n0 + c] = alpha * acc[c];
    }
  }
}

// C (M, N) += alpha * A (M, K) · B (K, N). Zero entries of A (masked probabilities) are cheap.
void matmul_nn_acc(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                   const float* B, int64_t ldb, float* C, int64_t ldc) {
  for (int64_t m = 0; m < M; ++m) {
    float* c = C + m * ldc;
    const float* a = A + m * lda;
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
      const float a0 = alpha * a[k], a1 = alpha * a[k + 1];
      const float a2 = alpha * a[k + 2], a3 = alpha * a[k + 3];
      if (a0 == 0.0f && a1 == 0.0f && a2 == 0.0f && a3 == 0.0f) continue;
      const float* b0 = B + k * ldb;
      const float* b1 = b0 + ldb;
      const float* b2 = b1 + ldb;
      const float* b3 = b2 + ldb;
      for (int64_t n = 0; n < N; ++n) c[n] += a0 * b0[n] + a1 * b1[n] + a2 * b2[n] + a3 * b3[n];
    }
    for (; k < K; ++k) {
      const float a0 = alpha * a[k];
      const float* b0 = B + k * ldb;
      for (int64_t n = 0; n < N; ++n) c[n] += a0 * b0[n];
    }
  }
}

// C (M, N) += alpha * A^T · B, A (K, M), B (K, N).
void matmul_tn_acc(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                   const float* B, int64_t ldb, float* C, int64_t ldc) {
  for (int64_t m = 0; m < M; ++m) {
    float* c = C + m * ldc;
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
      const float a0 = alpha * A[k * lda + m], a1 = alpha * A[(k + 1) * lda + m];
      const float a2 = alpha * A[(k + 2) * lda + m], a3 = alpha * A[(k + 3) * lda + m];
      if (a0 == 0.0f && a1 == 0.0f && a2 == 0.0f && a3 == 0.0f) continue;
      const float* b0 = B + k * ldb;
      const float* b1 = b0 + ldb;
      const float* b2 = b1 + ldb;
      const float* b3 = b2 + ldb;
      for (int64_t n = 0; n < N; ++n) c[n] += a0 * b0[n] + a1 * b1[n] + a2 * b2[n] + a3 * b3[n];
    }
    for (; k < K; ++k) {
      const float a0 = alpha * A[k * lda + m];
      const float* b0 = B + k * ldb;
      for (int64_t n = 0; n < N; ++n) c[n] += a0 * b0[n];
    }
  }
}

// Shapes, pointers and the per-query visible key interval shared by forward and backward.
struct Problem {
  int64_t B, T, Hq, Hkv, D;
  float scale;
  const AttentionMask* mask;
  // (B, T): every key visible from query t of row b lies in [lo, hi]; lo > hi: none.
  std::vector<int64_t> lo, hi;

  int64_t group() const { return Hq / Hkv; }
  int64_t q_off(int64_t b, int64_t t, int64_t h) const { return ((b * T + t) * Hq + h) * D; }
  int64_t kv_off(int64_t b, int64_t t, int64_t g) const { return ((b * T + t) * Hkv + g) * D; }
  int64_t lse_off(int64_t b, int64_t h, int64_t t) const { return (b * Hq + h) * T + t; }

  bool visible(int64_t b, int64_t i, int64_t j) const {
    const int64_t n = b * T;
    if (j < lo[n + i] || j > hi[n + i]) return false;  // causality and window live in lo/hi
    if (mask->key_valid && mask->key_valid[n + j] == 0) return false;
    if (mask->segment && mask->segment[n + j] != mask->segment[n + i]) return false;
    return true;
  }

  // Keys [jlo, jhi] cover everything visible from queries [i0, i0 + nq) of row b; false: none.
  bool key_range(int64_t b, int64_t i0, int64_t nq, int64_t* jlo, int64_t* jhi) const {
    *jlo = T;
    *jhi = -1;
    for (int64_t i = i0; i < i0 + nq; ++i) {
      if (lo[b * T + i] > hi[b * T + i]) continue;
      *jlo = std::min(*jlo, lo[b * T + i]);
      *jhi = std::max(*jhi, hi[b * T + i]);
    }
    return *jlo <= *jhi;
  }
};

Problem make_problem(int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                     const AttentionMask& mask) {
  MAGIX_CHECK(B >= 0 && T >= 0 && D > 0 && Hq > 0 && Hkv > 0,
              "attention: bad shape B={} T={} Hq={} Hkv={} D={}", B, T, Hq, Hkv, D);
  MAGIX_CHECK(Hq % Hkv == 0, "attention: {} query heads is not a multiple of {} kv heads", Hq,
              Hkv);
  Problem p{B, T, Hq, Hkv, D, scale, &mask, {}, {}};
  p.lo.resize(B * T);
  p.hi.resize(B * T);
  std::vector<int64_t> seg_first(T);
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* valid = mask.key_valid ? mask.key_valid + b * T : nullptr;
    const int32_t* seg = mask.segment ? mask.segment + b * T : nullptr;
    int64_t first_valid = T, last_valid = -1;
    for (int64_t t = 0; t < T; ++t) {
      if (!valid || valid[t] != 0) {
        first_valid = std::min(first_valid, t);
        last_valid = t;
      }
      // First key of the same segment: O(T * number of segment runs).
      seg_first[t] = 0;
      if (seg) {
        if (t > 0 && seg[t] == seg[t - 1]) {
          seg_first[t] = seg_first[t - 1];
        } else {
          int64_t j = 0;
          while (seg[j] != seg[t]) ++j;
          seg_first[t] = j;
        }
      }
      int64_t l = std::max(first_valid, seg_first[t]);
      if (mask.sliding_window > 0) l = std::max(l, t - mask.sliding_window + 1);
      p.lo[b * T + t] = l;
      p.hi[b * T + t] = last_valid;  // last valid key <= t (causality)
    }
  }
  return p;
}

struct Scratch {
  std::vector<float> s, dp, bt;
  std::vector<float> row;  // (kQueryBlock) per-row factor
  explicit Scratch(const Problem& p)
      : s(kQueryBlock * p.T),
        dp(kQueryBlock * p.T),
        bt(p.D * ((p.T + kColTile - 1) / kColTile * kColTile)),
        row(kQueryBlock) {}
};

// Forward for queries [i0, i0 + nq) of (b, h): out rows and lse.
void forward_block(const Problem& p, float* out, float* lse, const float* q, const float* k,
                   const float* v, int64_t b, int64_t h, int64_t i0, int64_t nq, Scratch& w) {
  const int64_t g = h / p.group(), D = p.D;
  const int64_t ldq = p.Hq * D, ldkv = p.Hkv * D;
  float* o = out + p.q_off(b, i0, h);
  for (int64_t r = 0; r < nq; ++r) std::fill(o + r * ldq, o + r * ldq + D, 0.0f);
  int64_t jlo, jhi;
  if (!p.key_range(b, i0, nq, &jlo, &jhi)) {
    for (int64_t r = 0; r < nq; ++r) lse[p.lse_off(b, h, i0 + r)] = kNegInf;
    return;
  }
  const int64_t nk = jhi - jlo + 1;
  float* s = w.s.data();  // (nq, nk)
  matmul_nt(nq, nk, D, p.scale, q + p.q_off(b, i0, h), ldq, k + p.kv_off(b, jlo, g), ldkv, s, nk,
            w.bt.data());
  for (int64_t r = 0; r < nq; ++r) {
    const int64_t i = i0 + r;
    float* sr = s + r * nk;
    float m = kNegInf;
    for (int64_t c = 0; c < nk; ++c) {
      if (p.visible(b, i, jlo + c))
        m = std::max(m, sr[c]);
      else
        sr[c] = kNegInf;
    }
    if (m == kNegInf) {  // sees no key: out stays 0
      std::fill(sr, sr + nk, 0.0f);
      lse[p.lse_off(b, h, i)] = kNegInf;
      w.row[r] = 0.0f;
      continue;
    }
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < nk; ++c) {
      sr[c] = exp_neg(sr[c] - m);
      sum += sr[c];
    }
    lse[p.lse_off(b, h, i)] = m + std::log(sum);
    w.row[r] = 1.0f / sum;
  }
  matmul_nn_acc(nq, D, nk, 1.0f, s, nk, v + p.kv_off(b, jlo, g), ldkv, o, ldq);
  for (int64_t r = 0; r < nq; ++r)
    for (int64_t d = 0; d < D; ++d) o[r * ldq + d] *= w.row[r];
}

// Backward for queries [i0, i0 + nq) of (b, h): dq rows += ..., dk/dv rows of kv head g += ...
void backward_block(const Problem& p, float* dq, float* dk, float* dv, const float* dout,
                    const float* out, const float* lse, const float* q, const float* k,
                    const float* v, int64_t b, int64_t h, int64_t i0, int64_t nq, Scratch& w) {
  const int64_t g = h / p.group(), D = p.D;
  const int64_t ldq = p.Hq * D, ldkv = p.Hkv * D;
  int64_t jlo, jhi;
  if (!p.key_range(b, i0, nq, &jlo, &jhi)) return;
  const int64_t nk = jhi - jlo + 1;
  const float* qb = q + p.q_off(b, i0, h);
  const float* dob = dout + p.q_off(b, i0, h);
  const float* ob = out + p.q_off(b, i0, h);
  float* s = w.s.data();    // (nq, nk): scores, then P
  float* dp = w.dp.data();  // (nq, nk): dP, then dS
  matmul_nt(nq, nk, D, p.scale, qb, ldq, k + p.kv_off(b, jlo, g), ldkv, s, nk, w.bt.data());
  for (int64_t r = 0; r < nq; ++r) {
    const int64_t i = i0 + r;
    float* sr = s + r * nk;
    const float l = lse[p.lse_off(b, h, i)];
    if (l == kNegInf) {  // fully masked row: P = 0, no gradient
      std::fill(sr, sr + nk, 0.0f);
      continue;
    }
    for (int64_t c = 0; c < nk; ++c)
      if (!p.visible(b, i, jlo + c)) sr[c] = kNegInf;
#pragma omp simd
    for (int64_t c = 0; c < nk; ++c) sr[c] = exp_neg(sr[c] - l);
    float di = 0.0f;  // rowsum(dO ∘ O)
    for (int64_t d = 0; d < D; ++d) di += dob[r * ldq + d] * ob[r * ldq + d];
    w.row[r] = di;
  }
  matmul_tn_acc(nk, D, nq, 1.0f, s, nk, dob, ldq, dv + p.kv_off(b, jlo, g), ldkv);
  matmul_nt(nq, nk, D, 1.0f, dob, ldq, v + p.kv_off(b, jlo, g), ldkv, dp, nk, w.bt.data());
  for (int64_t r = 0; r < nq; ++r) {
    const float* sr = s + r * nk;
    float* dr = dp + r * nk;
    const float di = lse[p.lse_off(b, h, i0 + r)] == kNegInf ? 0.0f : w.row[r];
#pragma omp simd
    for (int64_t c = 0; c < nk; ++c) dr[c] = sr[c] * (dr[c] - di);
  }
  matmul_nn_acc(nq, D, nk, p.scale, dp, nk, k + p.kv_off(b, jlo, g), ldkv, dq + p.q_off(b, i0, h),
                ldq);
  matmul_tn_acc(nk, D, nq, p.scale, dp, nk, qb, ldq, dk + p.kv_off(b, jlo, g), ldkv);
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                       const AttentionMask& mask) {
  const Problem p = make_problem(B, T, Hq, Hkv, D, scale, mask);
  const int64_t nblocks = (T + kQueryBlock - 1) / kQueryBlock;
  const int64_t ntasks = B * Hq * nblocks;
#pragma omp parallel
  {
    Scratch w(p);
    // Later query blocks see more keys: hand them out first.
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < ntasks; ++task) {
      const int64_t blk = nblocks - 1 - task % nblocks;
      const int64_t bh = task / nblocks;
      const int64_t i0 = blk * kQueryBlock;
      forward_block(p, out, lse, q, k, v, bh / Hq, bh % Hq, i0, std::min(kQueryBlock, T - i0), w);
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v,
                        int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                        const AttentionMask& mask) {
  const Problem p = make_problem(B, T, Hq, Hkv, D, scale, mask);
  const int64_t nblocks = (T + kQueryBlock - 1) / kQueryBlock;
  const int64_t group = Hq / Hkv;
#pragma omp parallel
  {
    Scratch w(p);
    // One task per (b, kv head): its dk/dv rows and its group's dq rows belong to it alone.
#pragma omp for schedule(dynamic, 1)
    for (int64_t bg = 0; bg < B * Hkv; ++bg) {
      const int64_t b = bg / Hkv, g = bg % Hkv;
      for (int64_t h = g * group; h < (g + 1) * group; ++h)
        for (int64_t blk = 0; blk < nblocks; ++blk) {
          const int64_t i0 = blk * kQueryBlock;
          backward_block(p, dq, dk, dv, dout, out, lse, q, k, v, b, h, i0,
                         std::min(kQueryBlock, T - i0), w);
        }
    }
  }
}

}  // namespace magix::cpu
