// safetensors round trips, the reference-library fixture, and boxes against slices.
#include "magix/safetensors.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "io_test_util.hpp"
#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"

namespace magix {
namespace {

using test::TempDir;

TEST(Safetensors, RoundTripAllDtypesEmptyAndScalar) {
  TempDir dir;
  std::vector<std::pair<std::string, Tensor>> ts = {
      {"w.f32", test::random_tensor({3, 5}, DType::kF32, 1)},
      {"w.bf16", test::random_tensor({7}, DType::kBF16, 2)},
      {"w.f16", test::random_tensor({2, 3, 1}, DType::kF16, 3)},
      {"ids.i32", test::random_tensor({5}, DType::kI32, 4)},
      {"ids.i64", test::random_tensor({3, 3}, DType::kI64, 5)},
      {"empty", Tensor({0, 4}, DType::kBF16)},
      {"scalar", test::random_tensor({}, DType::kF32, 6)},
  };
  std::vector<NamedTensor> named;
  for (auto& [n, t] : ts) named.push_back({n, &t});
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "x y"}};
  auto path = dir / "a.safetensors";
  write_safetensors(path, named, meta);

  SafetensorsReader r(path);
  EXPECT_EQ(r.metadata(), meta);
  EXPECT_EQ(r.data_start() % 8, 0u);
  ASSERT_EQ(r.entries().size(), ts.size());
  uint64_t offset = 0;
  for (size_t i = 0; i < ts.size(); ++i) {  // stored in the order given, contiguous
    const auto& [n, t] = ts[i];
    const SafetensorsEntry* e = r.find(n);
    ASSERT_NE(e, nullptr) << n;
    EXPECT_EQ(e->offset, offset) << n;
    EXPECT_EQ(e->nbytes, t.nbytes()) << n;
    EXPECT_EQ(e->shape, t.shape()) << n;
    EXPECT_EQ(e->dtype, t.dtype()) << n;
    offset += t.nbytes();
    Tensor back = r.read(n);
    EXPECT_TRUE(test::same_bytes(back, t)) << n;
  }
  EXPECT_EQ(std::filesystem::file_size(path), r.data_start() + offset);
  EXPECT_EQ(r.find("nope"), nullptr);
  // Float tensors convert to f32 exactly.
  Tensor b = r.read_f32("w.bf16");
  auto bs = ts[1].second.span<uint16_t>();
  for (size_t i = 0; i < bs.size(); ++i) EXPECT_EQ(b.span<float>()[i], bf16_to_float(bs[i]));
  Tensor h = r.read_f32("w.f16");
  auto hs = ts[2].second.span<uint16_t>();
  for (size_t i = 0; i < hs.size(); ++i) EXPECT_EQ(h.span<float>()[i], f16_to_float(hs[i]));
  EXPECT_EQ(r.read_f32("scalar").span<float>()[0], ts[6].second.span<float>()[0]);
  EXPECT_EQ(r.read_f32("empty").shape(), (Shape{0, 4}));
  // Only the final file is left in the folder: no temporaries.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
}

TEST(Safetensors, EmptyFileWithoutTensorsRoundTrips) {
  TempDir dir;
  write_safetensors(dir / "e.safetensors", {});
  SafetensorsReader r(dir / "e.safetensors");
  EXPECT_TRUE(r.entries().empty());
  EXPECT_TRUE(r.metadata().empty());
}

TEST(Safetensors, ReaderErrorsNameTheFileAndTensor) {
  TempDir dir;
  Tensor i = test::random_tensor({2}, DType::kI64, 1);
  std::vector<NamedTensor> named = {{"ids", &i}};
  write_safetensors(dir / "a.safetensors", named);
  SafetensorsReader r(dir / "a.safetensors");
  try {
    r.read("missing.weight");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("a.safetensors"), std::string::npos) << e.what();
  }
  EXPECT_THROW(r.read_f32("ids"), Error);  // I64 does not convert to f32
  try {
    SafetensorsReader missing(dir / "nope.safetensors");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nope.safetensors"), std::string::npos) << e.what();
  }
  EXPECT_THROW(SafetensorsReader{dir.path()}, Error);  // a folder, not a file
}

TEST(Safetensors, WriterRejectsBadInputAndKeepsTheOldFile) {
  TempDir dir;
  Tensor a = test::random_tensor({2}, DType::kF32, 1);
  auto path = dir / "a.safetensors";
  std::vector<NamedTensor> good = {{"a", &a}};
  write_safetensors(path, good);
  std::string before = test::read_bytes(path);
  std::vector<NamedTensor> dup = {{"a", &a}, {"a", &a}};
  EXPECT_THROW(write_safetensors(path, dup), Error);
  std::vector<NamedTensor> reserved = {{"__metadata__", &a}};
  EXPECT_THROW(write_safetensors(path, reserved), Error);
  Tensor undefined;
  std::vector<NamedTensor> empty_tensor = {{"u", &undefined}};
  EXPECT_THROW(write_safetensors(path, empty_tensor), Error);
  std::vector<NamedTensor> bad_utf8 = {{"\xff\xfe", &a}};
  EXPECT_THROW(write_safetensors(path, bad_utf8), Error);
  EXPECT_EQ(test::read_bytes(path), before);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
  // A folder that does not exist: an error, not a crash.
  EXPECT_THROW(write_safetensors(dir / "no" / "such" / "x.safetensors", good), Error);
}

// Written by tools/reference/make_safetensors_fixture.py with the Python safetensors library.
TEST(Safetensors, ReadsTheReferenceLibraryFixture) {
  SafetensorsReader r(std::filesystem::path(MAGIX_FIXTURES_DIR) / "safetensors" /
                      "reference.safetensors");
  EXPECT_EQ(r.metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}, {"source", "magix fixture"}}));
  EXPECT_EQ(r.entries().size(), 9u);

  Tensor f32 = r.read("f32");
  ASSERT_EQ(f32.shape(), (Shape{2, 3}));
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(f32.span<float>()[i], static_cast<float>(i / 3.0 - 1.0)) << i;
  }

  // bf16: torch's bit patterns, their f32 values, and our own rounding of the same sources.
  Tensor bf16 = r.read("bf16");
  Tensor src = r.read("bf16_source");
  Tensor bits = r.read("bf16_bits");
  Tensor bf16_f32 = r.read_f32("bf16");
  ASSERT_EQ(bf16.dtype(), DType::kBF16);
  ASSERT_EQ(bf16.shape(), (Shape{3, 4}));
  std::vector<double> expected_src;
  for (int i = 0; i < 8; ++i) expected_src.push_back(i * 0.1 - 0.55);
  expected_src.insert(expected_src.end(), {1 + std::ldexp(1.0, -8), 1 + 3 * std::ldexp(1.0, -8),
                                           -(1 + std::ldexp(1.0, -8)),
                                           std::ldexp(1.0, -120) * (1 + std::ldexp(1.0, -8))});
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(src.span<float>()[i], static_cast<float>(expected_src[i])) << i;
    uint16_t torch_bits = static_cast<uint16_t>(bits.span<int32_t>()[i]);
    EXPECT_EQ(bf16.span<uint16_t>()[i], torch_bits) << i;
    EXPECT_EQ(float_to_bf16(src.span<float>()[i]), torch_bits) << i;
    EXPECT_EQ(bf16_f32.span<float>()[i], bf16_to_float(torch_bits)) << i;
  }
  // The exact ties round to even: 1 + 2^-8 -> 1, 1 + 3 * 2^-8 -> 1 + 2^-6.
  EXPECT_EQ(bf16_f32.span<float>()[8], 1.0f);
  EXPECT_EQ(bf16_f32.span<float>()[9], 1.0f + 0.015625f);
  EXPECT_EQ(bf16_f32.span<float>()[10], -1.0f);

  Tensor f16 = r.read_f32("f16");
  Tensor f16_bits = r.read("f16_bits");
  ASSERT_EQ(f16.shape(), (Shape{5}));
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(f16.span<float>()[i],
              f16_to_float(static_cast<uint16_t>(f16_bits.span<int32_t>()[i])));
  }
  EXPECT_EQ(f16.span<float>()[0], 0.333251953125f);  // nearest f16 to 1/3
  EXPECT_EQ(f16.span<float>()[1], -2.5f);
  EXPECT_EQ(f16.span<float>()[2], 65504.0f);
  EXPECT_EQ(f16.span<float>()[3], std::ldexp(1.0f, -24));
  EXPECT_EQ(f16.span<float>()[4], 0.0999755859375f);  // nearest f16 to 0.1

  Tensor i64 = r.read("i64");
  std::vector<int64_t> expected_i64 = {-(int64_t{1} << 62),    -1,       0, 1,
                                       (int64_t{1} << 40) + 7, INT64_MAX};
  EXPECT_EQ(std::vector<int64_t>(i64.span<int64_t>().begin(), i64.span<int64_t>().end()),
            expected_i64);
  Tensor scalar = r.read_f32("scalar");
  EXPECT_EQ(scalar.shape(), Shape{});
  EXPECT_EQ(scalar.span<float>()[0], 3.5f);
  EXPECT_EQ(r.read("empty").shape(), (Shape{0, 3}));
}

// The box of `full` (f32) as naive index arithmetic.
Tensor slice_naive(const Tensor& full, const Shape& start, const Shape& extent) {
  Tensor out(extent, DType::kF32);
  const int nd = full.ndim();
  std::vector<int64_t> idx(nd, 0);
  for (int64_t i = 0; i < out.numel(); ++i) {
    int64_t rem = i, src = 0, stride = 1;
    for (int d = nd - 1; d >= 0; --d) {
      idx[d] = rem % extent[d];
      rem /= extent[d];
    }
    for (int d = nd - 1; d >= 0; --d) {
      src += (start[d] + idx[d]) * stride;
      stride *= full.shape()[d];
    }
    out.span<float>()[i] = full.span<float>()[src];
  }
  return out;
}

struct BoxCase {
  Shape start, extent;
};

void check_boxes(DType dtype, const Shape& shape, const std::vector<BoxCase>& boxes) {
  TempDir dir;
  Tensor pad = test::random_tensor({3}, DType::kF16, 9);  // puts the tensor at a nonzero offset
  Tensor t = test::random_tensor(shape, dtype, 7);
  std::vector<NamedTensor> named = {{"pad", &pad}, {"t", &t}};
  write_safetensors(dir / "b.safetensors", named);
  SafetensorsReader r(dir / "b.safetensors");
  Tensor full = r.read_f32("t");
  for (const auto& b : boxes) {
    Tensor got = r.read_box_f32("t", b.start, b.extent);
    Tensor want = slice_naive(full, b.start, b.extent);
    ASSERT_EQ(got.shape(), b.extent);
    ASSERT_EQ(got.dtype(), DType::kF32);
    for (int64_t i = 0; i < want.numel(); ++i) {
      ASSERT_EQ(got.span<float>()[i], want.span<float>()[i])
          << "start " << shape_str(b.start) << " extent " << shape_str(b.extent) << " at " << i;
    }
  }
}

TEST(Safetensors, Box2dMatchesSlicing) {
  std::vector<BoxCase> boxes = {
      {{0, 0}, {6, 10}},  // whole
      {{0, 0}, {3, 10}},  // row shard: one contiguous run
      {{3, 0}, {3, 10}},  // second row shard
      {{0, 5}, {6, 5}},   // column shard: one run per row
      {{2, 3}, {3, 4}},   // interior
      {{5, 9}, {1, 1}},   // last element
      {{1, 2}, {0, 3}},   // empty
  };
  check_boxes(DType::kBF16, {6, 10}, boxes);
  check_boxes(DType::kF32, {6, 10}, boxes);
  check_boxes(DType::kF16, {6, 10}, boxes);
}

TEST(Safetensors, Box3dMatchesSlicing) {
  std::vector<BoxCase> boxes = {
      {{0, 0, 0}, {4, 5, 6}}, {{1, 0, 0}, {2, 5, 6}}, {{0, 2, 0}, {4, 3, 6}},
      {{0, 0, 3}, {4, 5, 3}}, {{1, 1, 1}, {2, 3, 4}}, {{3, 4, 5}, {1, 1, 1}},
      {{0, 1, 0}, {4, 1, 6}}, {{2, 0, 0}, {1, 5, 6}}, {{0, 0, 0}, {4, 0, 6}},
  };
  check_boxes(DType::kBF16, {4, 5, 6}, boxes);
  check_boxes(DType::kF32, {4, 5, 6}, boxes);
}

TEST(Safetensors, BoxOfScalarAnd1d) {
  check_boxes(DType::kBF16, {}, {{{}, {}}});
  check_boxes(DType::kBF16, {9}, {{{0}, {9}}, {{4}, {3}}, {{8}, {1}}});
}

TEST(Safetensors, BoxRunsLongerThanTheStagingChunk) {
  // 16-bit sources are converted through a staging buffer of 2^20 elements per read.
  const int64_t w = (int64_t{1} << 20) + 3;
  check_boxes(DType::kBF16, {2, w}, {{{0, 0}, {2, w}}, {{1, 0}, {1, w}}, {{0, 5}, {2, w - 7}}});
}

TEST(Safetensors, BadBoxesAreErrors) {
  TempDir dir;
  Tensor t = test::random_tensor({4, 6}, DType::kBF16, 1);
  Tensor i = test::random_tensor({4}, DType::kI32, 1);
  std::vector<NamedTensor> named = {{"t", &t}, {"i", &i}};
  write_safetensors(dir / "b.safetensors", named);
  SafetensorsReader r(dir / "b.safetensors");
  EXPECT_THROW(r.read_box_f32("t", {0}, {4}), Error);                        // rank
  EXPECT_THROW(r.read_box_f32("t", {0, 0}, {5, 6}), Error);                  // too long
  EXPECT_THROW(r.read_box_f32("t", {-1, 0}, {1, 6}), Error);                 // negative start
  EXPECT_THROW(r.read_box_f32("t", {0, 0}, {1, -1}), Error);                 // negative extent
  EXPECT_THROW(r.read_box_f32("t", {0, 7}, {1, 0}), Error);                  // start past the end
  EXPECT_THROW(r.read_box_f32("t", {INT64_MAX, 0}, {INT64_MAX, 6}), Error);  // overflow
  EXPECT_THROW(r.read_box_f32("i", {0}, {4}), Error);                        // not a float tensor
  try {
    r.read_box_f32("t", {0, 0}, {5, 6});
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("b.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'t'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace magix
