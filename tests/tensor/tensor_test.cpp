#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"
#include "magix/mesh.hpp"
#include "magix/tensor.hpp"

namespace magix {
namespace {

TEST(Tensor, ShapeAndZeroInit) {
  Tensor t({2, 3}, DType::kF32);
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.nbytes(), 24u);
  EXPECT_EQ(t.dim(-1), 3);
  for (float v : t.span<float>()) EXPECT_EQ(v, 0.0f);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.bytes()) % 64, 0u);
}

TEST(Tensor, WrongTypedAccessThrows) {
  Tensor t({4}, DType::kBF16);
  EXPECT_THROW(t.data<float>(), Error);
  EXPECT_NO_THROW(t.data<uint16_t>());
}

TEST(Tensor, OverflowingShapeThrows) {
  EXPECT_THROW(shape_numel({int64_t{1} << 40, int64_t{1} << 40}), Error);
  EXPECT_THROW(shape_numel({-1, 2}), Error);
}

TEST(Tensor, ReshapeSharesStorage) {
  Tensor t({2, 3});
  Tensor r = t.reshape({3, 2});
  r.data<float>()[5] = 7.0f;
  EXPECT_EQ(t.data<float>()[5], 7.0f);
  EXPECT_THROW(t.reshape({4}), Error);
}

TEST(BF16, RoundsToNearestEven) {
  // 1 + 2^-8 lies exactly between bf16 neighbours 1 and 1 + 2^-7: ties to even -> 1.
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3*2^-8 lies between 1+2^-7 (odd) and 1+2^-6 (even): ties to even -> 1 + 2^-6.
  EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  // Just above the tie rounds up.
  EXPECT_EQ(float_to_bf16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)), 0x3f81);
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(-2.5f)), -2.5f);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(bf16_to_float(float_to_bf16(std::numeric_limits<float>::infinity()))));
  // The largest finite float rounds up to infinity in bf16.
  EXPECT_TRUE(std::isinf(bf16_to_float(float_to_bf16(std::numeric_limits<float>::max()))));
}

TEST(F16, KnownValues) {
  EXPECT_EQ(f16_to_float(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_float(0xc000), -2.0f);
  EXPECT_EQ(f16_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_float(0x0400), std::ldexp(1.0f, -14));
  EXPECT_TRUE(std::isinf(f16_to_float(0x7c00)));
  EXPECT_TRUE(std::isnan(f16_to_float(0x7e00)));
  // Every finite f16 survives a round trip through f32.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    ASSERT_EQ(float_to_f16(f16_to_float(static_cast<uint16_t>(h))), h) << h;
  }
  EXPECT_EQ(float_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie -> even
  EXPECT_EQ(float_to_f16(1e6f), 0x7c00);
}

TEST(Tensor, ConvertF32BF16) {
  Tensor t({3});
  t.data<float>()[0] = 1.0f;
  t.data<float>()[1] = -3.140625f;
  t.data<float>()[2] = 1e-3f;
  Tensor b = t.to(DType::kBF16);
  Tensor back = b.to(DType::kF32);
  EXPECT_EQ(back.data<float>()[0], 1.0f);
  EXPECT_EQ(back.data<float>()[1], -3.140625f);
  EXPECT_NEAR(back.data<float>()[2], 1e-3f, 1e-5f);
}

TEST(Mesh, ResolveShape) {
  EXPECT_EQ(resolve_mesh_shape({2, -1}, 8), (std::vector<int>{2, 4}));
  EXPECT_EQ(resolve_mesh_shape({-1, 1}, 3), (std::vector<int>{3, 1}));
  EXPECT_THROW(resolve_mesh_shape({2, 2}, 8), Error);
  EXPECT_THROW(resolve_mesh_shape({-1, -1}, 4), Error);
  EXPECT_THROW(resolve_mesh_shape({3, -1}, 4), Error);
  EXPECT_THROW(resolve_mesh_shape({0, 1}, 1), Error);
  Mesh m;
  EXPECT_EQ(m.data_size(), 1);
  EXPECT_EQ(m.axis_size("model"), 1);
  EXPECT_THROW(m.axis_size("pipeline"), Error);
}

}  // namespace
}  // namespace magix
