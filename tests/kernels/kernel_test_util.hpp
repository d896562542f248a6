// Helpers shared by the kernel tests: random inputs, double-precision finite differences and
// tolerance checks.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace magix::test {

inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Central differences of a scalar function f at x, in double: (f(x + h e_i) - f(x - h e_i)) / 2h.
// With f smooth and evaluated in double, the error is O(h^2 f''') + O(1e-16 |f| / h): about 1e-10
// for h = 1e-5 and the O(1) functions used here, far below the float tolerances checked.
inline std::vector<double> numeric_grad(const std::function<double(const std::vector<double>&)>& f,
                                        std::vector<double> x, double h = 1e-5) {
  std::vector<double> grad(x.size());
  for (size_t i = 0; i < x.size(); i++) {
    const double saved = x[i];
    x[i] = saved + h;
    const double plus = f(x);
    x[i] = saved - h;
    const double minus = f(x);
    x[i] = saved;
    grad[i] = (plus - minus) / (2.0 * h);
  }
  return grad;
}

// sum_i w[i] * y[i]: a random linear functional of a kernel's output, whose gradient with
// respect to the output is w (what a backward pass receives as dout).
inline double dot(const std::vector<double>& w, const std::vector<double>& y) {
  double s = 0.0;
  for (size_t i = 0; i < y.size(); i++) s += w[i] * y[i];
  return s;
}

// Every |actual - expected| <= atol + rtol * |expected|; reports the first few failures.
template <class A, class E>
void expect_close(const A& actual, const E& expected, double rtol, double atol,
                  const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  int reported = 0;
  for (size_t i = 0; i < actual.size(); i++) {
    const double a = actual[i], e = expected[i];
    const double tol = atol + rtol * std::fabs(e);
    if (!(std::fabs(a - e) <= tol) && reported++ < 5) {
      ADD_FAILURE() << what << "[" << i << "]: got " << a << ", expected " << e << " (tol " << tol
                    << ")";
    }
  }
}

// ||actual - expected|| / max(||expected||, tiny), the DESIGN's gradient metric.
template <class A, class E>
double rel_l2(const A& actual, const E& expected) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < expected.size(); i++) {
    const double d = static_cast<double>(actual[i]) - static_cast<double>(expected[i]);
    num += d * d;
    den += static_cast<double>(expected[i]) * expected[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

}  // namespace magix::test
