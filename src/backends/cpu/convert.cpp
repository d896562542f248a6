#include "backends/cpu/convert.hpp"

#include <algorithm>

#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace magix::cpu {

namespace {

// --- scalar: the reference definitions in magix/dtype_convert.hpp ---

void f32_to_bf16_scalar(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = float_to_bf16(src[i]);
}

void bf16_to_f32_scalar(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_float(src[i]);
}

#if defined(__x86_64__)

// Rounding is done on the integer bits, exactly as float_to_bf16 does it:
//   non-NaN: (bits + 0x7fff + ((bits >> 16) & 1)) >> 16  (ties to even; carries into the
//            exponent give the next binade or inf; denormals round like any other value)
//   NaN:     (bits >> 16) | 0x40                           (quiet, sign and payload top kept)
// AVX512-BF16's vcvtneps2bf16 is not used: it flushes denormal inputs to zero, so it would
// differ from float_to_bf16 on them, and these loops are bound by memory bandwidth anyway.

// --- AVX-512 (F, BW, VL): narrowing, 16 values per step, masked tail ---

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_epi32() (`__m512i __Y = __Y;`), which
// -Wmaybe-uninitialized reports wherever they are inlined; the values are never read.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m256i bf16_bits_avx512(__m512i bits) {
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(
      _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet));
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void f32_to_bf16_avx512(const float* src,
                                                                             uint16_t* dst,
                                                                             int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i lo = bf16_bits_avx512(_mm512_loadu_si512(src + i));
    const __m256i hi = bf16_bits_avx512(_mm512_loadu_si512(src + i + 16));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), lo);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i + 16), hi);
  }
  for (; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m256i out = bf16_bits_avx512(_mm512_maskz_loadu_epi32(mask, src + i));
    _mm256_mask_storeu_epi16(dst + i, mask, out);
  }
}

#pragma GCC diagnostic pop

// --- AVX2: 16 values per step, scalar tail ---

__attribute__((target("avx2"))) inline __m256i bf16_bits_avx2(__m256i bits) {
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(bits, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
  // |bits| and 0x7f800000 are both non-negative as int32, so the signed compare is exact.
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x7fffffff)),
                                         _mm256_set1_epi32(0x7f800000));
  return _mm256_blendv_epi8(rounded, quiet, nan);  // 8 values in [0, 0xffff], one per int32
}

__attribute__((target("avx2"))) void f32_to_bf16_avx2(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i a = bf16_bits_avx2(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    const __m256i b =
        bf16_bits_avx2(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 8)));
    // packus works per 128-bit lane: (a0-3 b0-3 | a4-7 b4-7); the permute restores the order.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), packed);
  }
  f32_to_bf16_scalar(src + i, dst + i, n - i);
}

__attribute__((target("avx2"))) void bf16_to_f32_avx2(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  bf16_to_f32_scalar(src + i, dst + i, n - i);
}

#endif  // __x86_64__

// Runs fn(begin, count) over [0, n): in one call below kConvertParallelMin, else in blocks split
// statically between the OpenMP threads (one thread when called inside a parallel region).
template <typename Fn>
void for_blocks(int64_t n, Fn fn) {
  if (n < kConvertParallelMin) {
    fn(0, n);
    return;
  }
  constexpr int64_t kBlock = int64_t{1} << 14;  // elements; a multiple of every vector width
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; b++) fn(b * kBlock, std::min(kBlock, n - b * kBlock));
}

void f32_to_bf16_kernel(ConvertIsa isa, const float* src, uint16_t* dst, int64_t n) {
#if defined(__x86_64__)
  if (isa == ConvertIsa::kAvx512) return f32_to_bf16_avx512(src, dst, n);
  if (isa == ConvertIsa::kAvx2) return f32_to_bf16_avx2(src, dst, n);
#endif
  f32_to_bf16_scalar(src, dst, n);
}

void bf16_to_f32_kernel(ConvertIsa isa, const uint16_t* src, float* dst, int64_t n) {
#if defined(__x86_64__)
  // AVX-512 CPUs widen with the AVX2 kernel: the 512-bit one (vpmovzxwd zmm + shift) measured
  // 56 GB/s against 69 from L2 on one core here, and both are bound by memory beyond the caches.
  if (isa == ConvertIsa::kAvx512 || isa == ConvertIsa::kAvx2) return bf16_to_f32_avx2(src, dst, n);
#endif
  bf16_to_f32_scalar(src, dst, n);
}

}  // namespace

bool convert_isa_supported(ConvertIsa isa) {
  switch (isa) {
    case ConvertIsa::kScalar:
      return true;
#if defined(__x86_64__)
    case ConvertIsa::kAvx2:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2");
    case ConvertIsa::kAvx512:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl");
#endif
    default:
      return false;
  }
}

ConvertIsa convert_isa() {
  static const ConvertIsa isa = convert_isa_supported(ConvertIsa::kAvx512) ? ConvertIsa::kAvx512
                                : convert_isa_supported(ConvertIsa::kAvx2) ? ConvertIsa::kAvx2
                                                                           : ConvertIsa::kScalar;
  return isa;
}

const char* convert_isa_name(ConvertIsa isa) {
  switch (isa) {
    case ConvertIsa::kAvx512:
      return "avx512";
    case ConvertIsa::kAvx2:
      return "avx2";
    default:
      return "scalar";
  }
}

void f32_to_bf16(ConvertIsa isa, const float* src, uint16_t* dst, int64_t n) {
  MAGIX_CHECK(n >= 0, "f32_to_bf16: negative size {}", n);
  MAGIX_CHECK(convert_isa_supported(isa), "f32_to_bf16: this CPU lacks {}", convert_isa_name(isa));
  f32_to_bf16_kernel(isa, src, dst, n);
}

void bf16_to_f32(ConvertIsa isa, const uint16_t* src, float* dst, int64_t n) {
  MAGIX_CHECK(n >= 0, "bf16_to_f32: negative size {}", n);
  MAGIX_CHECK(convert_isa_supported(isa), "bf16_to_f32: this CPU lacks {}", convert_isa_name(isa));
  bf16_to_f32_kernel(isa, src, dst, n);
}

void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  MAGIX_CHECK(n >= 0, "f32_to_bf16: negative size {}", n);
  const ConvertIsa isa = convert_isa();
  for_blocks(n, [&](int64_t begin, int64_t count) {
    f32_to_bf16_kernel(isa, src + begin, dst + begin, count);
  });
}

void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  MAGIX_CHECK(n >= 0, "bf16_to_f32: negative size {}", n);
  const ConvertIsa isa = convert_isa();
  for_blocks(n, [&](int64_t begin, int64_t count) {
    bf16_to_f32_kernel(isa, src + begin, dst + begin, count);
  });
}

}  // namespace magix::cpu
