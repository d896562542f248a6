// LoRA on one box of a weight (torch layout (O, I)): merging the adapters into the weight and
// projecting a dense weight gradient onto them. Both are deterministic (independent of the
// thread count).
#pragma once

#include <cstdint>

#include "magix/tensor.hpp"

namespace magix::cpu {

// w (ob, ib) += scale · b (ob, r) · a (r, ib); with `base` (F32 or BF16, (ob, ib)):
// w = base + scale · b · a in the same single pass.
void lora_merge(float* w, const float* a, const float* b, int64_t ob, int64_t ib, int64_t r,
                float scale, const Tensor* base);

// From dw (ob, ib): da (r, ib) += scale · bᵀ · dw and db (ob, r) = scale · dw · aᵀ.
void lora_project(const float* dw, const float* a, const float* b, int64_t ob, int64_t ib,
                  int64_t r, float scale, float* da, float* db);

}  // namespace magix::cpu
