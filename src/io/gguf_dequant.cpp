// Dequantization of ggml's block formats to f32. Each block stores f16 scales and packed integer
// quants; the arithmetic (f32 products, then the f32 offset) follows ggml's reference
// dequantizers, and this file is built with floating-point contraction off so that a*b - c is
// not fused: the results are bit-equal to the reference's.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"
#include "magix/gguf.hpp"

namespace magix {

namespace {

float half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_float(h);
}

// Q4_0, Q4_1, Q5_0, Q5_1 (32 values): f16 d, [f16 m], [32 high bits, one per value], 16 bytes
// of nibbles (low nibbles: values 0-15, high: 16-31). Without m: y = d * (q - 8) (4 bits) or
// d * (q - 16) (5 bits); with m: y = d * q + m.
template <bool kFiveBits, bool kMin>
void legacy_block(const uint8_t* b, float* y) {
  const float d = half(b);
  const float m = kMin ? half(b + 2) : 0.0f;
  const uint8_t* p = b + (kMin ? 4 : 2);
  uint32_t qh = 0;
  if (kFiveBits) {
    std::memcpy(&qh, p, 4);
    p += 4;
  }
  const int offset = kMin ? 0 : kFiveBits ? 16 : 8;
  for (int j = 0; j < 16; ++j) {
    int lo = p[j] & 0x0F, hi = p[j] >> 4;
    if (kFiveBits) {
      lo |= static_cast<int>((qh >> j) & 1) << 4;
      hi |= static_cast<int>((qh >> (j + 16)) & 1) << 4;
    }
    if (kMin) {
      y[j] = d * static_cast<float>(lo) + m;
      y[j + 16] = d * static_cast<float>(hi) + m;
    } else {
      y[j] = d * static_cast<float>(lo - offset);
      y[j + 16] = d * static_cast<float>(hi - offset);
    }
  }
}

// Q8_0: f16 d, 32 int8; y = q * d.
void q8_0(const uint8_t* b, float* y) {
  const float d = half(b);
  const auto* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(qs[j]) * d;
}

// Q2_K (256 values): 16 bytes of 4-bit scale and 4-bit min per group of 16, 64 bytes of 2-bit
// quants, f16 d, f16 dmin; y = (d * scale) * q - dmin * min.
void q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = half(b + 80);
  const float dmin = half(b + 82);
  for (int v = 0; v < 256; ++v) {
    const int half_ = v / 128, s = (v / 32) % 4, l = v % 32, g = v / 16;
    const int q = (qs[half_ * 32 + l] >> (2 * s)) & 3;
    const float dl = d * static_cast<float>(scales[g] & 0x0F);
    const float ml = dmin * static_cast<float>(scales[g] >> 4);
    y[v] = dl * static_cast<float>(q) - ml;
  }
}

// Q3_K (256 values): 32 bytes of high-bit masks, 64 bytes of 2-bit quants, 12 bytes of 6-bit
// signed scales (16 groups of 16), f16 d; q = low2 - 4 where the mask bit is 0.
void q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = half(b + 108);
  float dl[16];
  for (int k = 0; k < 16; ++k) {
    const int low = (sc[k % 8] >> (4 * (k / 8))) & 0x0F;
    const int high = (sc[8 + k % 4] >> (2 * (k / 4))) & 0x03;
    const int scale = static_cast<int8_t>(static_cast<uint8_t>(low | (high << 4))) - 32;
    dl[k] = d * static_cast<float>(scale);
  }
  for (int v = 0; v < 256; ++v) {
    const int half_ = v / 128, s = (v / 32) % 4, l = v % 32;
    const int low2 = (qs[half_ * 32 + l] >> (2 * s)) & 3;
    const int bit = (hmask[l] >> (v / 32)) & 1;
    const int q = low2 - ((bit ^ 1) << 2);
    y[v] = dl[v / 16] * static_cast<float>(q);
  }
}

// The 6-bit scales and mins of Q4_K / Q5_K: 8 groups of 32, packed in 12 bytes.
void k_scale_min(const uint8_t* s, uint8_t sc[8], uint8_t mn[8]) {
  for (int i = 0; i < 4; ++i) {
    sc[i] = s[i] & 0x3F;
    mn[i] = s[4 + i] & 0x3F;
    sc[4 + i] = static_cast<uint8_t>((s[8 + i] & 0x0F) | ((s[i] >> 2) & 0x30));
    mn[4 + i] = static_cast<uint8_t>((s[8 + i] >> 4) | ((s[4 + i] >> 2) & 0x30));
  }
}

// Q4_K and Q5_K (256 values): f16 d, f16 dmin, 12 bytes of scales/mins, [Q5_K: 32 bytes of high
// bits, bit g for group g], 128 bytes of nibbles; y = (d * scale) * q - dmin * min per group of 32.
template <bool kFiveBits>
void k_block(const uint8_t* b, float* y) {
  const float d = half(b);
  const float dmin = half(b + 2);
  uint8_t sc[8], mn[8];
  k_scale_min(b + 4, sc, mn);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + (kFiveBits ? 48 : 16);
  for (int g = 0; g < 8; ++g) {
    const float dg = d * static_cast<float>(sc[g]);
    const float mg = dmin * static_cast<float>(mn[g]);
    const uint8_t* q = qs + (g / 2) * 32;
    const int shift = 4 * (g % 2);
    for (int l = 0; l < 32; ++l) {
      int v = (q[l] >> shift) & 0x0F;
      if (kFiveBits) v |= ((qh[l] >> g) & 1) << 4;
      y[g * 32 + l] = dg * static_cast<float>(v) - mg;
    }
  }
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, f16 d;
// y = (d * scale) * (q - 32) per group of 16.
void q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half(b + 208);
  for (int v = 0; v < 256; ++v) {
    const int a = v / 128, nib = (v / 64) % 2, m = v % 64;
    const int s = (v / 32) % 4, l = v % 32;
    const int low = (ql[a * 64 + m] >> (4 * nib)) & 0x0F;
    const int high = (qh[a * 32 + l] >> (2 * s)) & 0x03;
    const int q = static_cast<int8_t>(static_cast<uint8_t>(low | (high << 4))) - 32;
    const float ds = d * static_cast<float>(sc[v / 16]);
    y[v] = ds * static_cast<float>(q);
  }
}

}  // namespace

void ggml_dequantize(GgmlType type, std::span<const uint8_t> src, std::span<float> dst) {
  const int64_t bv = ggml_block_values(type);
  const int64_t bb = ggml_block_bytes(type);
  const int64_t n = static_cast<int64_t>(dst.size());
  MAGIX_CHECK(n % bv == 0 && static_cast<int64_t>(src.size()) == n / bv * bb,
              "ggml_dequantize: {} values of {} need {} bytes (got {})", n,
              ggml_type_name(static_cast<uint32_t>(type)), n / bv * bb, src.size());
  const uint8_t* s = src.data();
  float* y = dst.data();
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(y, s, n * 4);
      return;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) y[i] = half(s + 2 * i);
      return;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, s + 2 * i, 2);
        y[i] = bf16_to_float(h);
      }
      return;
    default:
      break;
  }
  void (*block)(const uint8_t*, float*) = nullptr;
  switch (type) {
    case GgmlType::kQ4_0: block = legacy_block<false, false>; break;
    case GgmlType::kQ4_1: block = legacy_block<false, true>; break;
    case GgmlType::kQ5_0: block = legacy_block<true, false>; break;
    case GgmlType::kQ5_1: block = legacy_block<true, true>; break;
    case GgmlType::kQ8_0: block = q8_0; break;
    case GgmlType::kQ2_K: block = q2_k; break;
    case GgmlType::kQ3_K: block = q3_k; break;
    case GgmlType::kQ4_K: block = k_block<false>; break;
    case GgmlType::kQ5_K: block = k_block<true>; break;
    case GgmlType::kQ6_K: block = q6_k; break;
    default: MAGIX_FAIL("ggml_dequantize: unexpected type");
  }
  const int64_t blocks = n / bv;
#pragma omp parallel for schedule(static) if (blocks > 4096)
  for (int64_t i = 0; i < blocks; ++i) block(s + i * bb, y + i * bv);
}

}  // namespace magix

namespace magix {

// Q8_0 as ggml's reference quantizer: d = max|x| / 127 (f32), q = round(x / d) half away from
// zero, d stored as f16.
void ggml_quantize_q8_0(std::span<const float> src, std::span<uint8_t> dst) {
  MAGIX_CHECK(src.size() % 32 == 0 && dst.size() == src.size() / 32 * 34,
              "ggml_quantize_q8_0: {} values need {} bytes (got {})", src.size(),
              src.size() / 32 * 34, dst.size());
  const int64_t blocks = static_cast<int64_t>(src.size() / 32);
#pragma omp parallel for schedule(static) if (blocks > 4096)
  for (int64_t b = 0; b < blocks; ++b) {
    const float* x = src.data() + b * 32;
    uint8_t* out = dst.data() + b * 34;
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t dh = float_to_f16(d);
    std::memcpy(out, &dh, 2);
    for (int j = 0; j < 32; ++j) {
      out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(x[j] * id)));
    }
  }
}

}  // namespace magix
