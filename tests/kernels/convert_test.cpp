// f32_to_bf16 / bf16_to_f32 (every instruction-set kernel this CPU supports, and the threaded
// entry points) bit for bit against the scalar magix::float_to_bf16 / magix::bf16_to_float.
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "backends/cpu/convert.hpp"
#include "magix/dtype_convert.hpp"

namespace magix::cpu {
namespace {

constexpr ConvertIsa kIsas[] = {ConvertIsa::kScalar, ConvertIsa::kAvx2, ConvertIsa::kAvx512};

std::vector<uint16_t> expected_bf16(const std::vector<uint32_t>& bits) {
  std::vector<uint16_t> out(bits.size());
  for (size_t i = 0; i < bits.size(); i++) out[i] = float_to_bf16(std::bit_cast<float>(bits[i]));
  return out;
}

// Converts `bits` with every kernel this CPU supports and compares bit for bit; checks that
// nothing is written past the end.
void check_all_kernels(const std::vector<uint32_t>& bits, const char* what) {
  const std::vector<uint16_t> want = expected_bf16(bits);
  std::vector<float> src(bits.size());
  for (size_t i = 0; i < bits.size(); i++) src[i] = std::bit_cast<float>(bits[i]);
  for (ConvertIsa isa : kIsas) {
    if (!convert_isa_supported(isa)) continue;
    std::vector<uint16_t> got(bits.size() + 1, 0xabcd);
    f32_to_bf16(isa, src.data(), got.data(), static_cast<int64_t>(src.size()));
    for (size_t i = 0; i < bits.size(); i++) {
      ASSERT_EQ(got[i], want[i]) << what << ", " << convert_isa_name(isa) << ": input 0x"
                                 << std::hex << bits[i] << " at " << std::dec << i;
    }
    EXPECT_EQ(got[bits.size()], 0xabcd) << "wrote past the end";
  }
}

std::vector<uint32_t> special_values() {
  std::vector<uint32_t> v = {
      0x00000000, 0x80000000,                          // +-0
      0x7f800000, 0xff800000,                          // +-inf
      0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001,  // quiet and signalling NaNs
      0x7fffffff, 0xffffffff, 0x7fa00000, 0x7f80ffff, 0x7f810000, 0xffbfffff,
      0x00000001, 0x80000001, 0x00007fff, 0x00008000, 0x00008001, 0x00018000,  // denormals
      0x007fffff, 0x807fffff, 0x007f8000, 0x007f7fff, 0x00400000, 0x00800000,
      0x80800000,                                      // smallest normal
      0x7f7fffff, 0xff7fffff, 0x7f7f8000, 0xff7f8000,  // round up to +-inf
      0x7f7f7fff, 0x7f7f0000, 0x7f7effff,              // largest values that stay finite
      0x3f800000, 0x3f808000, 0x3f818000, 0x3f807fff, 0x3f808001,  // ties to even, near ties
      0x3fff8000, 0xbfff8000, 0x3f7fffff,                          // carries into the exponent
  };
  return v;
}

TEST(ConvertBf16, SpecialValuesAllKernelsAndTails) {
  const std::vector<uint32_t> special = special_values();
  // Every length 0..80 of a sequence cycling through the specials (exercises masked tails).
  for (size_t n = 0; n <= 80; n++) {
    std::vector<uint32_t> bits(n);
    for (size_t i = 0; i < n; i++) bits[i] = special[(i * 7 + n) % special.size()];
    check_all_kernels(bits, "special values");
  }
}

TEST(ConvertBf16, EveryHighHalfWithRoundingCriticalLowHalves) {
  // All 65536 sign/exponent/top-mantissa patterns, each with the low halves that decide the
  // rounding: 0, 1, just below, at and above the tie, the maximum.
  const uint32_t lows[] = {0x0000, 0x0001, 0x3fff, 0x7ffe, 0x7fff, 0x8000, 0x8001, 0xc000, 0xffff};
  std::vector<uint32_t> bits;
  for (uint32_t high = 0; high < 0x10000; high++) {
    for (uint32_t low : lows) bits.push_back(high << 16 | low);
  }
  check_all_kernels(bits, "high halves");
}

TEST(ConvertBf16, RandomBitPatterns) {
  std::mt19937 rng(20261121);
  std::vector<uint32_t> bits(1 << 22);  // 4M patterns, NaNs and denormals included by chance
  for (uint32_t& b : bits) b = rng();
  check_all_kernels(bits, "random");
}

TEST(ConvertBf16, WideningIsExactForEveryPattern) {
  std::vector<uint16_t> all(0x10000 + 37);
  for (size_t i = 0; i < all.size(); i++) all[i] = static_cast<uint16_t>(i * 40503u);
  for (ConvertIsa isa : kIsas) {
    if (!convert_isa_supported(isa)) continue;
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{15}, int64_t{17}, int64_t{33},
                      static_cast<int64_t>(all.size())}) {
      std::vector<float> got(n + 1, 123.0f);
      bf16_to_f32(isa, all.data(), got.data(), n);
      for (int64_t i = 0; i < n; i++) {
        ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(bf16_to_float(all[i])))
            << convert_isa_name(isa) << " pattern 0x" << std::hex << all[i];
      }
      EXPECT_EQ(got[n], 123.0f) << "wrote past the end";
    }
  }
}

TEST(ConvertBf16, ThreadedEntryPointsAboveTheThreshold) {
  // Large enough to split between threads, not a multiple of the block or vector size.
  const int64_t n = 5 * kConvertParallelMin + 13;
  std::mt19937 rng(7);
  std::vector<float> src(n);
  for (float& x : src) x = std::bit_cast<float>(static_cast<uint32_t>(rng()));
  std::vector<uint16_t> half(n);
  f32_to_bf16(src.data(), half.data(), n);
  std::vector<float> back(n);
  bf16_to_f32(half.data(), back.data(), n);
  for (int64_t i = 0; i < n; i++) {
    ASSERT_EQ(half[i], float_to_bf16(src[i])) << "at " << i;
    ASSERT_EQ(std::bit_cast<uint32_t>(back[i]), static_cast<uint32_t>(half[i]) << 16);
  }
  // The same from inside a parallel region (each thread converts its own half, one thread each).
  std::vector<uint16_t> again(n);
#pragma omp parallel for num_threads(2)
  for (int part = 0; part < 2; part++) {
    const int64_t begin = part * (n / 2), end = part == 0 ? n / 2 : n;
    f32_to_bf16(src.data() + begin, again.data() + begin, end - begin);
  }
  EXPECT_EQ(again, half);
  std::printf("conversion kernels: %s\n", convert_isa_name(convert_isa()));
}

}  // namespace
}  // namespace magix::cpu
