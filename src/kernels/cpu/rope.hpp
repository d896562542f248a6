// Rotary position embedding as HF transformers applies it (rotate_half: dim i pairs with
// i + D/2), with the default, linear and Llama-3 frequency rules.
#pragma once

#include <cstdint>
#include <vector>

namespace magix::cpu {

struct RopeScaling {
  enum class Kind { kNone, kLinear, kLlama3 };
  Kind kind = Kind::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;          // llama3
  float high_freq_factor = 4.0f;         // llama3
  int64_t original_max_position = 8192;  // llama3
};

// inv_freq (D/2), computed as HF does for the given rule.
std::vector<float> rope_inv_freq(int64_t head_dim, float theta, const RopeScaling& scaling);

// x (N, H, D) rotated in place by the angle pos[n] * inv_freq (angles computed in fp32 as HF).
void rope_forward(float* x, const int32_t* pos, const float* inv_freq, int64_t N, int64_t H,
                  int64_t D);

// The transpose of rope_forward: dx (N, H, D) rotated back in place.
void rope_backward(float* dx, const int32_t* pos, const float* inv_freq, int64_t N, int64_t H,
                   int64_t D);

}  // namespace magix::cpu
