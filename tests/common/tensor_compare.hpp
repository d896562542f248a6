// Comparisons shared by the tests and test programs (no GoogleTest dependency).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "magix/tensor.hpp"

namespace magix::test {

// ||got - want|| / ||want|| over two f32 tensors of the same size, in double.
inline double rel_l2(const Tensor& got, const Tensor& want) {
  const float* g = got.data<float>();
  const float* w = want.data<float>();
  double num = 0, den = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double d = double(g[i]) - w[i];
    num += d * d;
    den += double(w[i]) * w[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

// |got - want| / |want| (want 0: the absolute difference over 1e-30).
inline double rel(double got, double want) {
  return std::fabs(got - want) / std::max(std::fabs(want), 1e-30);
}

// For the MPI probes (programs without GoogleTest): one line per check on stdout, "ok  : ..." or
// "FAIL: ...", and the count of failed checks, which the probe turns into its exit status.
class ProbeReport {
 public:
  void operator()(bool ok, const std::string& line) {
    std::printf("%s: %s\n", ok ? "ok  " : "FAIL", line.c_str());
    if (!ok) ++failures_;
  }
  int failures() const { return failures_; }

 private:
  int failures_ = 0;
};

}  // namespace magix::test
