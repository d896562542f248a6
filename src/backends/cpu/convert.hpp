// Bulk conversions between fp32 and bf16 (bf16 held as uint16_t bit patterns), vectorised with
// AVX-512 or AVX2 chosen at run time, OpenMP-parallel from kConvertParallelMin elements.
#pragma once

#include <cstdint>

namespace magix::cpu {

// Calls with at least this many elements split the work between OpenMP threads.
inline constexpr int64_t kConvertParallelMin = int64_t{1} << 16;

// dst[i] = bf16(src[i]), rounded to nearest even; bit-identical to magix::float_to_bf16 for
// every input: NaN -> quiet NaN (sign and top payload bits kept), denormals rounded (not flushed),
// values that round past the largest bf16 -> inf. src (n), dst (n); they must not overlap.
void f32_to_bf16(const float* src, uint16_t* dst, int64_t n);

// dst[i] = float(src[i]) (exact). src (n), dst (n); they must not overlap.
void bf16_to_f32(const uint16_t* src, float* dst, int64_t n);

// The kernels behind the two functions above, one per instruction set. The best supported one
// runs; the tests call each supported one directly (single-threaded). Widening at kAvx512 runs
// the AVX2 kernel (faster here; see convert.cpp).
enum class ConvertIsa { kScalar, kAvx2, kAvx512 };
bool convert_isa_supported(ConvertIsa isa);
ConvertIsa convert_isa();                      // the one f32_to_bf16/bf16_to_f32 use on this CPU
const char* convert_isa_name(ConvertIsa isa);  // "scalar", "avx2", "avx512"
void f32_to_bf16(ConvertIsa isa, const float* src, uint16_t* dst, int64_t n);
void bf16_to_f32(ConvertIsa isa, const uint16_t* src, float* dst, int64_t n);

}  // namespace magix::cpu
