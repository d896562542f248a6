// A table of crafted malformed safetensors files: each must give a magix::Error that names the
// file and says what is wrong; none may crash (this binary also runs under ASan/UBSan).
#include <gtest/gtest.h>

#include "io_test_util.hpp"
#include "magix/error.hpp"
#include "magix/safetensors.hpp"

namespace magix {
namespace {

struct BadFile {
  const char* label;
  std::string bytes;     // the whole file
  const char* expected;  // a part of the error message
};

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

std::string file(std::string_view header, size_t data_bytes) {
  return test::safetensors_bytes(header, std::string(data_bytes, '\x01'));
}

const std::string kEntry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

std::vector<BadFile> bad_files() {
  std::string deep = R"({"a":{"dtype":"F32","shape":)" + std::string(5000, '[') +
                     std::string(5000, ']') + R"(,"data_offsets":[0,0]}})";
  return {
      {"empty file", "", "too short"},
      {"shorter than the length field", std::string(5, '\0'), "too short"},
      {"header length over the cap", le64(uint64_t{1} << 40) + "{}", "exceeds the limit"},
      {"header length = 2^64 - 1", le64(~uint64_t{0}) + "{}", "exceeds the limit"},
      {"header length past the end", le64(100) + "{}", "past the end"},
      {"header length zero", le64(0), "JSON object starting"},
      {"header not an object", file("[1]", 0), "JSON object starting"},
      {"header with leading space", file(" {}", 0), "JSON object starting"},
      {"invalid JSON", file(R"({"a":)", 0), "invalid JSON"},
      {"trailing garbage after the JSON", file("{} x", 0), "invalid JSON"},
      {"NUL padding after the JSON", file(std::string("{}\0\0", 4), 0), "invalid JSON"},
      {"JSON comment", file("{/*c*/}", 0), "invalid JSON"},
      {"invalid UTF-8 in a name", file("{\"\xff\":1}", 0), "invalid JSON"},
      {"nesting too deep", file(deep, 0), "nested deeper"},
      {"entry not an object", file(R"({"a":5})", 0), "expected an object"},
      {"entry missing data_offsets", file(R"({"a":{"dtype":"F32","shape":[2]}})", 8),
       "exactly the keys"},
      {"entry with an extra key",
       file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8),
       "exactly the keys"},
      {"entry with a duplicate key",
       file(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
       "duplicate key"},
      {"dtype not a string", file(R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8),
       "dtype must be a string"},
      {"unknown dtype", file(R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", 8),
       "unknown dtype 'Q7'"},
      {"lowercase dtype", file(R"({"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", 8),
       "unknown dtype 'f32'"},
      {"unsupported F64", file(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8),
       "unsupported dtype 'F64'"},
      {"unsupported BOOL", file(R"({"a":{"dtype":"BOOL","shape":[8],"data_offsets":[0,8]}})", 8),
       "unsupported dtype 'BOOL'"},
      {"unsupported U8", file(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", 8),
       "unsupported dtype 'U8'"},
      {"shape not an array", file(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8),
       "shape must be an array"},
      {"negative dimension", file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
       "negative"},
      {"fractional dimension",
       file(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8),
       "non-negative integer"},
      {"dimension as a string",
       file(R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8),
       "non-negative integer"},
      {"dimension 2^63",
       file(R"({"a":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,8]}})", 8),
       "too large"},
      {"dimension beyond uint64",
       file(R"({"a":{"dtype":"F32","shape":[99999999999999999999999],"data_offsets":[0,8]}})", 8),
       "non-negative integer"},
      {"element count overflows",
       file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
       "overflows"},
      {"byte count overflows",
       file(R"({"a":{"dtype":"I64","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8),
       "overflows"},
      {"huge tensor claimed in a tiny file",
       file(R"({"a":{"dtype":"F32","shape":[1000000000000],"data_offsets":[0,4000000000000]}})", 8),
       "past its end"},
      {"data_offsets not an array",
       file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":8}})", 8), "two integers"},
      {"data_offsets with three numbers",
       file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", 8), "two integers"},
      {"negative data offset",
       file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 8), "negative"},
      {"begin after end", file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8),
       "after end"},
      {"span does not match shape x dtype",
       file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "needs 12"},
      {"gap before the first tensor",
       file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12), "gap"},
      {"gap between tensors",
       file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
            12),
       "gap"},
      {"overlapping tensors",
       file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            12),
       "overlaps"},
      {"same bytes for two tensors",
       file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
            8),
       "overlaps"},
      {"tensor past the end of the file (truncated)", file("{" + kEntry + "}", 7), "past its end"},
      {"trailing bytes after the last tensor", file("{" + kEntry + "}", 9), "trailing bytes"},
      {"data without tensors", file("{}", 4), "trailing bytes"},
      {"duplicate tensor names", file("{" + kEntry + "," + kEntry + "}", 8), "duplicate key"},
      {"metadata not an object", file(R"({"__metadata__":"x"})", 0), "__metadata__ must be"},
      {"metadata value not a string", file(R"({"__metadata__":{"k":1}})", 0), "must be a string"},
      {"metadata value an object", file(R"({"__metadata__":{"k":{}}})", 0), "must be a string"},
      {"metadata with a duplicate key", file(R"({"__metadata__":{"k":"a","k":"b"}})", 0),
       "duplicate key"},
  };
}

TEST(SafetensorsBadFiles, ControlFilesAreAccepted) {
  test::TempDir dir;
  // The smallest relatives of the bad files are valid: the table tests one defect at a time.
  auto ok = [&](const std::string& bytes) {
    test::write_bytes(dir / "ok.safetensors", bytes);
    return SafetensorsReader(dir / "ok.safetensors").entries().size();
  };
  EXPECT_EQ(ok(file("{}", 0)), 0u);
  EXPECT_EQ(ok(file("{}   ", 0)), 0u);  // space padding, as writers pad to 8 bytes
  EXPECT_EQ(ok(file("{" + kEntry + "}", 8)), 1u);
  EXPECT_EQ(ok(file(R"({"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[0],)"
                    R"("data_offsets":[0,0]},"b":{"dtype":"BF16","shape":[2,0,3],)"
                    R"("data_offsets":[0,0]}})",
                    0)),
            2u);
  EXPECT_EQ(ok(file(R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                    R"("a":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})",
                    8)),
            2u);
}

TEST(SafetensorsBadFiles, EveryRowIsAClearError) {
  test::TempDir dir;
  auto path = dir / "bad.safetensors";
  for (const BadFile& bad : bad_files()) {
    SCOPED_TRACE(bad.label);
    test::write_bytes(path, bad.bytes);
    try {
      SafetensorsReader r(path);
      ADD_FAILURE() << "accepted: " << bad.label;
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
      EXPECT_NE(msg.find(bad.expected), std::string::npos)
          << "expected '" << bad.expected << "' in: " << msg;
    }
    // The pure parser agrees, given the whole file.
    auto span = std::as_bytes(std::span(bad.bytes.data(), bad.bytes.size()));
    EXPECT_THROW(parse_safetensors_header(span, bad.bytes.size()), Error);
  }
}

TEST(SafetensorsBadFiles, ParserNeedsTheWholeHeader) {
  std::string bytes = file("{" + kEntry + "}", 8);
  auto span = std::as_bytes(std::span(bytes.data(), bytes.size()));
  EXPECT_EQ(parse_safetensors_header(span, bytes.size()).entries.size(), 1u);
  EXPECT_THROW(parse_safetensors_header(span.first(20), bytes.size()), Error);
  EXPECT_THROW(parse_safetensors_header(span.first(4), bytes.size()), Error);
  // A file size that disagrees with the data section.
  EXPECT_THROW(parse_safetensors_header(span, bytes.size() + 1), Error);
  EXPECT_THROW(parse_safetensors_header(span, bytes.size() - 1), Error);
}

}  // namespace
}  // namespace magix
