// The op-table sweep, attention: attention_forward / attention_backward with MHA, GQA and MQA,
// B > 1, sliding windows, key padding (a fully padded row too), packed segments and their
// combinations, score soft-capping; attention_decode against a cache with invalid slots, windows
// and garbage in the slots it must not see; against fp64 references, on every backend.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend_ops_util.hpp"

namespace magix::test {
namespace {

class AttentionOps : public BackendOpsTest {};

enum class Padding { kNone, kSome, kWithFullRow };

struct AttentionCase {
  const char* name;
  int64_t B, T, Hq, Hkv, D;
  int64_t window = 0;
  Padding padding = Padding::kNone;
  bool segments = false;
  double softcap = 0;  // > 0: scores capped to softcap·tanh(s / softcap)
};

const std::vector<AttentionCase> kAttentionCases = {
    {"MHA T=1", 1, 1, 1, 1, 4},
    {"MHA", 1, 17, 2, 2, 8},
    {"GQA B=2", 2, 33, 4, 2, 16},
    {"MQA T=65 (two query blocks)", 2, 65, 3, 1, 8},
    {"GQA window 5, D=5", 2, 33, 4, 2, 5, 5},
    {"window 1", 1, 9, 2, 1, 4, 1},
    {"padding with a fully padded row", 3, 17, 2, 1, 8, 0, Padding::kWithFullRow},
    {"packed segments", 2, 33, 4, 4, 8, 0, Padding::kNone, true},
    {"window + padding + segments", 2, 65, 6, 2, 8, 7, Padding::kSome, true},
    {"GQA T=130 (three query blocks), window 70, padding", 2, 130, 4, 2, 16, 70, Padding::kSome},
    {"GQA softcap 1.5", 2, 33, 4, 2, 16, 0, Padding::kNone, false, 1.5},
    {"softcap 3 + window + padding + segments", 2, 65, 6, 2, 8, 7, Padding::kSome, true, 3.0},
    {"MQA T=130 softcap 0.7, padding", 2, 130, 4, 1, 16, 0, Padding::kWithFullRow, false, 0.7},
};

std::string show(const AttentionCase& c) {
  return fmt::format("{}: B={} T={} Hq={} Hkv={} D={} window={} softcap={}", c.name, c.B, c.T, c.Hq,
                     c.Hkv, c.D, c.window, c.softcap);
}

// key_valid (B, T): row 0 left-padded by 3, row 1 fully padded (kWithFullRow) or with its last
// 4 keys padded, later rows with random holes.
std::vector<int32_t> key_valid_of(const AttentionCase& c) {
  std::vector<int32_t> valid = uniform_ints(c.B * c.T, 401, 0, 3);
  for (int32_t& x : valid) x = x != 0;  // 3 in 4 valid
  for (int64_t t = 0; t < c.T; ++t) {
    valid[t] = t >= 3;
    if (c.B > 1) {
      valid[c.T + t] = c.padding == Padding::kWithFullRow ? 0 : t < c.T - 4;
    }
  }
  return valid;
}

// segment (B, T): runs of 1..12 tokens; row 1 reuses id 0 after other ids (ids are compared,
// not their runs).
std::vector<int32_t> segments_of(const AttentionCase& c) {
  std::vector<int32_t> seg(c.B * c.T);
  const std::vector<int32_t> runs = uniform_ints(c.B * c.T, 402, 1, 12);
  for (int64_t b = 0; b < c.B; ++b) {
    int32_t id = 0;
    int64_t left = runs[b * c.T];
    for (int64_t t = 0; t < c.T; ++t, --left) {
      if (left == 0) ++id, left = runs[b * c.T + t];
      seg[b * c.T + t] = b == 1 ? id % 3 : id;
    }
  }
  return seg;
}

// The mask of the table: query i of row b sees key j.
struct MaskRef {
  int64_t T, window;
  const std::vector<int32_t>* valid;
  const std::vector<int32_t>* seg;
  bool sees(int64_t b, int64_t i, int64_t j) const {
    return j <= i && (window <= 0 || i - j < window) && (!valid || (*valid)[b * T + j] != 0) &&
           (!seg || (*seg)[b * T + i] == (*seg)[b * T + j]);
  }
};

// Probabilities p (T) of query i of (b, h) over keys 0..T-1 (0 where unseen); returns lse. With
// c.softcap the scores are capped and `slope` (T; may be null) gets d capped / d raw score.
double attention_probs(const AttentionCase& c, const MaskRef& mask, const std::vector<double>& q,
                       const std::vector<double>& k, double scale, int64_t b, int64_t h, int64_t i,
                       std::vector<double>& p, std::vector<double>* slope = nullptr) {
  const int64_t g = h / (c.Hq / c.Hkv);
  double m = -INFINITY;
  for (int64_t j = 0; j < c.T; ++j) {
    p[j] = -INFINITY;
    if (!mask.sees(b, i, j)) continue;
    double s = 0;
    for (int64_t d = 0; d < c.D; ++d)
      s += q[((b * c.T + i) * c.Hq + h) * c.D + d] * k[((b * c.T + j) * c.Hkv + g) * c.D + d];
    p[j] = scale * s;
    if (slope) (*slope)[j] = 1;
    if (c.softcap > 0) {
      const double t = std::tanh(p[j] / c.softcap);
      p[j] = c.softcap * t;
      if (slope) (*slope)[j] = 1 - t * t;
    }
    m = std::max(m, p[j]);
  }
  if (m == -INFINITY) {
    std::fill(p.begin(), p.end(), 0.0);
    return -INFINITY;
  }
  double sum = 0;
  for (double& x : p) sum += x = std::exp(x - m);
  for (double& x : p) x /= sum;
  return m + std::log(sum);
}

// F32 operands, and BF16 operands (bf16 mixed precision: q, k, v, out and dout bf16; lse and the
// gradients F32).
TEST_P(AttentionOps, ForwardAndBackward) {
  for (const DType dt : {DType::kF32, DType::kBF16})
    for (const AttentionCase& c : kAttentionCases) {
      const bool bf16 = dt == DType::kBF16;
      const std::string what = show(c) + (bf16 ? " BF16" : " F32") + " on " + dev_name();
      const double tol = bf16 ? kBf16AttentionTol : kF32Tol;
      const float scale = c.D == 5 ? 0.5f : 1.0f / std::sqrt(float(c.D));
      const Input q = random({c.B, c.T, c.Hq, c.D}, dt, 411, -2, 2);
      const Input k = random({c.B, c.T, c.Hkv, c.D}, dt, 412, -2, 2);
      const Input v = random({c.B, c.T, c.Hkv, c.D}, dt, 413);
      const std::vector<int32_t> valid = key_valid_of(c), seg = segments_of(c);
      const Tensor valid_dev = put_i32({c.B, c.T}, valid), seg_dev = put_i32({c.B, c.T}, seg);
      const bool padded = c.padding != Padding::kNone;
      const AttentionMask mask{padded ? &valid_dev : nullptr, c.segments ? &seg_dev : nullptr,
                               c.window, static_cast<float>(c.softcap)};
      const MaskRef ref{c.T, c.window, padded ? &valid : nullptr, c.segments ? &seg : nullptr};
      Tensor out = garbage({c.B, c.T, c.Hq, c.D}, dt);
      Tensor lse = garbage({c.B, c.Hq, c.T}, DType::kF32);
      be().attention_forward(out, lse, q.dev, k.dev, v.dev, scale, mask);

      const Input dout = random({c.B, c.T, c.Hq, c.D}, dt, 414);
      std::vector<double> want_out(q.ref.size(), 0.0), want_lse(c.B * c.Hq * c.T);
      // Gradients start non-zero: the op adds to them.
      Input dq = random({c.B, c.T, c.Hq, c.D}, DType::kF32, 415);
      Input dk = random({c.B, c.T, c.Hkv, c.D}, DType::kF32, 416);
      Input dv = random({c.B, c.T, c.Hkv, c.D}, DType::kF32, 417);
      std::vector<double> want_dq = dq.ref, want_dk = dk.ref, want_dv = dv.ref, p(c.T), slope(c.T);
      for (int64_t b = 0; b < c.B; ++b) {
        for (int64_t h = 0; h < c.Hq; ++h) {
          const int64_t g = h / (c.Hq / c.Hkv);
          for (int64_t i = 0; i < c.T; ++i) {
            want_lse[(b * c.Hq + h) * c.T + i] =
                attention_probs(c, ref, q.ref, k.ref, scale, b, h, i, p, &slope);
            const int64_t qi = ((b * c.T + i) * c.Hq + h) * c.D;
            for (int64_t j = 0; j < c.T; ++j)
              for (int64_t d = 0; d < c.D; ++d)
                want_out[qi + d] += p[j] * v.ref[((b * c.T + j) * c.Hkv + g) * c.D + d];
            // dP = dout · v, dS = P ∘ (dP - dout · out), dq = scale dS k, dk = scale dSᵀ q,
            // dv = Pᵀ dout; soft-capping multiplies dS by the cap's slope.
            double di = 0;
            for (int64_t d = 0; d < c.D; ++d) di += dout.ref[qi + d] * want_out[qi + d];
            for (int64_t j = 0; j < c.T; ++j) {
              if (p[j] == 0) continue;
              const int64_t kj = ((b * c.T + j) * c.Hkv + g) * c.D;
              double dp = 0;
              for (int64_t d = 0; d < c.D; ++d) dp += dout.ref[qi + d] * v.ref[kj + d];
              const double ds = p[j] * (dp - di) * slope[j];
              for (int64_t d = 0; d < c.D; ++d) {
                want_dv[kj + d] += p[j] * dout.ref[qi + d];
                want_dq[qi + d] += scale * ds * k.ref[kj + d];
                want_dk[kj + d] += scale * ds * q.ref[qi + d];
              }
            }
          }
        }
      }
      const std::string key = bf16 ? " BF16" : "";
      expect_close("attention_forward out" + key, what, get(out), want_out, tol);
      expect_close("attention_forward lse" + key, what, get(lse), want_lse);

      // The backward takes out and lse as the forward saved them: the reference's, in out's dtype.
      const Input out32 =
          put(out.shape(), dt, std::vector<float>(want_out.begin(), want_out.end()));
      const Input lse32 =
          put(lse.shape(), DType::kF32, std::vector<float>(want_lse.begin(), want_lse.end()));
      be().attention_backward(dq.dev, dk.dev, dv.dev, dout.dev, out32.dev, lse32.dev, q.dev, k.dev,
                              v.dev, scale, mask);
      expect_close("attention_backward dq" + key, what, get(dq.dev), want_dq, tol);
      expect_close("attention_backward dk" + key, what, get(dk.dev), want_dk, tol);
      expect_close("attention_backward dv" + key, what, get(dv.dev), want_dv, tol);
    }
}

// ---- attention_decode: one query per row at cache slot `slot` -------------------------------
// (with a window, also against the same keys in a ring of the window's size)

struct DecodeCase {
  const char* name;
  int64_t B, S, Hq, Hkv, D, slot, window;
  double softcap = 0;
};

const std::vector<DecodeCase> kDecodeCases = {
    {"one slot", 1, 1, 1, 1, 4, 0, 0},
    {"GQA, invalid slots", 2, 17, 4, 2, 8, 9, 0},
    {"MQA window 5, a row with no valid slot", 3, 33, 3, 1, 16, 32, 5},
    {"MHA window 12, D=5", 2, 65, 2, 2, 5, 40, 12},
    {"slot 0 invalid in row 0", 2, 9, 2, 1, 8, 0, 0},
    {"GQA, 129 slots", 2, 129, 8, 2, 32, 128, 0},
    {"GQA softcap 1.5, window 12", 2, 33, 4, 2, 16, 30, 12, 1.5},
    {"MQA softcap 0.7", 3, 17, 3, 1, 8, 16, 0, 0.7},
};

// F32 and BF16 caches (bf16 mixed precision keeps the cache in bf16; the reference uses its
// bf16 values).
TEST_P(AttentionOps, DecodeAgainstCache) {
  for (const DType cache_dtype : {DType::kF32, DType::kBF16})
    for (const DecodeCase& c : kDecodeCases) {
      const std::string what =
          fmt::format("{}: B={} S={} Hq={} Hkv={} D={} slot={} window={} softcap={} {} cache on {}",
                      c.name, c.B, c.S, c.Hq, c.Hkv, c.D, c.slot, c.window, c.softcap,
                      dtype_name(cache_dtype), dev_name());
      const float scale = 1.0f / std::sqrt(float(c.D));
      // valid (B, S): row 0 starts with 2 invalid slots (when S > 2), row 2 has none valid, the
      // others have holes.
      std::vector<int32_t> valid = uniform_ints(c.B * c.S, 421, 0, 3);
      for (int64_t b = 0; b < c.B; ++b) {
        for (int64_t j = 0; j < c.S; ++j) {
          int32_t& x = valid[b * c.S + j];
          x = b == 2 ? 0 : (b == 0 && j < 2 && c.S > 2 ? 0 : x != 0);
        }
      }
      std::vector<float> k = uniform(c.B * c.S * c.Hkv * c.D, 422, -2, 2);
      std::vector<float> v = uniform(c.B * c.S * c.Hkv * c.D, 423);
      // Slots the query must not see (later than slot, invalid, or outside the window) hold values
      // that would dominate the softmax and the output.
      for (int64_t b = 0; b < c.B; ++b) {
        for (int64_t j = 0; j < c.S; ++j) {
          const bool seen =
              j <= c.slot && valid[b * c.S + j] != 0 && (c.window <= 0 || c.slot - j < c.window);
          if (seen) continue;
          for (int64_t e = 0; e < c.Hkv * c.D; ++e) {
            k[(b * c.S + j) * c.Hkv * c.D + e] = 50.0f;
            v[(b * c.S + j) * c.Hkv * c.D + e] = 1000.0f;
          }
        }
      }
      const Input q = random({c.B, c.Hq, c.D}, DType::kF32, 424, -2, 2);
      const Input kc = put({c.B, c.S, c.Hkv, c.D}, cache_dtype, k);
      const Input vc = put({c.B, c.S, c.Hkv, c.D}, cache_dtype, v);
      Tensor out = garbage({c.B, c.Hq, c.D}, DType::kF32);
      be().attention_decode(out, q.dev, kc.dev, vc.dev, put_i32({c.B, c.S}, valid), c.slot, scale,
                            c.window, static_cast<float>(c.softcap));
      // The training mask with slots as positions, for the single query at `slot`.
      const AttentionCase as_training{"",    c.B,      c.S, c.Hq, c.Hkv, c.D, 0, Padding::kNone,
                                      false, c.softcap};
      const MaskRef mask{c.S, c.window, &valid, nullptr};
      std::vector<double> want(q.ref.size(), 0.0), p(c.S), qs(c.B * c.S * c.Hq * c.D, 0.0);
      for (int64_t b = 0; b < c.B; ++b)  // q placed at position `slot` of a (B, S, Hq, D) tensor
        for (int64_t e = 0; e < c.Hq * c.D; ++e)
          qs[(b * c.S + c.slot) * c.Hq * c.D + e] = q.ref[b * c.Hq * c.D + e];
      for (int64_t b = 0; b < c.B; ++b) {
        for (int64_t h = 0; h < c.Hq; ++h) {
          attention_probs(as_training, mask, qs, kc.ref, scale, b, h, c.slot, p);
          const int64_t g = h / (c.Hq / c.Hkv);
          for (int64_t j = 0; j < c.S; ++j)
            for (int64_t d = 0; d < c.D; ++d)
              want[(b * c.Hq + h) * c.D + d] +=
                  p[j] * vc.ref[((b * c.S + j) * c.Hkv + g) * c.D + d];
        }
      }
      expect_close(cache_dtype == DType::kBF16 ? "attention_decode out (BF16 cache)"
                                               : "attention_decode out",
                   what, get(out), want);
      if (c.window <= 0) continue;
      // The same cache as a ring of R slots (slot j held at j mod R: the sliding layers' cache in
      // generation), R the window or a little more: the same output, bit for bit.
      const std::vector<double> full = get(out);
      for (const int64_t R : {c.window, c.window + 3}) {
        const int64_t KD = c.Hkv * c.D;
        std::vector<float> kr(c.B * R * KD, 7.0f), vr(c.B * R * KD, 7.0f);
        std::vector<int32_t> vr_valid(c.B * R, 0);
        for (int64_t b = 0; b < c.B; ++b) {
          for (int64_t j = std::max<int64_t>(0, c.slot - R + 1); j <= c.slot; ++j) {
            const int64_t at = b * R + j % R;
            vr_valid[at] = valid[b * c.S + j];
            for (int64_t e = 0; e < KD; ++e) {
              kr[at * KD + e] = static_cast<float>(kc.ref[(b * c.S + j) * KD + e]);
              vr[at * KD + e] = static_cast<float>(vc.ref[(b * c.S + j) * KD + e]);
            }
          }
        }
        Tensor ring_out = garbage({c.B, c.Hq, c.D}, DType::kF32);
        be().attention_decode(ring_out, q.dev, put({c.B, R, c.Hkv, c.D}, cache_dtype, kr).dev,
                              put({c.B, R, c.Hkv, c.D}, cache_dtype, vr).dev,
                              put_i32({c.B, R}, vr_valid), c.slot, scale, c.window,
                              static_cast<float>(c.softcap));
        EXPECT_EQ(get(ring_out), full) << what << ", a ring of " << R << " slots";
      }
    }
}

INSTANTIATE_TEST_SUITE_P(Backends, AttentionOps, ::testing::ValuesIn(swept_devices()),
                         device_param_name);

}  // namespace
}  // namespace magix::test
