// Rotary position embedding frequencies: inv_freq (D/2) of the default, linear and Llama-3 rules,
// evaluated as transformers 5.23 does in fp32 (bit-identical in the tests).
#pragma once

#include <cstdint>
#include <vector>

#include "magix/model_config.hpp"

namespace magix {

// inv_freq (R/2), computed as HF does for the given rule, R = the rotated dims (head_dim, or
// int(head_dim · partial_rotary_factor): HF's `dim`). `long_context`: for longrope, the
// frequencies of sequences longer than original_max_position (long_factor; else short_factor).
std::vector<float> rope_inv_freq(int64_t head_dim, float theta, const RopeScaling& scaling,
                                 bool long_context = false);

}  // namespace magix
