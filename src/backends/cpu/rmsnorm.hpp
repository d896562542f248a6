// RMSNorm: out = x / sqrt(mean(x^2) + eps) * (weight + offset).
// offset = 0 for Llama/Mistral/Qwen2 (w·x̂), 1 for Gemma ((1+w)·x̂).
#pragma once

#include <cstdint>

namespace magix::cpu {

// inp, out (N, C); weight (C); rstd (N) is saved for the backward pass.
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N,
                     int64_t C, float eps, float offset);
// The same with a bf16 out (computed in fp32, rounded to nearest even once).
void rmsnorm_forward(uint16_t* out, float* rstd, const float* inp, const float* weight, int64_t N,
                     int64_t C, float eps, float offset);

// dinp (N, C) += ..., dweight (C) += ...; dweight may be null.
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int64_t N, int64_t C, float offset);

}  // namespace magix::cpu
