// Rotary position embedding as HF transformers applies it (rotate_half: dim i pairs with
// i + D/2); the frequencies come from model/rope_frequencies.hpp.
#pragma once

#include <cstdint>

namespace magix::cpu {

// The cos/sin table of positions pos (N) and frequencies inv_freq (D/2): table (N, D) holds
// cos(a) in [0, D/2) and sin(a) in [D/2, D) of each row, a = float(pos[n]) * inv_freq[i] (the
// fp32 angle HF computes), cos/sin evaluated in double and rounded once.
void rope_table(float* table, const int32_t* pos, const float* inv_freq, int64_t N, int64_t D);

// x (N, H, D): the first R <= D dims of each head (all of them when R == D; fewer with
// partial_rotary_factor) rotated in place by the angles of a rope_table (N, R), the rest left as
// they are; backward: the transpose.
void rope_forward(float* x, const float* table, int64_t N, int64_t H, int64_t D, int64_t R);
void rope_backward(float* dx, const float* table, int64_t N, int64_t H, int64_t D, int64_t R);
// bf16 x (the attention inputs of bf16 mixed precision): the rotation in fp32, rounded once.
void rope_forward(uint16_t* x, const float* table, int64_t N, int64_t H, int64_t D, int64_t R);

// x (N, H, D) rotated in place by the angle pos[n] * inv_freq (angles computed in fp32 as HF).
void rope_forward(float* x, const int32_t* pos, const float* inv_freq, int64_t N, int64_t H,
                  int64_t D);

// The transpose of rope_forward: dx (N, H, D) rotated back in place.
void rope_backward(float* dx, const int32_t* pos, const float* inv_freq, int64_t N, int64_t H,
                   int64_t D);

}  // namespace magix::cpu
