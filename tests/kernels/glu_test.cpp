// GLU activations (SiLU, tanh-GELU) against double references, values from torch, and finite
// differences.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <iterator>
#include <numbers>

#include "backends/cpu/glu.hpp"
#include "kernel_test_util.hpp"

namespace magix::cpu {
namespace {

using test::random_floats;

// torch 2.15 (/work/refenv): transformers' ACT2FN["silu"] and ACT2FN["gelu_pytorch_tanh"] at
// kActX, printed by the script kernel_reference_dump.py quoted at the bottom of rope_test.cpp.

constexpr float kActX[] = {-8.0f, -3.5f, -1.0f, -0.25f, 0.0f, 0.300000012f, 1.0f, 2.5f, 6.0f};

constexpr float kSilu[] = {-0.0026828011f, -0.102592811f, -0.268941432f, -0.109455876f, 0.0f,
                           0.172332764f,   0.731058598f,  2.31035447f,   5.98516464f};

constexpr float kGeluTanh[] = {-0.0f,        -0.000616148114f, -0.158807993f, -0.100324646f, 0.0f,
                               0.185370937f, 0.841192007f,     2.48491573f,   6.0f};

double act_ref(double x, Activation act) {
  if (act == Activation::kSilu) return x / (1.0 + std::exp(-x));
  const double beta = std::sqrt(2.0 / std::numbers::pi);
  return 0.5 * x * (1.0 + std::tanh(beta * (x + 0.044715 * x * x * x)));
}

// out (n) = act(gate) * up, in double.
std::vector<double> glu_ref(const std::vector<double>& gate, const std::vector<double>& up,
                            Activation act) {
  std::vector<double> out(gate.size());
  for (size_t i = 0; i < gate.size(); i++) out[i] = act_ref(gate[i], act) * up[i];
  return out;
}

class GluTest : public ::testing::TestWithParam<Activation> {};

TEST_P(GluTest, ActivationMatchesTorch) {
  const Activation act = GetParam();
  const float* want = act == Activation::kSilu ? kSilu : kGeluTanh;
  const int64_t n = std::size(kActX);
  std::vector<float> ones(n, 1.0f), out(n);
  glu_forward(out.data(), kActX, ones.data(), n, act);
  for (int64_t i = 0; i < n; i++) {
    // A few fp32 roundings (exp/tanh and 3-4 arithmetic operations): 4 ulp.
    EXPECT_NEAR(out[i], want[i], 4 * FLT_EPSILON * std::max(1.0f, std::fabs(want[i])))
        << "x = " << kActX[i];
  }
}

TEST_P(GluTest, ForwardMatchesReference) {
  const Activation act = GetParam();
  const int64_t n = 40000;  // above the threshold at which the loop runs on several threads
  auto gate = random_floats(n, 1, -8.0f, 8.0f), up = random_floats(n, 2);
  std::vector<float> out(n);
  glu_forward(out.data(), gate.data(), up.data(), n, act);
  // |out| <= 8; a few float roundings of relative size eps.
  test::expect_close(out, glu_ref(test::to_double(gate), test::to_double(up), act), 4 * FLT_EPSILON,
                     1e-7, "out");
}

TEST_P(GluTest, BackwardMatchesFiniteDifferencesAndAccumulates) {
  const Activation act = GetParam();
  const int64_t n = 300;
  auto gate = random_floats(n, 3, -6.0f, 6.0f), up = random_floats(n, 4),
       dout = random_floats(n, 5);
  auto dgate = random_floats(n, 6), dup = random_floats(n, 7);
  const auto dgate0 = dgate, dup0 = dup;
  glu_backward(dgate.data(), dup.data(), dout.data(), gate.data(), up.data(), n, act);
  const auto w = test::to_double(dout), g = test::to_double(gate), u = test::to_double(up);
  auto dg = test::numeric_grad(
      [&](const std::vector<double>& v) { return test::dot(w, glu_ref(v, u, act)); }, g);
  auto du = test::numeric_grad(
      [&](const std::vector<double>& v) { return test::dot(w, glu_ref(g, v, act)); }, u);
  for (int64_t i = 0; i < n; i++) {
    dg[i] += dgate0[i];
    du[i] += dup0[i];
  }
  // Derivatives are O(1); a handful of fp32 roundings each.
  test::expect_close(dgate, dg, 1e-6, 1e-6, "dgate");
  test::expect_close(dup, du, 1e-6, 1e-6, "dup");
}

INSTANTIATE_TEST_SUITE_P(Activations, GluTest,
                         ::testing::Values(Activation::kSilu, Activation::kGeluTanh));

}  // namespace
}  // namespace magix::cpu
