// Causal multi-head attention with grouped KV heads (GQA/MQA), sliding window, padding and
// packing masks. Flash-style: the forward saves only the row log-sum-exp; the backward
// recomputes the probabilities from it. In fp32, and in bf16 (uint16_t bit patterns) for bf16
// mixed precision: the same blocks with bf16 GEMM operands, softmax and gradients in fp32.
#pragma once

#include <cstdint>

namespace magix::cpu {

// Query i of row b sees key j iff j <= i, and (sliding_window <= 0 or i - j < sliding_window),
// and key_valid[b*T + j] != 0 (if key_valid is given), and segment[b*T+i] == segment[b*T+j]
// (if segment is given; packing). A query that sees no key outputs 0 (lse = -inf). softcap > 0
// caps every score s = scale·q·k to softcap·tanh(s / softcap) before the mask (Gemma 2).
struct AttentionMask {
  const int32_t* key_valid = nullptr;  // (B, T) or null: every key valid
  const int32_t* segment = nullptr;    // (B, T) or null: one segment per row
  int64_t sliding_window = 0;          // <= 0: unlimited
  float softcap = 0;                   // <= 0: none
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

// bf16: q, k, v, out bf16 (shapes as above); lse fp32. Scores S = scale·Q·Kᵀ come from a bf16
// GEMM with fp32 accumulation and the softmax is fp32; the probabilities P are rounded to bf16
// as the input of P·V (their row sums, lse and the 1/sum normalisation stay fp32), and out is
// rounded to bf16 once, after the normalisation.
void attention_forward(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k,
                       const uint16_t* v, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
                       float scale, const AttentionMask& mask);

// bf16: dout, out, q, k, v bf16; lse fp32 (from the bf16 forward); dq, dk, dv fp32, accumulated
// (+=) as in fp32. P = exp(S - lse), D_i = rowsum(dO ∘ O) (of the bf16 values) and
// dS = P ∘ (dP - D_i) are fp32; P and dS are rounded to bf16 only as GEMM inputs (dV += Pᵀ·dO,
// dQ += scale·dS·K, dK += scale·dSᵀ·Q).
void attention_backward(float* dq, float* dk, float* dv, const uint16_t* dout, const uint16_t* out,
                        const float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                        int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, float scale,
                        const AttentionMask& mask);

}  // namespace magix::cpu
