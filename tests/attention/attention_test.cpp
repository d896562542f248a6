// attention_forward / attention_backward against a naive double-precision reference (explicit
// mask, plain softmax) and against central finite differences of that reference.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "backends/cpu/attention.hpp"
#include "magix/error.hpp"

namespace magix::cpu {
namespace {

struct Case {
  int64_t B = 1, T = 1, Hq = 1, Hkv = 1, D = 1;
  float scale = 0.0f;  // 0: 1/sqrt(D)
  int64_t window = 0;
  std::vector<int32_t> key_valid;  // (B, T) or empty
  std::vector<int32_t> segment;    // (B, T) or empty
  float input_range = 2.0f;        // q, k, v uniform in [-range, range]
  int64_t fd_stride = 1;           // finite differences on every fd_stride-th element
};

float scale_of(const Case& c) {
  return c.scale != 0.0f ? c.scale : 1.0f / std::sqrt(static_cast<float>(c.D));
}

// The rule written out plainly: causal, window (i - j < W), key padding, same segment.
bool ref_visible(const Case& c, int64_t b, int64_t i, int64_t j) {
  if (j > i) return false;
  if (c.window > 0 && i - j >= c.window) return false;
  if (!c.key_valid.empty() && c.key_valid[b * c.T + j] == 0) return false;
  if (!c.segment.empty() && c.segment[b * c.T + i] != c.segment[b * c.T + j]) return false;
  return true;
}

struct Inputs {
  std::vector<float> q, k, v, w;  // w: weights of the linear functional L = sum(w * out)
};

Inputs make_inputs(const Case& c, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-c.input_range, c.input_range), uw(-1.0f, 1.0f);
  Inputs in;
  in.q.resize(c.B * c.T * c.Hq * c.D);
  in.k.resize(c.B * c.T * c.Hkv * c.D);
  in.v.resize(in.k.size());
  in.w.resize(in.q.size());
  for (auto& x : in.q) x = u(gen);
  for (auto& x : in.k) x = u(gen);
  for (auto& x : in.v) x = u(gen);
  for (auto& x : in.w) x = uw(gen);
  return in;
}

// Reference for one query row (b, i, h) in double: out row (D) and lse; false if no key visible.
struct RefRow {
  std::vector<double> out;
  double lse;
  bool any;
};

RefRow ref_row(const Case& c, const std::vector<double>& q, const std::vector<double>& k,
               const std::vector<double>& v, int64_t b, int64_t i, int64_t h) {
  const int64_t g = h / (c.Hq / c.Hkv), D = c.D;
  const double scale = scale_of(c);
  RefRow r{std::vector<double>(D, 0.0), -std::numeric_limits<double>::infinity(), false};
  std::vector<double> s(c.T, 0.0);
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < c.T; ++j) {
    if (!ref_visible(c, b, i, j)) continue;
    double dot = 0.0;
    for (int64_t d = 0; d < D; ++d)
      dot += q[((b * c.T + i) * c.Hq + h) * D + d] * k[((b * c.T + j) * c.Hkv + g) * D + d];
    s[j] = dot * scale;
    m = std::max(m, s[j]);
    r.any = true;
  }
  if (!r.any) return r;
  double sum = 0.0;
  for (int64_t j = 0; j < c.T; ++j)
    if (ref_visible(c, b, i, j)) sum += std::exp(s[j] - m);
  for (int64_t j = 0; j < c.T; ++j) {
    if (!ref_visible(c, b, i, j)) continue;
    const double p = std::exp(s[j] - m) / sum;
    for (int64_t d = 0; d < D; ++d) r.out[d] += p * v[((b * c.T + j) * c.Hkv + g) * D + d];
  }
  r.lse = m + std::log(sum);
  return r;
}

// sum_d w[b, i, h, d] * out[b, i, h, d] from the reference.
double ref_row_loss(const Case& c, const std::vector<double>& q, const std::vector<double>& k,
                    const std::vector<double>& v, const std::vector<float>& w, int64_t b, int64_t i,
                    int64_t h) {
  const RefRow r = ref_row(c, q, k, v, b, i, h);
  double l = 0.0;
  for (int64_t d = 0; d < c.D; ++d) l += w[((b * c.T + i) * c.Hq + h) * c.D + d] * r.out[d];
  return l;
}

std::vector<double> to_double(const std::vector<float>& x) {
  return {x.begin(), x.end()};
}

double max_abs(const std::vector<double>& x) {
  double m = 0.0;
  for (double e : x) m = std::max(m, std::abs(e));
  return m;
}

AttentionMask mask_of(const Case& c) {
  AttentionMask m;
  m.key_valid = c.key_valid.empty() ? nullptr : c.key_valid.data();
  m.segment = c.segment.empty() ? nullptr : c.segment.data();
  m.sliding_window = c.window;
  return m;
}

// Forward against the reference: out and lse (|err| <= 1e-5 * max(1, max|ref|): float
// rounding of D-term dot products and a T-term softmax sum, inputs of order 1).
void check_forward(const Case& c, const Inputs& in, const std::vector<float>& out,
                   const std::vector<float>& lse) {
  const auto q = to_double(in.q), k = to_double(in.k), v = to_double(in.v);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t i = 0; i < c.T; ++i) {
        const RefRow r = ref_row(c, q, k, v, b, i, h);
        const float l = lse[(b * c.Hq + h) * c.T + i];
        if (!r.any) {
          EXPECT_TRUE(std::isinf(l) && l < 0) << "b=" << b << " h=" << h << " i=" << i;
        } else {
          EXPECT_NEAR(l, r.lse, 1e-5 * std::max(1.0, std::abs(r.lse)))
              << "b=" << b << " h=" << h << " i=" << i;
        }
        for (int64_t d = 0; d < c.D; ++d) {
          const float o = out[((b * c.T + i) * c.Hq + h) * c.D + d];
          ASSERT_NEAR(o, r.out[d], 1e-5 * std::max(1.0, max_abs(r.out)))
              << "b=" << b << " h=" << h << " i=" << i << " d=" << d;
          if (!r.any) {
            EXPECT_EQ(o, 0.0f);
          }
        }
      }
}

// Central differences (step 1e-5 in double: truncation and rounding both ~1e-10) of
// L = sum(w * out) with respect to one input tensor. which: 0 = q, 1 = k, 2 = v.
// Only the rows an element can influence are recomputed.
std::vector<double> fd_gradient(const Case& c, const Inputs& in, int which) {
  auto q = to_double(in.q), k = to_double(in.k), v = to_double(in.v);
  std::vector<double>& x = which == 0 ? q : which == 1 ? k : v;
  const int64_t H = which == 0 ? c.Hq : c.Hkv, group = c.Hq / c.Hkv;
  std::vector<double> grad(x.size(), 0.0);
  const double eps = 1e-5;
  for (int64_t e = 0; e < static_cast<int64_t>(x.size()); e += c.fd_stride) {
    const int64_t head = (e / c.D) % H, t = (e / (c.D * H)) % c.T, b = e / (c.D * H * c.T);
    auto loss = [&]() {
      if (which == 0) return ref_row_loss(c, q, k, v, in.w, b, t, head);
      double l = 0.0;
      for (int64_t h = head * group; h < (head + 1) * group; ++h)
        for (int64_t i = t; i < c.T; ++i) l += ref_row_loss(c, q, k, v, in.w, b, i, h);
      return l;
    };
    const double x0 = x[e];
    x[e] = x0 + eps;
    const double lp = loss();
    x[e] = x0 - eps;
    const double lm = loss();
    x[e] = x0;
    grad[e] = (lp - lm) / (2 * eps);
  }
  return grad;
}

// Runs the kernels on a case and checks forward, backward (accumulating onto random initial
// gradients) and that every output is finite.
void check_case(const Case& c, uint32_t seed = 1) {
  const Inputs in = make_inputs(c, seed);
  const AttentionMask mask = mask_of(c);
  const float scale = scale_of(c);
  std::vector<float> out(in.q.size(), 7.0f), lse(c.B * c.Hq * c.T, 7.0f);
  attention_forward(out.data(), lse.data(), in.q.data(), in.k.data(), in.v.data(), c.B, c.T, c.Hq,
                    c.Hkv, c.D, scale, mask);
  check_forward(c, in, out, lse);
  for (float o : out) ASSERT_TRUE(std::isfinite(o));

  // Start the gradients from known values to check that the backward adds (+=).
  std::mt19937 gen(seed + 1000);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> dq0(in.q.size()), dk0(in.k.size()), dv0(in.v.size());
  for (auto* g : {&dq0, &dk0, &dv0})
    for (auto& x : *g) x = u(gen);
  std::vector<float> dq = dq0, dk = dk0, dv = dv0;
  attention_backward(dq.data(), dk.data(), dv.data(), in.w.data(), out.data(), lse.data(),
                     in.q.data(), in.k.data(), in.v.data(), c.B, c.T, c.Hq, c.Hkv, c.D, scale,
                     mask);
  const std::vector<float>* got[3] = {&dq, &dk, &dv};
  const std::vector<float>* init[3] = {&dq0, &dk0, &dv0};
  const char* names[3] = {"dq", "dk", "dv"};
  for (int which = 0; which < 3; ++which) {
    const std::vector<double> ref = fd_gradient(c, in, which);
    // Float gradients are sums of O(T) products of order max|g|; 1e-5 * max|g| is ~100 float
    // epsilons of headroom over that, far below any real mistake (a wrong mask term or a wrong
    // factor moves an element by O(max|g| / T) or more).
    const double tol = 1e-5 * std::max(1.0, max_abs(ref));
    for (int64_t e = 0; e < static_cast<int64_t>(ref.size()); ++e) {
      const float g = (*got[which])[e];
      ASSERT_TRUE(std::isfinite(g)) << names[which] << "[" << e << "]";
      if (e % c.fd_stride != 0) continue;
      ASSERT_NEAR(g - (*init[which])[e], ref[e], tol) << names[which] << "[" << e << "]";
    }
  }
}

Case shape(int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D) {
  Case c;
  c.B = B, c.T = T, c.Hq = Hq, c.Hkv = Hkv, c.D = D;
  return c;
}

Case with_window(Case c, int64_t window) {
  c.window = window;
  return c;
}

TEST(Attention, MultiHead) {
  check_case(shape(2, 13, 3, 3, 8));
}

TEST(Attention, GroupedQuery) {
  check_case(shape(2, 13, 4, 2, 8));
}

TEST(Attention, MultiQuery) {
  check_case(shape(2, 11, 4, 1, 8));
}

TEST(Attention, SlidingWindow) {
  check_case(with_window(shape(2, 13, 4, 2, 8), 4));
  check_case(with_window(shape(1, 9, 2, 1, 4), 1));  // only itself
  check_case(with_window(shape(1, 9, 2, 1, 4), 9));  // as long as T
}

TEST(Attention, KeyPadding) {
  // Row 0 right-padded, row 1 left-padded (its queries 0..2 see no key), row 2 unpadded.
  Case c = shape(3, 10, 4, 2, 8);
  c.key_valid = {1, 1, 1, 1, 1, 1, 0, 0, 0, 0,  //
                 0, 0, 0, 1, 1, 1, 1, 1, 1, 1,  //
                 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  check_case(c);
  c.window = 3;  // with a window, query 9 of row 0 sees keys 7..9, all padding
  check_case(c);
}

TEST(Attention, PackedSegments) {
  Case c = shape(2, 14, 4, 2, 8);
  c.segment = {0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 3, 4, 4, 4,   //
               7, 7, 3, 3, 3, 7, 7, 7, 9, 9, 9, 9, 9, 9};  // ids may repeat non-contiguously
  check_case(c);
  // Packed rows padded at the end, with a window.
  c.key_valid = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0,  //
                 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  c.window = 3;
  check_case(c);
}

TEST(Attention, OddSizes) {
  check_case(shape(1, 1, 2, 1, 3));
  Case c = shape(1, 37, 4, 2, 24);
  c.fd_stride = 3;
  check_case(c);
  check_case(shape(3, 2, 1, 1, 1));
}

TEST(Attention, CustomScale) {
  Case c = shape(2, 9, 2, 1, 16);
  c.scale = 0.3f;
  check_case(c);
  c = shape(1, 9, 2, 2, 16);
  c.scale = 1.0f;
  c.input_range = 1.0f;
  check_case(c);
}

// T spans several query blocks of the kernel; every mask at once.
TEST(Attention, LongRowsAllMasks) {
  Case c = with_window(shape(2, 150, 4, 2, 8), 70);
  c.fd_stride = 7;
  c.key_valid.assign(c.B * c.T, 1);
  c.segment.assign(c.B * c.T, 0);
  for (int64_t t = 0; t < 5; ++t) c.key_valid[c.T + t] = 0;  // row 1 left-padded
  for (int64_t t = 140; t < 150; ++t) c.key_valid[t] = 0;    // row 0 right-padded
  for (int64_t t = 0; t < c.T; ++t) c.segment[t] = t < 40 ? 0 : t < 131 ? 1 : 2;
  check_case(c);
}

TEST(Attention, LongRowsNoMask) {
  Case c = shape(1, 200, 2, 1, 16);
  c.fd_stride = 11;
  check_case(c);
}

// Fewer (b, kv head) pairs than threads: the backward splits a kv head's work across threads
// and sums their dk/dv afterwards. Also run with one thread (no split) and an odd count.
TEST(Attention, ThreadCounts) {
  const int saved = omp_get_max_threads();
  for (int threads : {1, 3, 4}) {
    omp_set_num_threads(threads);
    Case c = with_window(shape(1, 100, 4, 1, 8), 80);
    c.fd_stride = 7;
    check_case(c);
    check_case(shape(2, 37, 2, 1, 8));
  }
  omp_set_num_threads(saved);
}

TEST(Attention, RejectsBadHeads) {
  std::vector<float> x(3 * 2 * 4, 0.0f), lse(3 * 2, 0.0f);
  EXPECT_THROW(attention_forward(x.data(), lse.data(), x.data(), x.data(), x.data(), 1, 2, 3, 2, 4,
                                 0.5f, AttentionMask{}),
               Error);
}

}  // namespace
}  // namespace magix::cpu
