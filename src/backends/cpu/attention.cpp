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
// all query heads of its group accumulate into, are written by a single thread (with fewer
// (b, kv head) than threads, each is split and its parts' dk/dv are summed afterwards; only
// then does the summation order, and so the last bits of dk/dv, depend on the thread count).
//
// One template serves fp32 and bf16 (Elem = float or uint16_t bf16 bits for q, k, v, out, dout);
// only the block products and the operand roundings differ. The block products go through
// gemm() for fp32 and gemm_bf16() for bf16 (one call per product, single-threaded inside the
// OpenMP region). In bf16 the scores, the softmax, lse, dP and dS are fp32 as in the fp32
// kernel; P (forward and backward) and dS are rounded to bf16 only as inputs of the products
// with V, dO, K and Q, and out is rounded once after the normalisation. dq, dk, dv are fp32.
//
// For fp32, measured by CPU time on one thread for B=4, T=512, D=64 and 128 (MHA and GQA)
// against a register-tiled AVX2 loop version of the same blocks (commit 4e54805), OpenBLAS
// (SkylakeX kernels) was 1.6-1.9x faster forward and 1.5-3.0x faster backward.
#include "backends/cpu/attention.hpp"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "backends/cpu/attention_rows.hpp"
#include "backends/cpu/gemm.hpp"
#include "backends/cpu/gemm_bf16.hpp"
#include "backends/cpu/softcap.hpp"
#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"

namespace magix::cpu {
namespace {

constexpr int64_t kQueryBlock = 64;
using namespace attention_rows;  // Vec8, exp_shifted, store_bf16x8, row_dot, ...

// The kernels are templates on the element type Elem of q, k, v, out, dout: float, or uint16_t
// holding bf16 bits.
template <class Elem>
constexpr bool kBf16 = std::is_same_v<Elem, uint16_t>;

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

  // Sets the masked scores of query i (row b) to -inf; sr holds the scores against keys
  // [jlo, jlo + nk). Returns the largest visible score, -inf if none.
  float mask_row(int64_t b, int64_t i, int64_t jlo, int64_t nk, float* sr) const {
    const int64_t n = b * T;
    // Causality, the window and the valid/segment bounds are in [lo, hi].
    const int64_t a = std::clamp<int64_t>(lo[n + i] - jlo, 0, nk);
    const int64_t e = std::clamp<int64_t>(hi[n + i] - jlo + 1, a, nk);
    std::fill(sr, sr + a, kNegInf);
    std::fill(sr + e, sr + nk, kNegInf);
    if (mask->key_valid) {
      const int32_t* valid = mask->key_valid + n + jlo;
      for (int64_t c = a; c < e; ++c)
        if (valid[c] == 0) sr[c] = kNegInf;
    }
    if (mask->segment) {
      const int32_t* seg = mask->segment + n + jlo;
      const int32_t own = mask->segment[n + i];
      for (int64_t c = a; c < e; ++c)
        if (seg[c] != own) sr[c] = kNegInf;
    }
    return row_max(sr + a, e - a);
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

template <class Elem>
Problem make_problem(int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                     const AttentionMask& mask) {
  MAGIX_CHECK(B >= 0 && T >= 0 && D > 0 && Hq > 0 && Hkv > 0,
              "attention: bad shape B={} T={} Hq={} Hkv={} D={}", B, T, Hq, Hkv, D);
  MAGIX_CHECK(Hq % Hkv == 0, "attention: {} query heads is not a multiple of {} kv heads", Hq, Hkv);
  // Loads the BLAS (or picks the bf16 GEMM engine) here, before the OpenMP region: a failure is
  // an exception to the caller.
  if constexpr (kBf16<Elem>) {
    (void)gemm_bf16_engine_name();
  } else {
    (void)gemm_backend_name();
  }
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

// The block products, by operand type: fp32 operands through gemm() (OpenBLAS), bf16 operands
// (uint16_t bit patterns) through gemm_bf16() (oneDNN/AMX, products accumulated in fp32). C is
// fp32 in both. beta is 0 or 1.
void block_product(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                   int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void block_product(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                   const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta,
                   float* C, int64_t ldc) {
  gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// bf16 only: key ranges are widened to whole blocks of keys (clipped to [0, T)), so that the
// block products take few distinct shapes: oneDNN creates a primitive per shape (~0.4 ms here,
// 40 block products) and magix's cache of them holds 1024, while padding and packing would
// otherwise give one key count per block. Blocks are kQueryBlock keys up to T = 2048, then T / 32
// rounded up to kQueryBlock (at most ~33 key counts per product; the extra keys cost <= 1/32 of a
// row). The added keys are masked: P and dS are 0 there, and the dk/dv rows they touch get += 0.
void widen_to_key_blocks(int64_t T, int64_t* jlo, int64_t* jhi) {
  const int64_t n = std::max<int64_t>(1, (T / 32 + kQueryBlock - 1) / kQueryBlock) * kQueryBlock;
  *jlo = *jlo / n * n;
  *jhi = std::min(T, (*jhi / n + 1) * n) - 1;
}

// Rows of a row-major block-product operand: row r at data + r * ld.
template <class Elem>
struct Rows {
  const Elem* data;
  int64_t ld;
};

// K and V as the block products read them. fp32: the caller's (B, T, Hkv, D) arrays (the BLAS
// takes any leading dimension). bf16: dense copies (B, Hkv, T, D), made once per call, because
// oneDNN's matmul takes dense operands only and gemm_bf16 would otherwise copy the visible key
// rows again for every block product.
template <class Elem>
class KeysValues {
 public:
  KeysValues(const Problem& p, const Elem* k, const Elem* v) : p_(p), k_(k), v_(v) {
    if constexpr (kBf16<Elem>) {
      const int64_t n = p.B * p.T * p.Hkv * p.D;
      k_dense_ = std::make_unique_for_overwrite<Elem[]>(n);
      v_dense_ = std::make_unique_for_overwrite<Elem[]>(n);
      Elem* kd = k_dense_.get();
      Elem* vd = v_dense_.get();
#pragma omp parallel for schedule(static) if (n >= (int64_t{1} << 16))
      for (int64_t bt = 0; bt < p.B * p.T; ++bt) {
        const int64_t b = bt / p.T, t = bt % p.T;
        for (int64_t g = 0; g < p.Hkv; ++g) {
          std::memcpy(kd + dense_off(b, t, g), k + p.kv_off(b, t, g), p.D * sizeof(Elem));
          std::memcpy(vd + dense_off(b, t, g), v + p.kv_off(b, t, g), p.D * sizeof(Elem));
        }
      }
    }
  }

  // Keys t, t + 1, ... of (b, kv head g).
  Rows<Elem> k(int64_t b, int64_t t, int64_t g) const {
    return rows(k_, k_dense_.get(), b, t, g);
  }
  Rows<Elem> v(int64_t b, int64_t t, int64_t g) const {
    return rows(v_, v_dense_.get(), b, t, g);
  }

 private:
  int64_t dense_off(int64_t b, int64_t t, int64_t g) const {
    return ((b * p_.Hkv + g) * p_.T + t) * p_.D;
  }
  Rows<Elem> rows(const Elem* x, const Elem* dense, int64_t b, int64_t t, int64_t g) const {
    if constexpr (kBf16<Elem>) {
      return {dense + dense_off(b, t, g), p_.D};
    } else {
      return {x + p_.kv_off(b, t, g), p_.Hkv * p_.D};
    }
  }

  const Problem& p_;
  const Elem *k_, *v_;
  std::unique_ptr<Elem[]> k_dense_, v_dense_;  // bf16 only
};

// Per-thread buffers: (kQueryBlock, T) scores/probabilities and dP/dS, and a per-row factor.
// For bf16 also: P and dS rounded to bf16 (kQueryBlock, T), the GEMM inputs; dense copies of
// the block's q and dout rows (kQueryBlock, D); the fp32 product of P·V or dS·K
// (kQueryBlock, D) before it goes to out or dq; dense dk, dv accumulators (T, D) fp32.
template <class Elem>
struct Scratch {
  std::vector<float> s, dp, row;
  std::vector<uint16_t> p16, ds16, q16, do16;
  std::vector<float> acc, dk, dv;
  std::vector<float> slope;  // soft-capping only: (kQueryBlock, T) d capped / d raw score
  explicit Scratch(const Problem& p)
      : s(kQueryBlock * p.T), dp(kQueryBlock * p.T), row(kQueryBlock) {
    if (p.mask->softcap > 0) slope.resize(kQueryBlock * p.T);
    if constexpr (kBf16<Elem>) {
      p16.resize(kQueryBlock * p.T);
      ds16.resize(kQueryBlock * p.T);
      q16.resize(kQueryBlock * p.D);
      do16.resize(kQueryBlock * p.D);
      acc.resize(kQueryBlock * p.D);
      dk.resize(p.T * p.D);
      dv.resize(p.T * p.D);
    }
  }
};

// x (rows of the fp32 block) as a GEMM operand of type Elem: x itself for fp32, its bf16 rounding
// (written beside it into `rounded`) for bf16.
template <class Elem>
const Elem* operand(const float* x, const std::vector<uint16_t>& rounded) {
  if constexpr (kBf16<Elem>) {
    return rounded.data();
  } else {
    return x;
  }
}

// P row (n) = exp(s - shift), in place in s for fp32; for bf16 rounded into p16 and, if keep_f32,
// also kept in s (the backward needs fp32 P for dS). Returns the fp32 row sum.
template <class Elem, bool keep_f32>
float probabilities(float* s, int64_t n, float shift, uint16_t* p16) {
  if constexpr (kBf16<Elem>) {
    return exp_shifted<keep_f32, true>(s, n, shift, p16);
  } else {
    return exp_shifted<true, false>(s, n, shift, nullptr);
  }
}

// dS row (n) = P ∘ (dP - di), in place in dp for fp32; for bf16 only its rounding into ds16.
template <class Elem>
void score_gradients(const float* p, float* dp, float di, int64_t n, uint16_t* ds16) {
  if constexpr (kBf16<Elem>) {
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) store_bf16x8(ds16 + c, load8(p + c) * (load8(dp + c) - di));
    for (; c < n; ++c) ds16[c] = float_to_bf16(p[c] * (dp[c] - di));
  } else {
    for (int64_t c = 0; c < n; ++c) dp[c] = p[c] * (dp[c] - di);
  }
}

// (rows, cols) at x with leading dimension ld as an operand: in place for fp32, a dense copy in
// buffer for bf16 (used by two block products).
template <class Elem>
Rows<Elem> block_rows(const Elem* x, int64_t ld, int64_t rows, int64_t cols,
                      std::vector<uint16_t>& buffer) {
  if constexpr (kBf16<Elem>) {
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(buffer.data() + r * cols, x + r * ld, cols * sizeof(Elem));
    return {buffer.data(), cols};
  } else {
    return {x, ld};
  }
}

// out row (D) = acc row · f: in place for fp32 (acc is the out row); for bf16 rounded once.
void store_out_row(float* o, const float* acc, int64_t D, float f) {
  for (int64_t d = 0; d < D; ++d) o[d] = acc[d] * f;
}
void store_out_row(uint16_t* o, const float* acc, int64_t D, float f) {
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) store_bf16x8(o + d, load8(acc + d) * f);
  for (; d < D; ++d) o[d] = float_to_bf16(acc[d] * f);
}

// Forward for queries [i0, i0 + nq) of (b, h): out rows and lse. Elem is the type of q, k, v and
// out (float or bf16 bits); scores, softmax and lse are fp32.
template <class Elem>
void forward_block(const Problem& p, Elem* out, float* lse, const Elem* q,
                   const KeysValues<Elem>& kv, int64_t b, int64_t h, int64_t i0, int64_t nq,
                   Scratch<Elem>& w) {
  const int64_t g = h / p.group(), D = p.D;
  const int64_t ldq = p.Hq * D;
  Elem* o = out + p.q_off(b, i0, h);
  int64_t jlo, jhi;
  if (!p.key_range(b, i0, nq, &jlo, &jhi)) {
    for (int64_t r = 0; r < nq; ++r) {
      std::fill(o + r * ldq, o + r * ldq + D, Elem{});
      lse[p.lse_off(b, h, i0 + r)] = kNegInf;
    }
    return;
  }
  if constexpr (kBf16<Elem>) widen_to_key_blocks(p.T, &jlo, &jhi);
  const int64_t nk = jhi - jlo + 1;
  const Rows<Elem> kb = kv.k(b, jlo, g), vb = kv.v(b, jlo, g);
  float* s = w.s.data();  // (nq, nk): S = scale Q K^T, then unnormalised P
  block_product(false, true, nq, nk, D, p.scale, q + p.q_off(b, i0, h), ldq, kb.data, kb.ld, 0.0f,
                s, nk);
  if (p.mask->softcap > 0) softcap_row(s, nq * nk, p.mask->softcap, nullptr);
  for (int64_t r = 0; r < nq; ++r) {
    const int64_t i = i0 + r;
    float* sr = s + r * nk;
    uint16_t* p16 = kBf16<Elem> ? w.p16.data() + r * nk : nullptr;
    const float m = p.mask_row(b, i, jlo, nk, sr);
    if (m == kNegInf) {  // sees no key: out = 0
      std::fill(sr, sr + nk, 0.0f);
      if (p16) std::fill(p16, p16 + nk, uint16_t{0});
      lse[p.lse_off(b, h, i)] = kNegInf;
      w.row[r] = 0.0f;
    } else {
      // >= 1: the max contributes exp(0)
      const float sum = probabilities<Elem, false>(sr, nk, m, p16);
      lse[p.lse_off(b, h, i)] = m + std::log(sum);
      w.row[r] = 1.0f / sum;
    }
  }
  // fp32: P·V straight into the out rows, normalised in place; bf16: into acc, then rounded.
  float* acc;
  int64_t ld_acc;
  if constexpr (kBf16<Elem>) {
    acc = w.acc.data();
    ld_acc = D;
  } else {
    acc = o;
    ld_acc = ldq;
  }
  block_product(false, false, nq, D, nk, 1.0f, operand<Elem>(s, w.p16), nk, vb.data, vb.ld, 0.0f,
                acc, ld_acc);
  for (int64_t r = 0; r < nq; ++r) store_out_row(o + r * ldq, acc + r * ld_acc, D, w.row[r]);
}

// Backward for queries [i0, i0 + nq) of (b, h): dq rows += ..., and for kv head g = h / group,
// dk_g / dv_g (T, D) with leading dim ld_g (key t of (b, g) at row t) += ... (all fp32). Elem is
// the type of dout, out, q, k, v; P, dP and dS are fp32, and P and dS are rounded to Elem only as
// inputs of the block products.
template <class Elem>
void backward_block(const Problem& p, float* dq, float* dk_g, float* dv_g, int64_t ld_g,
                    const Elem* dout, const Elem* out, const float* lse, const Elem* q,
                    const KeysValues<Elem>& kv, int64_t b, int64_t h, int64_t i0, int64_t nq,
                    Scratch<Elem>& w) {
  const int64_t g = h / p.group(), D = p.D;
  const int64_t ldq = p.Hq * D;
  int64_t jlo, jhi;
  if (!p.key_range(b, i0, nq, &jlo, &jhi)) return;
  if constexpr (kBf16<Elem>) widen_to_key_blocks(p.T, &jlo, &jhi);
  const int64_t nk = jhi - jlo + 1;
  const Rows<Elem> qb = block_rows(q + p.q_off(b, i0, h), ldq, nq, D, w.q16);
  const Rows<Elem> dob = block_rows(dout + p.q_off(b, i0, h), ldq, nq, D, w.do16);
  const Elem* ob = out + p.q_off(b, i0, h);
  const Rows<Elem> kb = kv.k(b, jlo, g), vb = kv.v(b, jlo, g);
  float* s = w.s.data();    // (nq, nk): scores, then P
  float* dp = w.dp.data();  // (nq, nk): dP, then dS
  block_product(false, true, nq, nk, D, p.scale, qb.data, qb.ld, kb.data, kb.ld, 0.0f, s, nk);
  const bool capped = p.mask->softcap > 0;
  if (capped) softcap_row(s, nq * nk, p.mask->softcap, w.slope.data());
  for (int64_t r = 0; r < nq; ++r) {
    float* sr = s + r * nk;
    uint16_t* p16 = kBf16<Elem> ? w.p16.data() + r * nk : nullptr;
    const float l = lse[p.lse_off(b, h, i0 + r)];
    w.row[r] = 0.0f;
    if (l == kNegInf) {  // fully masked row: P = 0, no gradient
      std::fill(sr, sr + nk, 0.0f);
      if (p16) std::fill(p16, p16 + nk, uint16_t{0});
    } else {
      p.mask_row(b, i0 + r, jlo, nk, sr);
      probabilities<Elem, true>(sr, nk, l, p16);
      w.row[r] = row_dot(dob.data + r * dob.ld, ob + r * ldq, D);  // D_i = rowsum(dO ∘ O)
    }
  }
  block_product(true, false, nk, D, nq, 1.0f, operand<Elem>(s, w.p16), nk, dob.data, dob.ld, 1.0f,
                dv_g + jlo * ld_g, ld_g);
  block_product(false, true, nq, nk, D, 1.0f, dob.data, dob.ld, vb.data, vb.ld, 0.0f, dp, nk);
  // Soft-capping: dS of the raw scores = P ∘ slope ∘ (dP - D_i); P is not needed after P·dO.
  if (capped) {
    for (int64_t e = 0; e < nq * nk; ++e) s[e] *= w.slope[e];
  }
  for (int64_t r = 0; r < nq; ++r) {
    uint16_t* ds16 = kBf16<Elem> ? w.ds16.data() + r * nk : nullptr;
    score_gradients<Elem>(s + r * nk, dp + r * nk, w.row[r], nk, ds16);
  }
  const Elem* ds = operand<Elem>(dp, w.ds16);
  float* dqb = dq + p.q_off(b, i0, h);
  if constexpr (kBf16<Elem>) {  // into dense acc (oneDNN's fast path), then onto the dq rows
    block_product(false, false, nq, D, nk, p.scale, ds, nk, kb.data, kb.ld, 0.0f, w.acc.data(), D);
    for (int64_t r = 0; r < nq; ++r)
      for (int64_t d = 0; d < D; ++d) dqb[r * ldq + d] += w.acc[r * D + d];
  } else {
    block_product(false, false, nq, D, nk, p.scale, ds, nk, kb.data, kb.ld, 1.0f, dqb, ldq);
  }
  block_product(true, false, nk, D, nq, p.scale, ds, nk, qb.data, qb.ld, 1.0f, dk_g + jlo * ld_g,
                ld_g);
}

// Runs body(task) for task in [0, n) on the threads of the current parallel region (an
// `omp for`, dynamic schedule, one task at a time). An exception stops the remaining tasks and
// is rethrown by rethrow_first() after the region: none may escape an OpenMP region.
class TaskErrors {
 public:
  template <class F>
  void run(int64_t n, F&& body) {
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < n; ++task) {
      if (failed_.load(std::memory_order_relaxed)) continue;
      try {
        body(task);
      } catch (...) {
        record(std::current_exception());
      }
    }
  }
  void rethrow_first() const {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  void record(std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!first_) first_ = e;
    failed_ = true;
  }

  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::exception_ptr first_;
};

template <class Elem>
void run_forward(Elem* out, float* lse, const Elem* q, const Elem* k, const Elem* v, int64_t B,
                 int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                 const AttentionMask& mask) {
  const Problem p = make_problem<Elem>(B, T, Hq, Hkv, D, scale, mask);
  const int64_t nblocks = (T + kQueryBlock - 1) / kQueryBlock;
  const int64_t ntasks = B * Hq * nblocks;
  const KeysValues<Elem> kv(p, k, v);
  TaskErrors errors;
#pragma omp parallel
  {
    Scratch<Elem> w(p);
    // Later query blocks see more keys: hand them out first.
    errors.run(ntasks, [&](int64_t task) {
      const int64_t blk = nblocks - 1 - task % nblocks;
      const int64_t bh = task / nblocks;
      const int64_t i0 = blk * kQueryBlock;
      forward_block(p, out, lse, q, kv, bh / Hq, bh % Hq, i0, std::min(kQueryBlock, T - i0), w);
    });
  }
  errors.rethrow_first();
}

template <class Elem>
void run_backward(float* dq, float* dk, float* dv, const Elem* dout, const Elem* out,
                  const float* lse, const Elem* q, const Elem* k, const Elem* v, int64_t B,
                  int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                  const AttentionMask& mask) {
  const Problem p = make_problem<Elem>(B, T, Hq, Hkv, D, scale, mask);
  const int64_t nblocks = (T + kQueryBlock - 1) / kQueryBlock;
  const int64_t group = Hq / Hkv, units = group * nblocks;  // (query head, block) per (b, g)
  // Each (b, kv head) is one task, or `parts` tasks when there are fewer (b, g) than threads;
  // the dq rows of a (head, block) belong to one task; a split (b, g) accumulates its dk/dv in
  // per-part (T, D) buffers, added up after the parallel loop, so no two threads write the same
  // row.
  const int64_t nbg = B * Hkv;
  const int64_t parts =
      std::clamp<int64_t>((omp_get_max_threads() + nbg - 1) / std::max<int64_t>(nbg, 1), 1,
                          std::max<int64_t>(units, 1));
  std::vector<float> partial(parts > 1 ? nbg * parts * 2 * T * D : 0,
                             0.0f);  // (bg, part, 2, T, D)
  const KeysValues<Elem> kv(p, k, v);
  TaskErrors errors;
#pragma omp parallel
  {
    Scratch<Elem> w(p);
    errors.run(nbg * parts, [&](int64_t task) {
      const int64_t bg = task / parts, part = task % parts, b = bg / Hkv, g = bg % Hkv;
      float* dk_g = dk + p.kv_off(b, 0, g);
      float* dv_g = dv + p.kv_off(b, 0, g);
      int64_t ld_g = Hkv * D;
      int64_t klo = 0, khi = -1;  // bf16, one part: the rows of w.dk/w.dv in use
      if (parts > 1) {
        dk_g = partial.data() + (task * 2) * T * D;
        dv_g = dk_g + T * D;
        ld_g = D;
      } else if constexpr (kBf16<Elem>) {
        // Dense per-thread accumulators (oneDNN accumulates into dense C only), added to dk/dv
        // at the end of the task; every unit's keys lie in the row's key range.
        if (p.key_range(b, 0, T, &klo, &khi)) {
          widen_to_key_blocks(T, &klo, &khi);
        } else {
          klo = 0, khi = -1;  // row b sees no key at all
        }
        dk_g = w.dk.data();
        dv_g = w.dv.data();
        ld_g = D;
        std::fill(dk_g + klo * D, dk_g + (khi + 1) * D, 0.0f);
        std::fill(dv_g + klo * D, dv_g + (khi + 1) * D, 0.0f);
      }
      // Interleaved units balance the parts: later blocks see more keys.
      for (int64_t u = part; u < units; u += parts) {
        const int64_t h = g * group + u / nblocks, i0 = (u % nblocks) * kQueryBlock;
        backward_block(p, dq, dk_g, dv_g, ld_g, dout, out, lse, q, kv, b, h, i0,
                       std::min(kQueryBlock, T - i0), w);
      }
      for (int64_t t = klo; t <= khi; ++t) {
        float* dk_row = dk + p.kv_off(b, t, g);
        float* dv_row = dv + p.kv_off(b, t, g);
        for (int64_t d = 0; d < D; ++d) dk_row[d] += dk_g[t * D + d];
        for (int64_t d = 0; d < D; ++d) dv_row[d] += dv_g[t * D + d];
      }
    });
    if (parts > 1) {
#pragma omp for schedule(static)
      for (int64_t bt = 0; bt < nbg * T; ++bt) {  // row t of (b, g)
        const int64_t bg = bt / T, t = bt % T, b = bg / Hkv, g = bg % Hkv;
        float* dk_row = dk + p.kv_off(b, t, g);
        float* dv_row = dv + p.kv_off(b, t, g);
        for (int64_t part = 0; part < parts; ++part) {
          const float* src = partial.data() + ((bg * parts + part) * 2 * T + t) * D;
          for (int64_t d = 0; d < D; ++d) dk_row[d] += src[d];
          for (int64_t d = 0; d < D; ++d) dv_row[d] += src[T * D + d];
        }
      }
    }
  }
  errors.rethrow_first();
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                       const AttentionMask& mask) {
  run_forward(out, lse, q, k, v, B, T, Hq, Hkv, D, scale, mask);
}

void attention_forward(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k,
                       const uint16_t* v, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
                       float scale, const AttentionMask& mask) {
  run_forward(out, lse, q, k, v, B, T, Hq, Hkv, D, scale, mask);
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v, int64_t B,
                        int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                        const AttentionMask& mask) {
  run_backward(dq, dk, dv, dout, out, lse, q, k, v, B, T, Hq, Hkv, D, scale, mask);
}

void attention_backward(float* dq, float* dk, float* dv, const uint16_t* dout, const uint16_t* out,
                        const float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                        int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                        const AttentionMask& mask) {
  run_backward(dq, dk, dv, dout, out, lse, q, k, v, B, T, Hq, Hkv, D, scale, mask);
}

}  // namespace magix::cpu
