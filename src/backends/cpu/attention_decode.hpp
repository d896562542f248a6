// Attention of one new token per row against a KV cache (the decode step of generation).
#pragma once

#include <cstdint>

namespace magix::cpu {

// The cache of one layer: rows of S slots, slot-major: k, v (B, S, Hkv, D). A query at slot s of
// row b sees slot j iff j <= s, valid[b * S + j] != 0, and (window <= 0 or s - j < window) —
// the training attention's mask with slots as positions (HF's cache positions).
struct KvView {
  const float* k = nullptr;
  const float* v = nullptr;
  const int32_t* valid = nullptr;  // (B, S)
  int64_t S = 0;  // slots allocated per row; slot j is held at j mod S (a ring: see backend.hpp)
};

// q, out (B, Hq, D): the token at slot `slot` of each row; query head h uses kv head
// h / (Hq / Hkv); scale multiplies q·k; softcap > 0 caps the scores (softcap·tanh(s / softcap)).
// Softmax in fp32; a query that sees no key outputs 0.
void attention_decode(float* out, const float* q, const KvView& cache, int64_t B, int64_t slot,
                      int64_t Hq, int64_t Hkv, int64_t D, float scale, int64_t window,
                      float softcap = 0);

// The same against a bf16 cache (bf16 mixed precision: half the bytes per step): scores,
// softmax and the weighted sum in fp32, eight lanes at a time.
struct KvViewBf16 {
  const uint16_t* k = nullptr;
  const uint16_t* v = nullptr;
  const int32_t* valid = nullptr;  // (B, S)
  int64_t S = 0;
};
void attention_decode(float* out, const float* q, const KvViewBf16& cache, int64_t B, int64_t slot,
                      int64_t Hq, int64_t Hkv, int64_t D, float scale, int64_t window,
                      float softcap = 0);

}  // namespace magix::cpu
