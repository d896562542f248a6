// The split of a GGUF byte-level BPE tokenizer by its tokenizer.ggml.pre name, against
// transformers loading the same files (tools/reference/make_gguf_pre_fixtures.py): one file per
// name, a vocabulary whose merges join what some splits cut apart, so that each split gives its
// own ids (Llama 3, Qwen 2, Qwen 3.5, Tekken, GPT-4o; an unknown name: GPT-2's split).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "../io/io_test_util.hpp"
#include "magix/tokenizer.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

TEST(GgufPreTokenizer, EveryNamedSplitGivesTransformersIds) {
  test::TempDir cache;  // the folder magix makes of each file
  ::setenv("MAGIX_CACHE", cache.path().c_str(), 1);
  const fs::path dir = fs::path(MAGIX_FIXTURES_DIR) / "gguf";
  const json expected = json::parse(std::ifstream(dir / "bpe_pre_expected.json"));
  ASSERT_EQ(expected.size(), 7u);
  std::set<std::string> distinct;
  for (const auto& [pre, texts] : expected.items()) {
    SCOPED_TRACE(pre);
    const Tokenizer tok = Tokenizer::load((dir / fmt::format("bpe_pre_{}.gguf", pre)).string());
    std::string all;
    for (const auto& t : texts) {
      const auto want = t["ids"].get<std::vector<int32_t>>();
      EXPECT_EQ(tok.encode(t["text"].get<std::string>(), true), want) << t["text"];
      all += json(want).dump();
    }
    distinct.insert(all);
  }
  // llama4 shares GPT-4o's split; every other name has its own.
  EXPECT_EQ(distinct.size(), 6u);
  ::unsetenv("MAGIX_CACHE");
}

}  // namespace
}  // namespace magix
