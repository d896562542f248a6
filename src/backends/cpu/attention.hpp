// Causal multi-head attention with grouped KV heads (GQA/MQA), sliding window, padding and
// packing masks. Flash-style: the forward saves only the row log-sum-exp; the backward
// recomputes the probabilities from it.
#pragma once

#include <cstdint>

namespace magix::cpu {

// Query i of row b sees key j iff j <= i, and (sliding_window <= 0 or i - j < sliding_window),
// and key_valid[b*T + j] != 0 (if key_valid is given), and segment[b*T+i] == segment[b*T+j]
// (if segment is given; packing). A query that sees no key outputs 0 (lse = -inf).
struct AttentionMask {
  const int32_t* key_valid = nullptr;  // (B, T) or null: every key valid
  const int32_t* segment = nullptr;    // (B, T) or null: one segment per row
  int64_t sliding_window = 0;          // <= 0: unlimited
};

// q, out (B, T, Hq, D); k, v (B, T, Hkv, D), Hq a multiple of Hkv (query head h uses kv head
// h / (Hq / Hkv)); lse (B, Hq, T). scale multiplies q·k (usually 1/sqrt(D)).
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                       const AttentionMask& mask);

// dq (B, T, Hq, D), dk, dv (B, T, Hkv, D) accumulate (+=).
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v, int64_t B,
                        int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                        const AttentionMask& mask);

}  // namespace magix::cpu
