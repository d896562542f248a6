// The GGUF reader against files written by the gguf package (llama.cpp's Python writer):
// metadata of every value type, and every block type dequantized bit-equal to the values the
// package's reference dequantizers give (tests/fixtures/gguf, tools/reference/make_gguf_fixtures.py).
// Malformed files (built here byte by byte) are clear errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../io/io_test_util.hpp"
#include "magix/error.hpp"
#include "magix/gguf.hpp"
#include "magix/safetensors.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const fs::path kDir = fs::path(MAGIX_FIXTURES_DIR) / "gguf";

TEST(GgufReader, MetadataOfEveryType) {
  GgufFile f(kDir / "quants.gguf");
  EXPECT_EQ(f.version(), 3u);
  const auto& m = f.metadata();
  EXPECT_EQ(m.at("general.architecture"), "llama");
  EXPECT_EQ(m.at("test.u8").get<int>(), 200);
  EXPECT_EQ(m.at("test.i8").get<int>(), -5);
  EXPECT_EQ(m.at("test.u16").get<int>(), 60000);
  EXPECT_EQ(m.at("test.i16").get<int>(), -30000);
  EXPECT_EQ(m.at("test.u32").get<uint64_t>(), 4000000000u);
  EXPECT_EQ(m.at("test.i32").get<int64_t>(), -2000000000);
  EXPECT_EQ(m.at("test.f32").get<double>(), static_cast<double>(0.1f));
  EXPECT_EQ(m.at("test.u64").get<uint64_t>(), 18000000000000000000ull);
  EXPECT_EQ(m.at("test.i64").get<int64_t>(), -9000000000000000000ll);
  EXPECT_EQ(m.at("test.f64").get<double>(), 0.1);
  EXPECT_EQ(m.at("test.bool").get<bool>(), true);
  EXPECT_EQ(m.at("test.string").get<std::string>(), "h\u00e9llo \u2581w\u00f6rld");
  EXPECT_EQ(m.at("test.strings"), nlohmann::json::array({"a", "", "\u0120b"}));
  EXPECT_EQ(m.at("test.ints"), nlohmann::json::array({1, -2, 3}));
  EXPECT_EQ(f.metadata_types().at("test.u8"), "u8");
  EXPECT_EQ(f.metadata_types().at("test.strings"), "array[string]");
  EXPECT_EQ(f.metadata_types().at("test.ints"), "array[i32]");
}

TEST(GgufReader, EveryBlockTypeDequantizesBitEqualToTheReference) {
  GgufFile f(kDir / "quants.gguf");
  SafetensorsReader expected(kDir / "quants_expected.safetensors");
  ASSERT_EQ(f.tensors().size(), 13u);
  for (const auto& e : expected.entries()) {
    SCOPED_TRACE(e.name);
    ASSERT_NE(f.find(e.name), nullptr);
    const Tensor got = f.read_f32(e.name);
    const Tensor want = expected.read(e.name);
    ASSERT_EQ(got.shape(), want.shape());
    const float* g = got.data<float>();
    const float* w = want.data<float>();
    int64_t mismatches = 0;
    for (int64_t i = 0; i < got.numel(); ++i) {
      uint32_t a, b;
      std::memcpy(&a, g + i, 4);
      std::memcpy(&b, w + i, 4);
      if (a != b && mismatches++ < 3) ADD_FAILURE() << e.name << "[" << i << "]: " << g[i] << " vs " << w[i];
    }
    EXPECT_EQ(mismatches, 0);
  }
}

// A GGUF file written here: header, metadata, tensor directory and data, for corrupting.
struct Builder {
  std::vector<uint8_t> b;
  template <typename T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof v);
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
};

struct Spec {
  uint32_t version = 3;
  uint64_t n_tensors = 1;
  uint64_t n_keys = 1;
  uint32_t tensor_type = 8;  // Q8_0
  uint64_t dim0 = 32, dim1 = 2;
  uint64_t offset = 0;
  uint64_t string_len_delta = 0;
  uint32_t value_type = 8;  // string
  uint64_t array_len = 0;   // with value_type 9
  uint32_t n_dims = 2;
  size_t truncate = 0;      // bytes cut from the end
};

std::vector<uint8_t> build(const Spec& s) {
  Builder w;
  w.b.insert(w.b.end(), {'G', 'G', 'U', 'F'});
  w.put<uint32_t>(s.version);
  w.put<uint64_t>(s.n_tensors);
  w.put<uint64_t>(s.n_keys);
  w.str("general.architecture");
  w.put<uint32_t>(s.value_type);
  if (s.value_type == 9) {
    w.put<uint32_t>(4);
    w.put<uint64_t>(s.array_len);
  } else {
    w.put<uint64_t>(5 + s.string_len_delta);
    for (char c : std::string("llama")) w.b.push_back(static_cast<uint8_t>(c));
  }
  w.str("w");
  w.put<uint32_t>(s.n_dims);
  w.put<uint64_t>(s.dim0);
  if (s.n_dims >= 2) w.put<uint64_t>(s.dim1);
  for (uint32_t d = 2; d < s.n_dims && d < 16; ++d) w.put<uint64_t>(1);
  w.put<uint32_t>(s.tensor_type);
  w.put<uint64_t>(s.offset);
  while (w.b.size() % 32) w.b.push_back(0);
  std::vector<uint8_t> data(34 * 2, 0);
  w.b.insert(w.b.end(), data.begin(), data.end());
  w.b.resize(w.b.size() - std::min(s.truncate, w.b.size()));
  return w.b;
}

void write(const fs::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                           static_cast<std::streamsize>(bytes.size()));
}

TEST(GgufReader, ControlFileIsAccepted) {
  test::TempDir dir;
  write(dir / "ok.gguf", build(Spec{}));
  GgufFile f(dir / "ok.gguf");
  ASSERT_EQ(f.tensors().size(), 1u);
  EXPECT_EQ(f.tensors()[0].shape(), (Shape{2, 32}));
  EXPECT_EQ(f.read_f32("w").numel(), 64);
  EXPECT_TRUE(is_gguf_file(dir / "ok.gguf"));
}

TEST(GgufReader, MalformedFilesAreClearErrors) {
  struct Case {
    const char* what;
    Spec spec;
    const char* message;
  };
  auto with = [](auto f) {
    Spec s;
    f(s);
    return s;
  };
  const std::vector<Case> cases = {
      {"version 1", with([](Spec& s) { s.version = 1; }), "version 1 is not supported"},
      {"big-endian", with([](Spec& s) { s.version = 3u << 24; }), "big-endian"},
      {"huge tensor count", with([](Spec& s) { s.n_tensors = 1ull << 40; }), "tensors"},
      {"huge key count", with([](Spec& s) { s.n_keys = 1ull << 40; }), "metadata keys"},
      {"string past the end", with([](Spec& s) { s.string_len_delta = 1ull << 40; }), "length"},
      {"unknown value type", with([](Spec& s) { s.value_type = 77; }), "unknown value type"},
      {"huge array", with([](Spec& s) { s.value_type = 9; s.array_len = 1ull << 50; }), "array elements"},
      {"unsupported tensor type", with([](Spec& s) { s.tensor_type = 16; }), "IQ2_XXS"},
      {"unknown tensor type", with([](Spec& s) { s.tensor_type = 99; }), "type 99"},
      {"row not a block multiple", with([](Spec& s) { s.dim0 = 31; }), "block size"},
      {"misaligned offset", with([](Spec& s) { s.offset = 3; }), "alignment"},
      {"data past the end", with([](Spec& s) { s.dim1 = 3; }), "past the end"},
      {"zero dim", with([](Spec& s) { s.dim1 = 0; }), "dimension"},
      {"too many dims", with([](Spec& s) { s.n_dims = 9; }), "dimensions"},
      {"truncated data", with([](Spec& s) { s.truncate = 1; }), "past the end"},
      {"truncated header", with([](Spec& s) { s.truncate = 90; }), "ends inside"},
      {"key count past the metadata", with([](Spec& s) { s.n_keys = 2; }), ""},
  };
  test::TempDir dir;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const fs::path p = dir / "bad.gguf";
    write(p, build(c.spec));
    try {
      GgufFile f(p);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(c.message));
      EXPECT_THAT(e.what(), HasSubstr("bad.gguf"));
    }
  }
  write(dir / "notgguf.bin", std::vector<uint8_t>{'G', 'G', 'M', 'L', 0, 0, 0, 0});
  EXPECT_FALSE(is_gguf_file(dir / "notgguf.bin"));
  EXPECT_THROW(GgufFile(dir / "notgguf.bin"), Error);
}

}  // namespace
}  // namespace magix
