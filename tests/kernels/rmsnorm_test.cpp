// RMSNorm (Llama offset 0, Gemma offset 1) against a double reference and finite differences.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>

#include "backends/cpu/rmsnorm.hpp"
#include "kernel_test_util.hpp"

namespace magix::cpu {
namespace {

using test::random_floats;

// out (N, C) = x / sqrt(mean(x^2) + eps) * (weight + offset), in double.
std::vector<double> rmsnorm_ref(const std::vector<double>& x, const std::vector<double>& weight,
                                int64_t N, int64_t C, double eps, double offset) {
  std::vector<double> out(N * C);
  for (int64_t n = 0; n < N; n++) {
    double ss = 0.0;
    for (int64_t c = 0; c < C; c++) ss += x[n * C + c] * x[n * C + c];
    const double r = 1.0 / std::sqrt(ss / C + eps);
    for (int64_t c = 0; c < C; c++) out[n * C + c] = x[n * C + c] * r * (weight[c] + offset);
  }
  return out;
}

class RmsnormTest : public ::testing::TestWithParam<float> {};

TEST_P(RmsnormTest, ForwardMatchesReference) {
  const float offset = GetParam();
  const int64_t N = 67, C = 130;
  const float eps = 1e-6f;
  auto x = random_floats(N * C, 1, -3.0f, 3.0f), w = random_floats(C, 2);
  std::vector<float> out(N * C), rstd(N);
  rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps, offset);
  // A few float roundings per element of relative size eps: 8 eps relative to |x r| |w + offset|
  // (bounded here by 3 * 2 / rms), written as an absolute tolerance.
  const auto ref = rmsnorm_ref(test::to_double(x), test::to_double(w), N, C, eps, offset);
  test::expect_close(out, ref, 8 * FLT_EPSILON, 1e-6, "out");
  for (int64_t n = 0; n < N; n++) {
    double ss = 0.0;
    for (int64_t c = 0; c < C; c++) ss += static_cast<double>(x[n * C + c]) * x[n * C + c];
    EXPECT_NEAR(rstd[n], 1.0 / std::sqrt(ss / C + eps), 4 * FLT_EPSILON * rstd[n]);
  }
}

TEST_P(RmsnormTest, BackwardMatchesFiniteDifferences) {
  const float offset = GetParam();
  const int64_t N = 4, C = 70;  // C > 64: two column blocks for dweight
  const float eps = 1e-5f;
  auto x = random_floats(N * C, 3), w = random_floats(C, 4), dout = random_floats(N * C, 5);
  std::vector<float> out(N * C), rstd(N);
  rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps, offset);
  auto dx = random_floats(N * C, 6), dw = random_floats(C, 7);
  const auto dx0 = dx, dw0 = dw;
  rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C,
                   offset);

  const auto g = test::to_double(dout);
  const auto xd = test::to_double(x), wd = test::to_double(w);
  auto gx = test::numeric_grad(
      [&](const std::vector<double>& v) {
        return test::dot(g, rmsnorm_ref(v, wd, N, C, eps, offset));
      },
      xd);
  auto gw = test::numeric_grad(
      [&](const std::vector<double>& v) {
        return test::dot(g, rmsnorm_ref(xd, v, N, C, eps, offset));
      },
      wd);
  for (size_t i = 0; i < gx.size(); i++) gx[i] += dx0[i];
  for (size_t i = 0; i < gw.size(); i++) gw[i] += dw0[i];
  // rstd ~ sqrt(3) here; each gradient is a short float expression plus a double dot product,
  // so errors are a few ulp of values of size <= ~10.
  test::expect_close(dx, gx, 1e-5, 1e-5, "dinp");
  test::expect_close(dw, gw, 1e-5, 1e-5, "dweight");

  auto dx_only = dx0;
  rmsnorm_backward(dx_only.data(), nullptr, dout.data(), x.data(), w.data(), rstd.data(), N, C,
                   offset);
  test::expect_close(dx_only, gx, 1e-5, 1e-5, "dinp without dweight");
}

INSTANTIATE_TEST_SUITE_P(Offsets, RmsnormTest, ::testing::Values(0.0f, 1.0f));

TEST(Rmsnorm, EpsIsInsideTheSqrt) {
  // A zero row: out = 0, rstd = 1 / sqrt(eps).
  const float x[4] = {0, 0, 0, 0}, w[4] = {1, 2, 3, 4};
  float out[4], rstd[1];
  rmsnorm_forward(out, rstd, x, w, 1, 4, 1e-4f, 0.0f);
  EXPECT_FLOAT_EQ(rstd[0], 100.0f);
  for (float o : out) EXPECT_EQ(o, 0.0f);
  // x = (2, 2): mean 4, r = 1 / sqrt(4 + eps).
  const float y[2] = {2, 2}, v[2] = {0.5f, -1};
  rmsnorm_forward(out, rstd, y, v, 1, 2, 0.25f, 1.0f);
  const float r = 1.0f / std::sqrt(4.25f);
  EXPECT_EQ(rstd[0], r);
  EXPECT_EQ(out[0], (2.0f * r) * 1.5f);
  EXPECT_EQ(out[1], 0.0f);
}

}  // namespace
}  // namespace magix::cpu
