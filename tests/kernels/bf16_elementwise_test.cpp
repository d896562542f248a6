// The bf16 elementwise kernels of mixed precision against double references: vec::exp, the
// gated MLP activations with bf16 operands and the cross-entropy stages on bf16 logits. The
// references use the bf16 values the kernels read; outputs rounded to bf16 must be within half
// a bf16 ulp (2^-9 relative) of the exact result plus the fp32 arithmetic's error.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

#include "backends/cpu/cross_entropy.hpp"
#include "backends/cpu/glu.hpp"
#include "backends/cpu/vec_math.hpp"
#include "kernel_test_util.hpp"
#include "magix/dtype_convert.hpp"

namespace magix::cpu {
namespace {

using test::random_floats;

// Half an ulp of bf16 (8 significant bits) relative, plus room for the fp32 math before it.
constexpr double kBf16Rel = 0.5 * 0x1p-7 + 1e-5;

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

TEST(VecExp, WithinFourUlpOnItsRange) {
  double worst = 0;
  for (float x = -87.0f; x < 88.25f; x += 0.01337f) {
    float in[8], out[8];
    for (int k = 0; k < 8; ++k) in[k] = x + k * 1e-3f;
    vec::store(out, vec::exp(vec::load(in)));
    for (int k = 0; k < 8; ++k) {
      const double want = std::exp(static_cast<double>(in[k]));
      worst = std::max(worst, std::fabs(out[k] - want) / want);
    }
  }
  EXPECT_LE(worst, 4 * 0x1p-24) << "worst relative error " << worst;
  float in[8] = {-std::numeric_limits<float>::infinity(), -100.0f, 100.0f, 0.0f,
                 std::numeric_limits<float>::quiet_NaN(), -87.5f,  1.0f,   -1.0f};
  float out[8];
  vec::store(out, vec::exp(vec::load(in)));
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_TRUE(std::isfinite(out[2]) && out[2] > 1e38f);
  EXPECT_EQ(out[3], 1.0f);
  EXPECT_TRUE(std::isnan(out[4]));
}

TEST(VecBf16, StoreRoundsAsFloatToBf16) {
  const std::vector<float> x = random_floats(4096, 7, -1e4f, 1e4f);
  for (size_t i = 0; i + 8 <= x.size(); i += 8) {
    uint16_t got[8];
    vec::store_bf16(got, vec::load(&x[i]));
    for (int k = 0; k < 8; ++k) ASSERT_EQ(got[k], float_to_bf16(x[i + k])) << x[i + k];
  }
  const float special[8] = {std::numeric_limits<float>::quiet_NaN(),
                            -std::numeric_limits<float>::infinity(),
                            3.4e38f,
                            1e-40f,
                            -0.0f,
                            std::numeric_limits<float>::infinity(),
                            1.00390625f,
                            1.01171875f};
  uint16_t got[8];
  vec::store_bf16(got, vec::load(special));
  for (int k = 0; k < 8; ++k) EXPECT_EQ(got[k], float_to_bf16(special[k])) << k;
}

double act(double x, Activation a) {
  if (a == Activation::kSilu) return x / (1.0 + std::exp(-x));
  const double beta = std::sqrt(2.0 / std::numbers::pi);
  return 0.5 * x * (1.0 + std::tanh(beta * (x + 0.044715 * x * x * x)));
}

double act_grad(double x, Activation a) {
  const double h = 1e-6;
  return (act(x + h, a) - act(x - h, a)) / (2 * h);
}

TEST(GluBf16, ForwardAndBackwardWithinHalfAnUlp) {
  for (Activation a : {Activation::kSilu, Activation::kGeluTanh}) {
    for (int64_t n : {1, 7, 8, 9, 100, 70001}) {
      const auto gate = to_bf16(random_floats(n, 1, -6, 6)), up = to_bf16(random_floats(n, 2));
      const auto dout = random_floats(n, 3);
      std::vector<uint16_t> out(n), dgate(n, 0xffff), dup(n, 0xffff);  // garbage: written (=)
      glu_forward(out.data(), gate.data(), up.data(), n, a);
      glu_backward(dgate.data(), dup.data(), dout.data(), gate.data(), up.data(), n, a);
      for (int64_t i = 0; i < n; ++i) {
        const double g = bf16_to_float(gate[i]), u = bf16_to_float(up[i]);
        const double f = act(g, a) * u, dg = dout[i] * u * act_grad(g, a), du = dout[i] * act(g, a);
        ASSERT_NEAR(bf16_to_float(out[i]), f, kBf16Rel * std::fabs(f) + 1e-30) << i;
        ASSERT_NEAR(bf16_to_float(dgate[i]), dg, kBf16Rel * std::fabs(dg) + 1e-6) << i;
        ASSERT_NEAR(bf16_to_float(dup[i]), du, kBf16Rel * std::fabs(du) + 1e-30) << i;
      }
    }
  }
}

// bf16 logits over two vocab shards: the stages, the combined loss and the in-place gradient
// against a double softmax of the bf16 values.
TEST(CrossEntropyBf16, StagesLossAndGradient) {
  const int64_t N = 5, V = 1003, split = 517;
  const auto logits = to_bf16(random_floats(N * V, 11, -8, 8));
  const int32_t targets[N] = {3, 600, -1, 1002, 516};
  const float dloss[N] = {0.5f, 1.0f, 1.0f, 0.25f, 2.0f};
  float mx[2][N], se[2][N], tl[2][N];
  const int64_t v0[2] = {0, split}, width[2] = {split, V - split};
  std::vector<std::vector<uint16_t>> shard(2);
  for (int s = 0; s < 2; ++s) {
    for (int64_t n = 0; n < N; ++n) {
      shard[s].insert(shard[s].end(), logits.begin() + n * V + v0[s],
                      logits.begin() + n * V + v0[s] + width[s]);
    }
    cross_entropy_max(mx[s], shard[s].data(), N, width[s]);
  }
  float gmax[N], gsum[N], gtl[N], loss[N];
  for (int64_t n = 0; n < N; ++n) gmax[n] = std::max(mx[0][n], mx[1][n]);
  for (int s = 0; s < 2; ++s) {
    cross_entropy_sumexp(se[s], tl[s], shard[s].data(), gmax, targets, v0[s], N, width[s]);
  }
  for (int64_t n = 0; n < N; ++n) {
    gsum[n] = se[0][n] + se[1][n];
    gtl[n] = tl[0][n] + tl[1][n];
  }
  cross_entropy_loss(loss, gmax, gsum, gtl, targets, N);
  for (int64_t n = 0; n < N; ++n) {
    double m = -1e300, z = 0;
    for (int64_t v = 0; v < V; ++v) m = std::max(m, double(bf16_to_float(logits[n * V + v])));
    for (int64_t v = 0; v < V; ++v) z += std::exp(bf16_to_float(logits[n * V + v]) - m);
    const double lse = m + std::log(z);
    const double want = targets[n] < 0 ? 0.0 : lse - bf16_to_float(logits[n * V + targets[n]]);
    EXPECT_NEAR(loss[n], want, 1e-5 * std::max(1.0, std::fabs(want))) << n;
    for (int s = 0; s < 2; ++s) {  // in place, per shard
      std::vector<uint16_t> d = shard[s];
      cross_entropy_backward(d.data(), d.data(), gmax, gsum, targets, dloss, v0[s], N, width[s]);
      for (int64_t v = 0; v < width[s]; ++v) {
        const int64_t gv = v0[s] + v;
        double g = 0;
        if (targets[n] >= 0) {
          g = dloss[n] * (std::exp(bf16_to_float(logits[n * V + gv]) - lse) - (gv == targets[n]));
        }
        ASSERT_NEAR(bf16_to_float(d[n * width[s] + v]), g, kBf16Rel * std::fabs(g) + 1e-7)
            << n << " " << gv;
      }
    }
  }
}

}  // namespace
}  // namespace magix::cpu
