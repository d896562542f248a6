// The residual stream: adding a layer's output (and its bias) back, and bias gradients.
#pragma once

#include <cstdint>

namespace magix::cpu {

// out (N, C) = residual + (y + bias); bias (C) may be null. out may alias residual or y.
void residual_add(float* out, const float* residual, const float* y, const float* bias, int64_t N,
                  int64_t C);

// dbias (C) += column sums of dy (N, C), rows added in order.
void column_sums(float* dbias, const float* dy, int64_t N, int64_t C);

}  // namespace magix::cpu
