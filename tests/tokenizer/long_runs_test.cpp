// Runs of megabytes in one pre-token: PCRE2's default match limit stopped the llama3/qwen3 split
// pattern on 10 MB of whitespace ("PCRE2 error -47"). The expected ids come from HF tokenizers
// (0.22, /work/refenv): their count, ends and an FNV-1a hash of the whole list.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tokenizer_test_util.hpp"

namespace magix::test {
namespace {

uint64_t fnv1a(const std::vector<int32_t>& ids) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int32_t id : ids) {
    h ^= static_cast<uint32_t>(id);
    h *= 0x100000001b3ull;
  }
  return h;
}

// 10 MB of " \t\n  \r\n   " repeated (what HF encodes in ~12 s).
std::string mixed_whitespace() {
  std::string unit = " \t\n  \r\n   ", s;
  s.reserve(10'000'000);
  while (s.size() < 10'000'000) s += unit;
  s.resize(10'000'000);
  return s;
}

std::string digits() {
  std::string s;
  s.reserve(10'000'000);
  for (int k = 0; k < 1'000'000; ++k) s += "1234567890";
  return s;
}

TEST(TokenizerLongRuns, MixedWhitespaceMatchesHf) {
  const Tokenizer* llama = shared_tokenizer("llama3");
  if (llama == nullptr) GTEST_SKIP() << "no llama3 in ../shared/tokenizers";
  auto ids = llama->encode(mixed_whitespace());
  ASSERT_EQ(ids.size(), 2000001u);
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + 3),
            (std::vector<int32_t>{17934, 10636, 35583}));
  EXPECT_EQ(ids.back(), 262);
  EXPECT_EQ(fnv1a(ids), 0x1b6dae0e18e461d6ull);
}

TEST(TokenizerLongRuns, DigitsMatchHf) {
  const Tokenizer* llama = shared_tokenizer("llama3");
  if (llama == nullptr) GTEST_SKIP() << "no llama3 in ../shared/tokenizers";
  auto ids = llama->encode(digits());
  ASSERT_EQ(ids.size(), 3333334u);
  EXPECT_EQ(fnv1a(ids), 0x660f21e575d6311dull);
}

TEST(TokenizerLongRuns, QwenMixedWhitespaceMatchesHf) {
  const Tokenizer* qwen = shared_tokenizer("qwen3");
  if (qwen == nullptr) GTEST_SKIP() << "no qwen3 in ../shared/tokenizers";
  auto ids = qwen->encode(mixed_whitespace());
  ASSERT_EQ(ids.size(), 2000001u);
  EXPECT_EQ(fnv1a(ids), 0x24f541b4377992bcull);
}

TEST(TokenizerLongRuns, TenMillionTabsEncode) {
  // HF tokenizers itself stops here (Oniguruma's retry-limit-in-match) and so did magix; the
  // ids follow what HF gives for shorter runs: one token per 16 tabs.
  const Tokenizer* llama = shared_tokenizer("llama3");
  if (llama == nullptr) GTEST_SKIP() << "no llama3 in ../shared/tokenizers";
  auto ids = llama->encode(std::string(10'000'000, '\t'));
  ASSERT_EQ(ids.size(), 625000u);
  EXPECT_EQ(fnv1a(ids), 0xbaa6cf684c1f686dull);
}

}  // namespace
}  // namespace magix::test
