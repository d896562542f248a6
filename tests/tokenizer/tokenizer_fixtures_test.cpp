// Ids, offsets and decodes against HF tokenizers 0.23.3 (fixtures from make_tokenizer_fixtures.py)
// for the trained fixture tokenizers and the real ones in ../shared/tokenizers.
#include <gtest/gtest.h>

#include "tokenizer_test_util.hpp"

namespace magix::test {
namespace {

std::string show(const std::string& text) {
  return text.size() > 80 ? text.substr(0, 80) + "..." : text;
}

void check_against_fixture(const Tokenizer& tok, const std::string& name, bool check_offsets) {
  const auto cases = read_cases(name);
  ASSERT_GT(cases.size(), 30u);
  for (const auto& c : cases) {
    SCOPED_TRACE(name + ": " + show(c.text));
    const auto enc = tok.encode_with_offsets(c.text, true);
    EXPECT_EQ(enc.ids, c.ids);
    EXPECT_EQ(tok.encode(c.text, false), c.ids_no_special);
    EXPECT_EQ(enc.offsets.size(), enc.ids.size());
    if (check_offsets && enc.ids == c.ids) {
      EXPECT_EQ(enc.offsets, c.offsets);
    }
    EXPECT_EQ(tok.decode(c.ids, true), c.decoded);
    EXPECT_EQ(tok.decode(c.ids, false), c.decoded_with_special);
  }
}

TEST(TokenizerFixtures, TrainedByteLevel) {
  check_against_fixture(fixture_tokenizer("trained_bytelevel"), "trained_bytelevel", true);
}
TEST(TokenizerFixtures, TrainedSentencePiece) {
  check_against_fixture(fixture_tokenizer("trained_sentencepiece"), "trained_sentencepiece", true);
}
TEST(TokenizerFixtures, TrainedMetaspace) {
  check_against_fixture(fixture_tokenizer("trained_metaspace"), "trained_metaspace", true);
}

TEST(TokenizerFixtures, TrainedMisc) {
  check_against_fixture(fixture_tokenizer("trained_misc"), "trained_misc", true);
}

TEST(TokenizerFixtures, TrainedAffixes) {
  check_against_fixture(fixture_tokenizer("trained_affixes"), "trained_affixes", true);
}

class SharedTokenizers : public ::testing::TestWithParam<std::string> {};

TEST_P(SharedTokenizers, MatchesHfTokenizers) {
  const Tokenizer* tok = shared_tokenizer(GetParam());
  if (tok == nullptr) GTEST_SKIP() << "no " << (shared_tokenizers_dir() / GetParam()).string();
  check_against_fixture(*tok, GetParam(), true);
}

INSTANTIATE_TEST_SUITE_P(Real, SharedTokenizers,
                         ::testing::Values("llama3", "llama3_1", "mistral", "gemma3", "qwen3"));

}  // namespace
}  // namespace magix::test
