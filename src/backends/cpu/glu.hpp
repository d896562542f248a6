// Gated MLP activations: out = act(gate) * up, act = SiLU (SwiGLU) or tanh-GELU (GeGLU).
#pragma once

#include <cstdint>

#include "magix/model_config.hpp"

namespace magix::cpu {

// out, gate, up: n elements.
void glu_forward(float* out, const float* gate, const float* up, int64_t n, Activation act);

// dgate += dout * up * act'(gate); dup += dout * act(gate).
void glu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                  int64_t n, Activation act);

// bf16 gate, up, out (computed in fp32, rounded once).
void glu_forward(uint16_t* out, const uint16_t* gate, const uint16_t* up, int64_t n,
                 Activation act);

// dgate = dout * up * act'(gate), dup = dout * act(gate), written (=) as bf16; dout fp32.
void glu_backward(uint16_t* dgate, uint16_t* dup, const float* dout, const uint16_t* gate,
                  const uint16_t* up, int64_t n, Activation act);

}  // namespace magix::cpu
