// Rotary position embedding as HF transformers applies it (rotate_half: dim i pairs with
// i + D/2); the frequencies come from model/rope_frequencies.hpp.
#pragma once

#include <cstdint>

namespace magix::cpu {

// x (N, H, D) rotated in place by the angle pos[n] * inv_freq (angles computed in fp32 as HF).
void rope_forward(float* x, const int32_t* pos, const float* inv_freq, int64_t N, int64_t H,
                  int64_t D);

// The transpose of rope_forward: dx (N, H, D) rotated back in place.
void rope_backward(float* dx, const int32_t* pos, const float* inv_freq, int64_t N, int64_t H,
                   int64_t D);

}  // namespace magix::cpu
