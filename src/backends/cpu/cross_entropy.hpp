// Softmax cross-entropy fused with its gradient, over a (possibly vocab-parallel) shard of the
// logits. With the vocab split over ranks, the caller all-reduces row_max (max) between the two
// forward stages and row_sumexp and target_logit (sum) after the second; with one shard the
// stages run back to back (cross_entropy_forward).
#pragma once

#include <cstdint>

namespace magix::cpu {

// logits (N, V) hold vocab entries [v0, v0 + V). targets (N): a global vocab id, or < 0 for an
// ignored position (loss 0, gradient 0).

// row_max (N) = max over the shard.
void cross_entropy_max(float* row_max, const float* logits, int64_t N, int64_t V);

// row_sumexp (N) = sum exp(logit - row_max); target_logit (N) = logit of the target if it lies
// in this shard, else 0.
void cross_entropy_sumexp(float* row_sumexp, float* target_logit, const float* logits,
                          const float* row_max, const int32_t* targets, int64_t v0, int64_t N,
                          int64_t V);

// losses (N) = log(row_sumexp) + row_max - target_logit, 0 where the target is ignored.
void cross_entropy_loss(float* losses, const float* row_max, const float* row_sumexp,
                        const float* target_logit, const int32_t* targets, int64_t N);

// Single-shard convenience: losses (N) from logits (N, V) with v0 = 0; row_max and row_sumexp
// (N) are outputs kept for the backward pass.
void cross_entropy_forward(float* losses, float* row_max, float* row_sumexp, const float* logits,
                           const int32_t* targets, int64_t N, int64_t V);

// dlogits (N, V) = dloss[n] * (softmax(logits)[n] - onehot(target[n])), written (=, not +=);
// dlogits may alias logits (in-place). Rows with an ignored target get 0.
void cross_entropy_backward(float* dlogits, const float* logits, const float* row_max,
                            const float* row_sumexp, const int32_t* targets, const float* dloss,
                            int64_t v0, int64_t N, int64_t V);

// bf16 logits (the LM head's output in bf16 mixed precision): the same stages in fp32 arithmetic
// (exp evaluated with vec::exp, the row sum in fp32 lanes added into a double per 1024 terms);
// dlogits bf16, rounded once per element.
void cross_entropy_max(float* row_max, const uint16_t* logits, int64_t N, int64_t V);
void cross_entropy_sumexp(float* row_sumexp, float* target_logit, const uint16_t* logits,
                          const float* row_max, const int32_t* targets, int64_t v0, int64_t N,
                          int64_t V);
void cross_entropy_backward(uint16_t* dlogits, const uint16_t* logits, const float* row_max,
                            const float* row_sumexp, const int32_t* targets, const float* dloss,
                            int64_t v0, int64_t N, int64_t V);

}  // namespace magix::cpu
