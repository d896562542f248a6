// tokenizer.json and tokenizer_config.json with fields of the wrong type (a string for a number,
// a number for a string, an object for a list, null): a magix::Error naming the file and the
// field, never a JSON library exception. The valid documents are the trained fixture tokenizers.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "../common/json_wrong_types.hpp"
#include "magix/error.hpp"
#include "magix/tokenizer.hpp"
#include "magix/tokenizer_config.hpp"
#include "tokenizer_test_util.hpp"

namespace magix {
namespace {

using nlohmann::json;
using test::JsonField;

json fixture_json(const std::string& name) {
  std::ifstream in(test::fixtures_dir() / name / "tokenizer.json");
  EXPECT_TRUE(in.good()) << name;
  return json::parse(in);
}

void read_tokenizer(const json& j) {
  (void)Tokenizer::from_json_string(j.dump(), {}, "tokenizer.json");
}

const std::vector<json> kNotAList = {"x", 7, true, json{{"k", 1}}, nullptr};
const std::vector<json> kNotAnObject = {"x", 7, true, json::array({1}), nullptr};

// The fields every fixture has: the model and the added tokens.
std::vector<JsonField> common_fields() {
  return {
      {"/model", false, "", kNotAnObject},
      {"/model/type", true},
      {"/model/vocab", false, "", kNotAnObject},
      {"/model/merges", true, "", {"x", 7, true, json{{"k", 1}}}},
      {"/model/merges/0", false, "merge #0"},
      {"/model/fuse_unk", true},
      {"/model/byte_fallback", true},
      {"/model/ignore_merges", true},
      {"/model/dropout", true, "", {"x", true, json{{"k", 1}}, json::array({1})}},
      {"/model/continuing_subword_prefix", true, "", {7, true, json{{"k", 1}}, json::array({1})}},
      {"/model/end_of_word_suffix", true, "", {7, true, json{{"k", 1}}, json::array({1})}},
      {"/added_tokens", true, "", {"x", 7, true, json{{"k", 1}}}},
      {"/added_tokens/0", false, "\"added_tokens\"[0]", {"x", 7, json::array({1}), nullptr}},
      {"/added_tokens/0/id"},
      {"/added_tokens/0/content"},
      {"/added_tokens/0/special", true},
      {"/added_tokens/0/normalized", true},
      {"/added_tokens/0/lstrip", true},
      {"/added_tokens/0/rstrip", true},
      {"/added_tokens/0/single_word", true},
  };
}

// Per fixture: the fields of its normalizer, pre-tokenizer, post-processor and decoder.
std::vector<JsonField> fixture_fields(const std::string& name) {
  std::vector<JsonField> f;
  if (name == "trained_affixes") {
    f = {{"/pre_tokenizer/type"},
         {"/model/unk_token", true},
         {"/model/continuing_subword_prefix", true},
         {"/model/end_of_word_suffix", true}};
  } else if (name == "trained_bytelevel") {
    const std::string tp = "/post_processor/processors/1";
    f = {{"/pre_tokenizer/add_prefix_space", true},
         {"/pre_tokenizer/use_regex", true},
         {"/post_processor/processors", false, "", kNotAList},
         {"/post_processor/processors/0", false, "\"processors\"[0]", kNotAnObject},
         {"/post_processor/processors/0/trim_offsets", true},
         {"/post_processor/processors/0/add_prefix_space", true},
         {tp + "/single", false, "", kNotAList},
         {tp + "/single/0", false, "\"single\"[0]", {"x", 7, json::array({1}), nullptr}},
         {tp + "/single/0/SpecialToken", false, "", kNotAnObject},
         {tp + "/single/0/SpecialToken/id"},
         {tp + "/special_tokens", true, "", {"x", 7, true, json::array({1})}},
         {tp + "/special_tokens/<|bos|>/ids", false, "", kNotAList},
         {tp + "/special_tokens/<|bos|>/ids/0", false, "\"ids\"[0]"},
         {"/decoder/type"}};
  } else if (name == "trained_metaspace") {
    f = {{"/pre_tokenizer/replacement", true},
         {"/pre_tokenizer/prepend_scheme", true},
         {"/pre_tokenizer/split", true},
         {"/post_processor/single/0/SpecialToken/id"},
         {"/post_processor/single/1/Sequence/id", true},
         {"/decoder/decoders", false, "", kNotAList},
         {"/decoder/decoders/0", false, "\"decoders\"[0]", kNotAnObject},
         {"/decoder/decoders/1/replacement", true},
         {"/decoder/decoders/1/prepend_scheme", true},
         {"/model/unk_token", true}};
  } else if (name == "trained_misc") {
    f = {{"/normalizer/type"},
         {"/normalizer/normalizers", false, "", kNotAList},
         {"/normalizer/normalizers/0", false, "\"normalizers\"[0]", kNotAnObject},
         {"/normalizer/normalizers/2/strip_left", true},
         {"/normalizer/normalizers/2/strip_right", true},
         {"/pre_tokenizer/pretokenizers", false, "", kNotAList},
         {"/pre_tokenizer/pretokenizers/0", false, "\"pretokenizers\"[0]", kNotAnObject},
         {"/pre_tokenizer/pretokenizers/1/individual_digits", true},
         {"/post_processor/type"},
         {"/post_processor/cls", false, "", kNotAList},
         {"/post_processor/sep/1", false, "\"sep\"[1]"}};
  } else if (name == "trained_sentencepiece") {
    f = {{"/normalizer/normalizers/0/prepend"},
         {"/normalizer/normalizers/1/pattern", false, "", kNotAnObject},
         {"/normalizer/normalizers/1/pattern/String"},
         {"/normalizer/normalizers/1/content"},
         {"/decoder/decoders/0/pattern/String"},
         {"/decoder/decoders/0/content"},
         {"/decoder/decoders/3/content"},
         {"/decoder/decoders/3/start", true},
         {"/decoder/decoders/3/stop", true}};
  }
  return f;
}

TEST(TokenizerJsonTypes, WrongTypesNameTheField) {
  for (const char* name : {"trained_affixes", "trained_bytelevel", "trained_metaspace",
                           "trained_misc", "trained_sentencepiece"}) {
    SCOPED_TRACE(name);
    const json valid = fixture_json(name);
    std::vector<JsonField> fields = common_fields();
    for (JsonField& f : fixture_fields(name)) {
      // A fixture's own entry replaces the common one for the same field.
      std::erase_if(fields, [&](const JsonField& c) { return c.pointer == f.pointer; });
      fields.push_back(std::move(f));
    }
    test::expect_wrong_types_named(valid, fields, read_tokenizer);
    EXPECT_GT(test::expect_only_magix_errors(valid, read_tokenizer), 100u);
  }
}

TEST(TokenizerJsonTypes, MessagesNameFileKeyAndTypes) {
  json j = fixture_json("trained_sentencepiece");
  j["added_tokens"][1]["id"] = "1";
  try {
    read_tokenizer(j);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "tokenizer.json: \"added_tokens\"[1]: \"id\" must be an integer, found string \"1\"");
  }
  for (const char* top : {"[]", "3", "null", "\"x\""}) {
    try {
      (void)Tokenizer::from_json_string(top, {}, "tokenizer.json");
      ADD_FAILURE() << top << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("tokenizer.json: not a tokenizer.json (a JSON object)"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(TokenizerJsonTypes, TokenizerConfigWrongTypesNameTheField) {
  const json valid = {{"bos_token", "<s>"},
                      {"eos_token", {{"content", "</s>"}, {"special", true}}},
                      {"pad_token", "<pad>"},
                      {"unk_token", "<unk>"},
                      {"add_bos_token", true},
                      {"add_eos_token", false},
                      {"chat_template", json::array({{{"name", "default"}, {"template", "x"}}})}};
  const auto read = [](const json& j) { (void)parse_tokenizer_config(j, "tokenizer_config.json"); };
  const std::vector<json> not_a_token = {7, 2.5, true, json::array({1}), json{{"k", 1}}};
  const std::vector<JsonField> fields = {
      {"/bos_token", true, "", not_a_token},
      {"/eos_token", true, "", not_a_token},
      {"/eos_token/content", false, "\"eos_token\""},
      {"/pad_token", true, "", not_a_token},
      {"/unk_token", true, "", not_a_token},
      {"/add_bos_token", true},
      {"/add_eos_token", true},
      {"/chat_template", true, "", {7, true, json{{"k", 1}}}},
      {"/chat_template/0", false, "\"chat_template\"[0]", {"x", 7, json::array({1}), nullptr}},
      {"/chat_template/0/name", false, "\"chat_template\"[0]"},
      {"/chat_template/0/template", false, "\"chat_template\"[0]"},
  };
  test::expect_wrong_types_named(valid, fields, read);
  test::expect_only_magix_errors(valid, read);
  try {
    read(json::array());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("tokenizer_config.json: expected a JSON object, found list"),
        std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace magix
