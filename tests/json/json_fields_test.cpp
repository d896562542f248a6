// Typed reads of JSON fields (include/magix/json_parse.hpp): each wrong type, a value outside
// the target type's range and a missing field give a magix::Error naming the place, the key,
// the expected and the found type.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../common/error_of.hpp"
#include "magix/error.hpp"
#include "magix/json_parse.hpp"

namespace magix {
namespace {

using nlohmann::json;

using test::error_of;

const json kDoc = json::parse(R"({"s": "8", "i": 8, "u": 4294967296, "n": -3, "f": 0.5,
  "b": true, "z": null, "o": {"k": 1}, "l": [1, 2], "ls": ["a", 3]})");

TEST(JsonFields, ValidReads) {
  EXPECT_EQ(json_get<std::string>(kDoc, "s", "f.json"), "8");
  EXPECT_EQ(json_get<int32_t>(kDoc, "i", "f.json"), 8);
  EXPECT_EQ(json_get<int64_t>(kDoc, "n", "f.json"), -3);
  EXPECT_EQ(json_get<uint64_t>(kDoc, "u", "f.json"), 4294967296u);
  EXPECT_EQ(json_get<double>(kDoc, "f", "f.json"), 0.5);
  EXPECT_EQ(json_get<double>(kDoc, "i", "f.json"), 8.0);  // an integer is a number
  EXPECT_TRUE(json_get<bool>(kDoc, "b", "f.json"));
  EXPECT_EQ(json_get<std::vector<int64_t>>(kDoc, "l", "f.json"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(json_object_at(kDoc, "o", "f.json").at("k"), 1);
  EXPECT_EQ(json_array_at(kDoc, "l", "f.json").size(), 2u);
  // Optional fields: absent or null take the default.
  EXPECT_EQ(json_value<int64_t>(kDoc, "absent", 7, "f.json"), 7);
  EXPECT_EQ(json_value<std::string>(kDoc, "z", "d", "f.json"), "d");
  EXPECT_EQ(json_value<int64_t>(kDoc, "i", 7, "f.json"), 8);
  EXPECT_EQ(json_find(kDoc, "z"), nullptr);
  EXPECT_NE(json_find(kDoc, "i"), nullptr);
}

TEST(JsonFields, WrongTypesNameKeyExpectedAndFound) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {error_of([] { json_get<int64_t>(kDoc, "s", "a.json"); }),
       R"(a.json: "s" must be an integer, found string "8")"},
      {error_of([] { json_get<std::string>(kDoc, "i", "a.json"); }),
       R"(a.json: "i" must be a string, found integer 8)"},
      {error_of([] { json_get<int64_t>(kDoc, "f", "a.json"); }),
       R"(a.json: "f" must be an integer, found number 0.5)"},
      {error_of([] { json_get<bool>(kDoc, "z", "a.json"); }),
       R"(a.json: "z" must be true or false, found null)"},
      {error_of([] { json_value<double>(kDoc, "s", 1.0, "a.json"); }),
       R"(a.json: "s" must be a number, found string "8")"},
      {error_of([] { json_get<std::vector<int64_t>>(kDoc, "o", "a.json"); }),
       R"(a.json: "o" must be a list of integers, found object)"},
      {error_of([] { json_get<std::vector<std::string>>(kDoc, "ls", "a.json"); }),
       R"(a.json: "ls"[1] must be a string, found integer 3)"},
      {error_of([] { json_object_at(kDoc, "l", "a.json"); }),
       R"(a.json: "l" must be an object, found list)"},
      {error_of([] { json_array_at(kDoc, "o", "a.json"); }),
       R"(a.json: "o" must be a list, found object)"},
      {error_of([] { json_get<int64_t>(kDoc, "absent", "a.json"); }),
       R"(a.json: "absent" is missing)"},
      {error_of([] { json_get<int64_t>(json::array(), "k", "a.json"); }),
       R"(a.json must be an object, found list)"},
      {error_of([] { json_expect_object(json(3), "a.json"); }),
       R"(a.json must be an object, found integer 3)"},
  };
  for (const auto& [got, want] : cases) EXPECT_EQ(got, want);
}

TEST(JsonFields, IntegersOutsideTheTargetTypeAreErrors) {
  EXPECT_EQ(
      error_of([] { json_get<int32_t>(kDoc, "u", "a.json"); }),
      R"(a.json: "u" must be an integer from -2147483648 to 2147483647, found integer 4294967296)");
  EXPECT_EQ(error_of([] { json_get<uint64_t>(kDoc, "n", "a.json"); }),
            R"(a.json: "n" must be an integer from 0 to 18446744073709551615, found integer -3)");
  EXPECT_EQ(error_of([] { json_get<size_t>(kDoc, "n", "a.json"); }).find("found integer -3") !=
                std::string::npos,
            true);
  const json big = {{"v", std::numeric_limits<uint64_t>::max()}};
  EXPECT_NE(error_of([&] { json_get<int64_t>(big, "v", "a.json"); }), "");
  EXPECT_EQ(json_get<uint64_t>(big, "v", "a.json"), std::numeric_limits<uint64_t>::max());
}

TEST(JsonFields, LongValuesAreCutShortInMessages) {
  const json j = {{"k", std::string(1000, 'x')}};
  const std::string msg = error_of([&] { json_get<int64_t>(j, "k", "a.json"); });
  EXPECT_LT(msg.size(), 120u) << msg;
  EXPECT_NE(msg.find("found string \"xxx"), std::string::npos) << msg;
}

}  // namespace
}  // namespace magix
