// The bf16 attention_forward / attention_backward against a double-precision reference evaluated
// on the same bf16 values, with a bound per element derived from the kernel's roundings; against
// the fp32 kernel on the same values; thread-count independence; the other bf16 GEMM engines and
// an engine error, in child processes.
//
// Error bounds. u = 2^-8 is the unit roundoff of bf16 (8-bit significands, round to nearest
// even: |bf16(x) - x| <= u |x|). Scores are exact products of bf16 values summed in fp32 and the
// softmax is fp32, so apart from O(1e-6) fp32 terms the kernel's only errors are:
// - forward: P rounded as the input of P·V, and out rounded once:
//     |out - o| <= u (|o| + a) + (fp32),   a = sum_j p_j |v_j|   (per element d)
//   (the row sum and 1/sum stay fp32, so rounded P shifts out by at most u sum_j p_j |v_j|).
// - backward: P rounded for dV; dS rounded for dQ and dK; D_i = rowsum(dO ∘ O) read from the
//   bf16 out, which is off by at most the forward bound e_i (so D_i by δ_i = sum_d |dO_d| e_id):
//     |dV_j - ref| <= u sum_i p_ij |dO_i|
//     |dQ_i - ref| <= scale sum_j (u |dS_ij| + p_ij δ_i) |K_j|,  dK likewise with Q_i.
// Each bound is scaled by (1 + 2u) for second-order terms and gets 1e-4 of the magnitude of the
// fp32 terms (sum of |terms| without rounding; fp32 accumulation and exp err by ~1e-6 of that)
// plus 2^-23 (|g0| + |g|) for the += onto the initial gradient g0. Elements no visible pair
// reaches must be exact: out 0, gradients unchanged. These are worst-case bounds; the rounding
// errors have random signs, so the errors observed are a fraction of them (printed per case).
#include <gtest/gtest.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "backends/cpu/attention.hpp"
#include "backends/cpu/gemm_bf16.hpp"
#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"
#include "magix/tensor.hpp"

namespace magix::cpu {
namespace {

constexpr double kU = 1.0 / 256;  // bf16 unit roundoff
constexpr double kFp32Slack = 1e-4;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

struct Case {
  const char* name = "";
  int64_t B = 1, T = 1, Hq = 1, Hkv = 1, D = 16;
  float scale = 0.0f;  // 0: 1/sqrt(D)
  int64_t window = 0;
  std::vector<int32_t> key_valid;  // (B, T) or empty
  std::vector<int32_t> segment;    // (B, T) or empty
  float input_range = 2.0f;        // q, k, v uniform in [-range, range], then rounded to bf16
};

float scale_of(const Case& c) {
  return c.scale != 0.0f ? c.scale : 1.0f / std::sqrt(static_cast<float>(c.D));
}

AttentionMask mask_of(const Case& c) {
  AttentionMask m;
  m.key_valid = c.key_valid.empty() ? nullptr : c.key_valid.data();
  m.segment = c.segment.empty() ? nullptr : c.segment.data();
  m.sliding_window = c.window;
  return m;
}

bool visible(const Case& c, int64_t b, int64_t i, int64_t j) {
  if (j > i) return false;
  if (c.window > 0 && i - j >= c.window) return false;
  if (!c.key_valid.empty() && c.key_valid[b * c.T + j] == 0) return false;
  if (!c.segment.empty() && c.segment[b * c.T + i] != c.segment[b * c.T + j]) return false;
  return true;
}

// bf16 inputs (bit patterns): q, dout (B, T, Hq, D); k, v (B, T, Hkv, D).
struct Inputs {
  std::vector<uint16_t> q, k, v, dout;
};

std::vector<uint16_t> random_bf16(size_t n, float range, std::mt19937& gen) {
  std::uniform_real_distribution<float> u(-range, range);
  std::vector<uint16_t> x(n);
  for (auto& e : x) e = float_to_bf16(u(gen));
  return x;
}

Inputs make_inputs(const Case& c, uint32_t seed) {
  std::mt19937 gen(seed);
  const size_t nq = c.B * c.T * c.Hq * c.D, nk = c.B * c.T * c.Hkv * c.D;
  Inputs in;
  in.q = random_bf16(nq, c.input_range, gen);
  in.k = random_bf16(nk, c.input_range, gen);
  in.v = random_bf16(nk, c.input_range, gen);
  in.dout = random_bf16(nq, 1.0f, gen);
  return in;
}

std::vector<double> widen(const std::vector<uint16_t>& x) {
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = bf16_to_float(x[i]);
  return y;
}

std::vector<float> widen_f32(const std::vector<uint16_t>& x) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = bf16_to_float(x[i]);
  return y;
}

// Exact attention of the bf16 values in double, its gradients for dout, and the bounds above.
// A tolerance of 0 marks an element that no visible pair reaches.
struct Reference {
  std::vector<double> out, out_tol;  // (B, T, Hq, D)
  std::vector<double> lse;           // (B, Hq, T); -inf: no visible key
  std::vector<double> dq, dq_tol;    // (B, T, Hq, D)
  std::vector<double> dk, dk_tol;    // (B, T, Hkv, D)
  std::vector<double> dv, dv_tol;
};

Reference reference(const Case& c, const std::vector<double>& q, const std::vector<double>& k,
                    const std::vector<double>& v, const std::vector<double>& dout) {
  const int64_t T = c.T, D = c.D, group = c.Hq / c.Hkv;
  const double scale = scale_of(c);
  Reference r;
  r.out.assign(q.size(), 0.0);
  r.out_tol.assign(q.size(), 0.0);
  r.lse.assign(c.B * c.Hq * T, kNegInf);
  r.dq.assign(q.size(), 0.0);
  r.dq_tol.assign(q.size(), 0.0);
  r.dk.assign(k.size(), 0.0);
  r.dk_tol.assign(k.size(), 0.0);
  r.dv.assign(k.size(), 0.0);
  r.dv_tol.assign(k.size(), 0.0);
  std::vector<double> mag_dq(q.size(), 0.0), mag_dk(k.size(), 0.0);  // fp32-term magnitudes
  std::vector<double> s(T), p(T), a(D);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t i = 0; i < T; ++i) {
        const int64_t g = h / group, qi = ((b * T + i) * c.Hq + h) * D;
        auto kj = [&](int64_t j) { return ((b * T + j) * c.Hkv + g) * D; };
        double m = kNegInf;
        for (int64_t j = 0; j < T; ++j) {
          if (!visible(c, b, i, j)) continue;
          double dot = 0.0;
          for (int64_t d = 0; d < D; ++d) dot += q[qi + d] * k[kj(j) + d];
          s[j] = dot * scale;
          m = std::max(m, s[j]);
        }
        if (m == kNegInf) continue;  // no visible key: out 0, no gradient
        double sum = 0.0;
        for (int64_t j = 0; j < T; ++j)
          if (visible(c, b, i, j)) sum += std::exp(s[j] - m);
        r.lse[(b * c.Hq + h) * T + i] = m + std::log(sum);
        std::fill(a.begin(), a.end(), 0.0);
        for (int64_t j = 0; j < T; ++j) {
          p[j] = visible(c, b, i, j) ? std::exp(s[j] - m) / sum : 0.0;
          for (int64_t d = 0; d < D; ++d) {
            r.out[qi + d] += p[j] * v[kj(j) + d];
            a[d] += p[j] * std::abs(v[kj(j) + d]);
          }
        }
        double di = 0.0, delta = 0.0;  // D_i and its error bound from the bf16 out
        for (int64_t d = 0; d < D; ++d) {
          const double o = r.out[qi + d];
          r.out_tol[qi + d] = kU * (1 + 2 * kU) * (std::abs(o) + a[d]) + kFp32Slack * a[d];
          di += dout[qi + d] * o;
          delta += std::abs(dout[qi + d]) * r.out_tol[qi + d];
        }
        for (int64_t j = 0; j < T; ++j) {
          if (!visible(c, b, i, j)) continue;
          double dp = 0.0, dp_mag = 0.0;
          for (int64_t d = 0; d < D; ++d) {
            dp += dout[qi + d] * v[kj(j) + d];
            dp_mag += std::abs(dout[qi + d] * v[kj(j) + d]);
          }
          const double ds = p[j] * (dp - di);
          const double err = scale * (kU * std::abs(ds) + p[j] * delta);
          const double mag = scale * p[j] * (dp_mag + std::abs(di));
          for (int64_t d = 0; d < D; ++d) {
            r.dv[kj(j) + d] += p[j] * dout[qi + d];
            r.dv_tol[kj(j) + d] += (kU * (1 + 2 * kU) + kFp32Slack) * p[j] * std::abs(dout[qi + d]);
            r.dq[qi + d] += scale * ds * k[kj(j) + d];
            r.dq_tol[qi + d] += err * std::abs(k[kj(j) + d]);
            mag_dq[qi + d] += mag * std::abs(k[kj(j) + d]);
            r.dk[kj(j) + d] += scale * ds * q[qi + d];
            r.dk_tol[kj(j) + d] += err * std::abs(q[qi + d]);
            mag_dk[kj(j) + d] += mag * std::abs(q[qi + d]);
          }
        }
      }
  for (size_t e = 0; e < q.size(); ++e)
    r.dq_tol[e] = (1 + 2 * kU) * r.dq_tol[e] + kFp32Slack * mag_dq[e];
  for (size_t e = 0; e < k.size(); ++e)
    r.dk_tol[e] = (1 + 2 * kU) * r.dk_tol[e] + kFp32Slack * mag_dk[e];
  return r;
}

Reference reference(const Case& c, const Inputs& in) {
  return reference(c, widen(in.q), widen(in.k), widen(in.v), widen(in.dout));
}

// The kernels' results on a case: bf16 forward, then the backward on its out and lse, onto
// random initial gradients g0.
struct Results {
  std::vector<uint16_t> out;
  std::vector<float> lse, dq0, dk0, dv0, dq, dk, dv;
};

Results run_kernels(const Case& c, const Inputs& in, uint32_t seed) {
  Results res;
  const AttentionMask mask = mask_of(c);
  const float scale = scale_of(c);
  res.out.assign(in.q.size(), float_to_bf16(7.0f));
  res.lse.assign(c.B * c.Hq * c.T, 7.0f);
  attention_forward(res.out.data(), res.lse.data(), in.q.data(), in.k.data(), in.v.data(), c.B, c.T,
                    c.Hq, c.Hkv, c.D, scale, mask);
  std::mt19937 gen(seed + 1000);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  res.dq0.resize(in.q.size());
  res.dk0.resize(in.k.size());
  res.dv0.resize(in.v.size());
  for (auto* g : {&res.dq0, &res.dk0, &res.dv0})
    for (auto& x : *g) x = u(gen);
  res.dq = res.dq0;
  res.dk = res.dk0;
  res.dv = res.dv0;
  attention_backward(res.dq.data(), res.dk.data(), res.dv.data(), in.dout.data(), res.out.data(),
                     res.lse.data(), in.q.data(), in.k.data(), in.v.data(), c.B, c.T, c.Hq, c.Hkv,
                     c.D, scale, mask);
  return res;
}

// max |got - ref| / tol over the elements, checking each; exact where tol is 0.
struct Observed {
  double worst = 0.0;    // max |err| / bound
  double rms_rel = 0.0;  // ||err||_2 / ||ref||_2
};

template <class Got>
Observed check_bound(const Got& got, const std::vector<float>* init, const std::vector<double>& ref,
                     const std::vector<double>& tol, const char* what) {
  Observed o;
  double err2 = 0.0, ref2 = 0.0;
  for (size_t e = 0; e < ref.size(); ++e) {
    const double g0 = init ? (*init)[e] : 0.0;
    const double g = got(e);
    if (tol[e] == 0.0) {  // no visible pair: untouched (gradients) or exactly 0 (out)
      EXPECT_EQ(g, g0) << what << "[" << e << "] is reached by no visible pair";
      if (g != g0) return o;
      continue;
    }
    const double err = std::abs((g - g0) - ref[e]);
    const double bound = tol[e] + (init ? 0x1p-23 * (std::abs(g0) + std::abs(g)) : 0.0);
    EXPECT_LE(err, bound) << what << "[" << e << "]: got " << g - g0 << ", reference " << ref[e];
    if (err > bound) return o;
    o.worst = std::max(o.worst, err / bound);
    err2 += err * err;
    ref2 += ref[e] * ref[e];
  }
  o.rms_rel = ref2 > 0 ? std::sqrt(err2 / ref2) : 0.0;
  return o;
}

void check_case(const Case& c, uint32_t seed = 1) {
  SCOPED_TRACE(c.name);
  const Inputs in = make_inputs(c, seed);
  const Reference ref = reference(c, in);
  const Results res = run_kernels(c, in, seed);
  const Observed out = check_bound([&](size_t e) { return double(bf16_to_float(res.out[e])); },
                                   nullptr, ref.out, ref.out_tol, "out");
  for (size_t e = 0; e < ref.lse.size(); ++e) {
    if (ref.lse[e] == kNegInf) {
      EXPECT_TRUE(std::isinf(res.lse[e]) && res.lse[e] < 0) << "lse[" << e << "]";
    } else {
      // fp32 only: scores of exact bf16 products, softmax sum in fp32.
      EXPECT_NEAR(res.lse[e], ref.lse[e], 1e-5 * std::max(1.0, std::abs(ref.lse[e])))
          << "lse[" << e << "]";
    }
  }
  const Observed dq =
      check_bound([&](size_t e) { return double(res.dq[e]); }, &res.dq0, ref.dq, ref.dq_tol, "dq");
  const Observed dk =
      check_bound([&](size_t e) { return double(res.dk[e]); }, &res.dk0, ref.dk, ref.dk_tol, "dk");
  const Observed dv =
      check_bound([&](size_t e) { return double(res.dv[e]); }, &res.dv0, ref.dv, ref.dv_tol, "dv");
  std::printf(
      "%-34s err/bound max: out %.2f dq %.2f dk %.2f dv %.2f; rms rel err: out %.1e dq %.1e "
      "dk %.1e dv %.1e\n",
      c.name, out.worst, dq.worst, dk.worst, dv.worst, out.rms_rel, dq.rms_rel, dk.rms_rel,
      dv.rms_rel);
}

Case shape(const char* name, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D) {
  Case c;
  c.name = name;
  c.B = B, c.T = T, c.Hq = Hq, c.Hkv = Hkv, c.D = D;
  return c;
}

Case with_window(Case c, int64_t window) {
  c.window = window;
  return c;
}

// Row 0 right-padded from 3T/4, row 1 left-padded (its first T/3 queries see no key), row 2
// entirely padding, further rows unpadded.
std::vector<int32_t> padding(int64_t B, int64_t T) {
  std::vector<int32_t> valid(B * T, 1);
  for (int64_t t = 0; t < T; ++t) {
    if (t >= 3 * T / 4) valid[t] = 0;
    if (B > 1 && t < T / 3) valid[T + t] = 0;
    if (B > 2) valid[2 * T + t] = 0;
  }
  return valid;
}

// Packing: segments of irregular lengths (a repeated id on row 1, non-contiguous).
std::vector<int32_t> segments(int64_t B, int64_t T) {
  std::vector<int32_t> seg(B * T);
  for (int64_t t = 0; t < T; ++t) {
    seg[t] = t < T / 5 ? 0 : t < T / 2 ? 1 : t < T - 3 ? 2 : 3;
    if (B > 1) seg[T + t] = t < 7 ? 5 : t < T / 3 ? 2 : t < 2 * T / 3 ? 5 : 9;
  }
  return seg;
}

// A reference self-check: its analytic gradients against central differences of its forward
// (L = sum(dout * out), in double), so that the bounds are measured against the right values.
TEST(AttentionBf16, ReferenceGradientsMatchFiniteDifferences) {
  Case c = with_window(shape("reference", 3, 9, 4, 2, 8), 5);
  c.key_valid = padding(c.B, c.T);
  const Inputs in = make_inputs(c, 3);
  std::vector<double> x[3] = {widen(in.q), widen(in.k), widen(in.v)};
  const auto dout = widen(in.dout);
  const Reference ref = reference(c, x[0], x[1], x[2], dout);
  auto loss = [&] {
    const Reference r = reference(c, x[0], x[1], x[2], dout);
    double l = 0.0;
    for (size_t e = 0; e < r.out.size(); ++e) l += dout[e] * r.out[e];
    return l;
  };
  const std::vector<double>* grads[3] = {&ref.dq, &ref.dk, &ref.dv};
  for (int which = 0; which < 3; ++which) {
    for (size_t e = 0; e < x[which].size(); ++e) {
      // Central differences in double: truncation and rounding errors ~1e-10.
      const double x0 = x[which][e], step = 1e-5;
      x[which][e] = x0 + step;
      const double lp = loss();
      x[which][e] = x0 - step;
      const double lm = loss();
      x[which][e] = x0;
      ASSERT_NEAR((*grads[which])[e], (lp - lm) / (2 * step), 1e-8) << which << " " << e;
    }
  }
}

TEST(AttentionBf16, HeadLayouts) {
  check_case(shape("MHA B=2 T=65 H=4 D=64", 2, 65, 4, 4, 64));
  check_case(shape("GQA B=2 T=130 Hq=6 Hkv=2 D=64", 2, 130, 6, 2, 64));
  check_case(shape("MQA B=2 T=63 Hq=4 Hkv=1 D=128", 2, 63, 4, 1, 128));
}

TEST(AttentionBf16, OddLengths) {
  for (int64_t T : {1, 5, 63, 65, 130}) {
    const std::string name = "odd T=" + std::to_string(T) + " GQA D=16";
    check_case(shape(name.c_str(), 2, T, 4, 2, 16));
  }
}

TEST(AttentionBf16, HeadDims) {
  for (int64_t D : {16, 64, 128}) {
    const std::string name = "D=" + std::to_string(D) + " T=65 GQA";
    check_case(shape(name.c_str(), 2, 65, 4, 2, D), 2);
  }
}

TEST(AttentionBf16, SlidingWindow) {
  check_case(with_window(shape("window 70 T=130 GQA", 2, 130, 4, 2, 64), 70));
  check_case(with_window(shape("window 1 (only itself)", 2, 9, 2, 1, 16), 1));
  check_case(with_window(shape("window = T", 1, 65, 2, 1, 16), 65));
}

TEST(AttentionBf16, KeyPaddingWithFullyPaddedRows) {
  Case c = shape("padding T=130 B=3 MQA", 3, 130, 4, 1, 64);
  c.key_valid = padding(c.B, c.T);
  check_case(c);
  c = with_window(shape("padding + window 3 T=10", 3, 10, 4, 2, 16), 3);
  c.key_valid = padding(c.B, c.T);
  check_case(c);
}

TEST(AttentionBf16, PackedSegments) {
  Case c = shape("segments T=130 B=2 GQA", 2, 130, 4, 2, 64);
  c.segment = segments(c.B, c.T);
  check_case(c);
  c.name = "segments + padding + window 40";
  c.key_valid = padding(c.B, c.T);
  c.window = 40;
  check_case(c);
}

// Past T = 2048 the kernel widens key ranges to blocks of T / 32 keys (rounded up to 64):
// 128 here, with packing and padding moving the ranges off the block edges.
TEST(AttentionBf16, LongRowsWiderKeyBlocks) {
  Case c = with_window(shape("T=2100 segments + padding", 1, 2100, 2, 1, 16), 1500);
  c.segment = segments(c.B, c.T);
  c.key_valid.assign(c.T, 1);
  for (int64_t t = 2000; t < c.T; ++t) c.key_valid[t] = 0;
  check_case(c);
}

TEST(AttentionBf16, CustomScale) {
  Case c = shape("scale 0.3", 2, 33, 2, 1, 16);
  c.scale = 0.3f;
  check_case(c);
  c = shape("scale 1, inputs in [-1, 1]", 1, 33, 2, 2, 16);
  c.scale = 1.0f;
  c.input_range = 1.0f;
  check_case(c);
}

// Against the fp32 kernel on the same bf16 values (widened): both are within their error bounds
// of the reference, so within the sum of them of each other; the fp32 kernel's own error is the
// fp32 slack (1e-4 of the magnitudes) already in the bounds, plus 1e-5 of the reference.
TEST(AttentionBf16, MatchesFp32KernelOnTheSameValues) {
  Case c = shape("vs fp32 GQA T=130 D=64 padded", 2, 130, 6, 2, 64);
  c.key_valid = padding(c.B, c.T);
  const Inputs in = make_inputs(c, 5);
  const Reference ref = reference(c, in);
  const Results res = run_kernels(c, in, 5);
  const auto q = widen_f32(in.q), k = widen_f32(in.k), v = widen_f32(in.v);
  const auto dout = widen_f32(in.dout);
  std::vector<float> out32(q.size()), lse32(res.lse.size());
  const AttentionMask mask = mask_of(c);
  attention_forward(out32.data(), lse32.data(), q.data(), k.data(), v.data(), c.B, c.T, c.Hq, c.Hkv,
                    c.D, scale_of(c), mask);
  std::vector<float> dq32(q.size(), 0.0f), dk32(k.size(), 0.0f), dv32(v.size(), 0.0f);
  attention_backward(dq32.data(), dk32.data(), dv32.data(), dout.data(), out32.data(), lse32.data(),
                     q.data(), k.data(), v.data(), c.B, c.T, c.Hq, c.Hkv, c.D, scale_of(c), mask);
  auto compare = [](auto got, const std::vector<float>* init, const std::vector<float>& fp32,
                    const std::vector<double>& ref, const std::vector<double>& tol,
                    const char* what) {
    double worst = 0.0;
    for (size_t e = 0; e < fp32.size(); ++e) {
      const double g = got(e) - (init ? (*init)[e] : 0.0);
      const double bound = 2 * tol[e] + 1e-5 * std::abs(ref[e]) +
                           (init ? 0x1p-23 * (std::abs(got(e)) + std::abs((*init)[e])) : 0.0);
      ASSERT_LE(std::abs(g - fp32[e]), bound) << what << "[" << e << "]: fp32 " << fp32[e];
      if (bound > 0) worst = std::max(worst, std::abs(g - fp32[e]) / bound);
    }
    std::printf("bf16 vs fp32 kernel, %s: max |diff| / bound %.2f\n", what, worst);
  };
  compare([&](size_t e) { return double(bf16_to_float(res.out[e])); }, nullptr, out32, ref.out,
          ref.out_tol, "out");
  compare([&](size_t e) { return double(res.dq[e]); }, &res.dq0, dq32, ref.dq, ref.dq_tol, "dq");
  compare([&](size_t e) { return double(res.dk[e]); }, &res.dk0, dk32, ref.dk, ref.dk_tol, "dk");
  compare([&](size_t e) { return double(res.dv[e]); }, &res.dv0, dv32, ref.dv, ref.dv_tol, "dv");
  for (size_t e = 0; e < lse32.size(); ++e) {
    if (std::isinf(lse32[e])) {
      EXPECT_EQ(res.lse[e], lse32[e]);
    } else {
      EXPECT_NEAR(res.lse[e], lse32[e], 2e-5 * std::max(1.0f, std::abs(lse32[e])));
    }
  }
}

// The task split does not depend on the thread count while B * Hkv >= threads (each (b, kv
// head) is one task; its dk/dv rows are summed in one fixed order), and every block product
// runs on one thread with a primitive made for one thread: results are bit-identical.
TEST(AttentionBf16, ThreadCountIndependent) {
  Case c = with_window(shape("threads GQA T=130", 2, 130, 6, 3, 64), 90);
  c.key_valid = padding(c.B, c.T);
  c.segment = segments(c.B, c.T);
  const Inputs in = make_inputs(c, 9);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const Results one = run_kernels(c, in, 9);
  for (int threads : {2, 3}) {
    omp_set_num_threads(threads);
    const Results many = run_kernels(c, in, 9);
    EXPECT_EQ(one.out, many.out) << threads << " threads";
    EXPECT_EQ(0, std::memcmp(one.lse.data(), many.lse.data(), one.lse.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(one.dq.data(), many.dq.data(), one.dq.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(one.dk.data(), many.dk.data(), one.dk.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(one.dv.data(), many.dv.data(), one.dv.size() * sizeof(float)));
  }
  omp_set_num_threads(saved);
}

// With fewer (b, kv head) pairs than threads the backward splits a kv head's work and sums the
// parts' dk/dv afterwards (a different summation order, as in fp32): still within the bounds.
TEST(AttentionBf16, SplitKvHeads) {
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    check_case(with_window(shape("MQA B=1 T=130 (split)", 1, 130, 4, 1, 64), 100));
  }
  omp_set_num_threads(saved);
}

// The op table runs the bf16 kernel for all-BF16 inputs (F32 lse and gradients), bit for bit,
// and still rejects dtype mixtures.
TEST(AttentionBf16, OpTableRunsTheBf16Kernel) {
  Case c = shape("op table", 2, 70, 4, 2, 16);
  c.key_valid = padding(c.B, c.T);
  const Inputs in = make_inputs(c, 11);
  const Results want = run_kernels(c, in, 11);
  auto bf16_tensor = [](const std::vector<uint16_t>& x, Shape shape) {
    Tensor t(std::move(shape), DType::kBF16);
    std::memcpy(t.data<uint16_t>(), x.data(), x.size() * sizeof(uint16_t));
    return t;
  };
  auto f32_tensor = [](const std::vector<float>& x, Shape shape) {
    Tensor t(std::move(shape), DType::kF32);
    std::memcpy(t.data<float>(), x.data(), x.size() * sizeof(float));
    return t;
  };
  const Shape qs{c.B, c.T, c.Hq, c.D}, ks{c.B, c.T, c.Hkv, c.D};
  const Tensor q = bf16_tensor(in.q, qs), k = bf16_tensor(in.k, ks), v = bf16_tensor(in.v, ks);
  const Tensor dout = bf16_tensor(in.dout, qs), valid = [&] {
    Tensor t({c.B, c.T}, DType::kI32);
    std::memcpy(t.data<int32_t>(), c.key_valid.data(), c.key_valid.size() * sizeof(int32_t));
    return t;
  }();
  const magix::AttentionMask mask{&valid, nullptr, 0};
  const Backend& ops = backend_for(Device::kCpu);
  Tensor out(qs, DType::kBF16), lse({c.B, c.Hq, c.T}, DType::kF32);
  ops.attention_forward(out, lse, q, k, v, scale_of(c), mask);
  EXPECT_EQ(0, std::memcmp(out.data<uint16_t>(), want.out.data(), out.nbytes()));
  EXPECT_EQ(0, std::memcmp(lse.data<float>(), want.lse.data(), lse.nbytes()));
  Tensor dq = f32_tensor(want.dq0, qs), dk = f32_tensor(want.dk0, ks),
         dv = f32_tensor(want.dv0, ks);
  ops.attention_backward(dq, dk, dv, dout, out, lse, q, k, v, scale_of(c), mask);
  EXPECT_EQ(0, std::memcmp(dq.data<float>(), want.dq.data(), dq.nbytes()));
  EXPECT_EQ(0, std::memcmp(dk.data<float>(), want.dk.data(), dk.nbytes()));
  EXPECT_EQ(0, std::memcmp(dv.data<float>(), want.dv.data(), dv.nbytes()));
  // Mixtures have no kernel: an F32 k beside BF16 q, BF16 gradients.
  const Tensor k32(ks, DType::kF32);
  EXPECT_THROW(ops.attention_forward(out, lse, q, k32, v, scale_of(c), mask), Error);
  Tensor dq16(qs, DType::kBF16);
  EXPECT_THROW(ops.attention_backward(dq16, dk, dv, dout, out, lse, q, k, v, scale_of(c), mask),
               Error);
}

TEST(AttentionBf16, RejectsBadHeads) {
  std::vector<uint16_t> x(3 * 2 * 4, 0);
  std::vector<float> lse(3 * 2, 0.0f);
  EXPECT_THROW(attention_forward(x.data(), lse.data(), x.data(), x.data(), x.data(), 1, 2, 3, 2, 4,
                                 0.5f, AttentionMask{}),
               Error);
}

// --- The other bf16 GEMM engines, in child processes (the engine is chosen once). ---

std::string self_path() {
  char buf[4096];
  const ssize_t len = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (len <= 0) return "";
  buf[len] = '\0';
  return buf;
}

// Runs this binary's AttentionBf16Child.<test> with `env`; checks that it ran and passed.
void run_child(const std::string& env, const std::string& test) {
  const std::string exe = self_path();
  ASSERT_FALSE(exe.empty());
  const std::string command =
      "env -u ONEDNN_MAX_CPU_ISA -u DNNL_MAX_CPU_ISA -u MAGIX_GEMM_BF16_ENGINE " + env +
      " MAGIX_TEST_CHILD=1 '" + exe + "' --gtest_filter=AttentionBf16Child." + test + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char line[1024];
  while (std::fgets(line, sizeof(line), pipe)) output += line;
  const int status = pclose(pipe);
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find("[       OK ] AttentionBf16Child." + test), std::string::npos) << output;
  EXPECT_EQ(output.find("[  SKIPPED ]"), std::string::npos) << output;
}

TEST(AttentionBf16Engine, WidenedToFp32) {
  run_child("MAGIX_GEMM_BF16_ENGINE=fp32 MAGIX_TEST_EXPECT=widened", "MatchesReference");
}

// Without AMX (oneDNN capped at AVX512-BF16) gemm_bf16 widens to the fp32 GEMM (docs/kernels.md).
TEST(AttentionBf16Engine, Avx512Bf16WithoutAmx) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512bf16")) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  run_child("ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 MAGIX_TEST_EXPECT=widened", "MatchesReference");
}

// oneDNN's AVX512-BF16 kernels, forced.
TEST(AttentionBf16Engine, OnednnAvx512Bf16Forced) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512bf16")) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  run_child(
      "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 MAGIX_GEMM_BF16_ENGINE=onednn "
      "MAGIX_TEST_EXPECT=avx512_core_bf16",
      "MatchesReference");
}

// A failing block product (oneDNN refuses bf16 capped at AVX2) inside the OpenMP region reaches
// the caller as magix::Error.
TEST(AttentionBf16Engine, EngineErrorReachesTheCaller) {
  run_child("ONEDNN_MAX_CPU_ISA=AVX2 MAGIX_GEMM_BF16_ENGINE=onednn", "EngineErrorThrows");
}

#define MAGIX_ONLY_IN_CHILD()                                                          \
  if (std::getenv("MAGIX_TEST_CHILD") == nullptr) {                                    \
    GTEST_SKIP() << "runs only in the child process started by AttentionBf16Engine.*"; \
  }

TEST(AttentionBf16Child, MatchesReference) {
  MAGIX_ONLY_IN_CHILD();
  const std::string name = gemm_bf16_engine_name();
  std::printf("bf16 gemm engine: %s\n", name.c_str());
  EXPECT_NE(name.find(std::getenv("MAGIX_TEST_EXPECT")), std::string::npos) << name;
  Case c = with_window(shape("child GQA T=130 padded window", 3, 130, 4, 2, 64), 70);
  c.key_valid = padding(c.B, c.T);
  check_case(c);
  c = shape("child MQA T=65 segments D=16", 2, 65, 4, 1, 16);
  c.segment = segments(c.B, c.T);
  check_case(c);
}

TEST(AttentionBf16Child, EngineErrorThrows) {
  MAGIX_ONLY_IN_CHILD();
  const Case c = shape("error", 2, 65, 4, 2, 16);
  const Inputs in = make_inputs(c, 1);
  std::vector<uint16_t> out(in.q.size());
  std::vector<float> lse(c.B * c.Hq * c.T);
  EXPECT_THROW(attention_forward(out.data(), lse.data(), in.q.data(), in.k.data(), in.v.data(), c.B,
                                 c.T, c.Hq, c.Hkv, c.D, scale_of(c), mask_of(c)),
               Error);
  std::vector<float> dq(in.q.size()), dk(in.k.size()), dv(in.v.size());
  EXPECT_THROW(attention_backward(dq.data(), dk.data(), dv.data(), in.dout.data(), out.data(),
                                  lse.data(), in.q.data(), in.k.data(), in.v.data(), c.B, c.T, c.Hq,
                                  c.Hkv, c.D, scale_of(c), mask_of(c)),
               Error);
}

}  // namespace
}  // namespace magix::cpu
