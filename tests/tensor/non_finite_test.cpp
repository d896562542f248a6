// first_non_finite: the first NaN or infinity of an F32 / BF16 / F16 buffer, found in any
// position of any block (the search is blocked by 4096 elements), finite extremes passing.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <vector>

#include "magix/dtype_convert.hpp"
#include "magix/tensor.hpp"

namespace magix {
namespace {

TEST(NonFinite, F32EveryPositionAndKind) {
  const float kinds[] = {std::numeric_limits<float>::quiet_NaN(),
                         std::numeric_limits<float>::infinity(),
                         -std::numeric_limits<float>::infinity()};
  std::vector<float> v(10000, std::numeric_limits<float>::max());
  v[1] = -std::numeric_limits<float>::max();
  v[2] = std::numeric_limits<float>::denorm_min();
  EXPECT_EQ(first_non_finite(v.data(), DType::kF32, v.size()), -1);
  for (float bad : kinds) {
    for (size_t at : {size_t{0}, size_t{4095}, size_t{4096}, size_t{9999}}) {
      std::vector<float> w = v;
      w[at] = bad;
      if (at + 7 < w.size()) w[at + 7] = bad;  // the first one counts
      EXPECT_EQ(first_non_finite(w.data(), DType::kF32, w.size()), static_cast<int64_t>(at));
      EXPECT_EQ(first_non_finite(w.data(), DType::kF32, at), -1);  // n stops before it
    }
  }
}

TEST(NonFinite, Bf16AndF16) {
  std::vector<uint16_t> b(5000, float_to_bf16(3.0e38f));
  EXPECT_EQ(first_non_finite(b.data(), DType::kBF16, b.size()), -1);
  b[4321] = 0x7fc0;  // NaN
  EXPECT_EQ(first_non_finite(b.data(), DType::kBF16, b.size()), 4321);
  std::vector<uint16_t> h(5000, 0x7bff);  // 65504, the largest finite f16
  EXPECT_EQ(first_non_finite(h.data(), DType::kF16, h.size()), -1);
  h[17] = 0xfc00;  // -inf
  EXPECT_EQ(first_non_finite(h.data(), DType::kF16, h.size()), 17);
  // As bf16 0x7bff is finite; as f16 the bits 0x7f80 are a NaN.
  std::vector<uint16_t> x(3, 0x7f80);
  EXPECT_EQ(first_non_finite(x.data(), DType::kF16, x.size()), 0);
  EXPECT_EQ(first_non_finite(x.data(), DType::kBF16, x.size()), 0);
}

TEST(NonFinite, IntegersAndCoordinates) {
  std::vector<int32_t> i(4, -1);  // all bits set: not a float
  EXPECT_EQ(first_non_finite(i.data(), DType::kI32, i.size()), -1);
  EXPECT_EQ(box_coordinates(37, {0, 0}, {32, 32}), "[1, 5]");
  EXPECT_EQ(box_coordinates(37, {16, 4}, {8, 32}), "[17, 9]");
  EXPECT_EQ(box_coordinates(3, {}, {}), "[3]");
}

}  // namespace
}  // namespace magix
