// AdamW over flat shards and the gradient norm's sum of squares.
#pragma once

#include <cstdint>

#include "backends/backend.hpp"

namespace magix::cpu {

// One AdamW update of n elements in fp32 whatever the storage of w (F32, or BF16 bits widened
// before and rounded to nearest even after); g, m, v fp32.
void adamw_update(float* w, const float* g, float* m, float* v, int64_t n, const AdamWScalars& k);
void adamw_update(uint16_t* w, const float* g, float* m, float* v, int64_t n,
                  const AdamWScalars& k);

// Sum of g[i]^2 in double: fixed blocks summed in order (the same for any thread count).
double sum_of_squares(const float* g, int64_t n);

}  // namespace magix::cpu
