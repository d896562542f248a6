// Comparisons shared by the tests and test programs (no GoogleTest dependency).
#pragma once

#include <algorithm>
#include <cmath>

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

}  // namespace magix::test
