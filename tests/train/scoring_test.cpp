// magix score on conversations (--use_chat_template, --train_on) against transformers: the same
// tokens, the same assistant mask and the same per-example NLL
// (tools/reference/make_score_chat_fixture.py).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "magix/error.hpp"
#include "magix/evaluate.hpp"
#include "magix/mesh.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
const fs::path kFixtures = MAGIX_FIXTURES_DIR;

ScoreArgs chat_args(const std::string& train_on) {
  ScoreArgs a;
  a.model_name_or_path = (kFixtures / "models/llama_gqa").string();
  a.tokenizer_name_or_path = (kFixtures / "score_chat/tokenizer").string();
  a.input = (kFixtures / "score_chat/conversations.jsonl").string();
  a.data_field = "messages";
  a.use_chat_template = true;
  a.train_on = train_on;
  a.batch_size = 2;  // 3 examples: a partial last pass
  a.mesh_shape = {1, 1};
  return a;
}

TEST(Score, ConversationsMatchTransformers) {
  const nlohmann::json ref =
      nlohmann::json::parse(std::ifstream(kFixtures / "score_chat/expected.json"));
  const auto& want = ref.at("examples");
  Mesh mesh;
  for (const std::string train_on : {"all", "assistant"}) {
    SCOPED_TRACE("train_on " + train_on);
    const ScoreArgs a = chat_args(train_on);
    const std::vector<Example> examples = read_score_examples(a, 256);
    ASSERT_EQ(examples.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(examples[i].ids, want[i].at("ids").get<std::vector<int32_t>>()) << i;
      if (train_on == "assistant") {
        std::vector<uint8_t> mask = want[i].at("assistant_mask").get<std::vector<uint8_t>>();
        EXPECT_EQ(examples[i].loss_mask, mask) << i;
      }
    }
    const EvalResult r = run_scoring(a, mesh);
    ASSERT_EQ(r.nll_per_example.size(), want.size());
    double nll = 0;
    int64_t tokens = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const auto& w = want[i].at(train_on);
      EXPECT_EQ(r.tokens_per_example[i], w.at("tokens").get<int64_t>()) << i;
      const double wn = w.at("nll");
      EXPECT_NEAR(r.nll_per_example[i], wn, 1e-5 * wn) << i;
      nll += wn;
      tokens += w.at("tokens").get<int64_t>();
    }
    EXPECT_NEAR(r.mean_nll(), nll / static_cast<double>(tokens), 1e-5 * nll / tokens);
  }
}

TEST(Score, BadConversationArgumentsAreClearErrors) {
  ScoreArgs a = chat_args("assistant");
  a.use_chat_template = false;  // assistant masks need conversations
  EXPECT_THROW(validate_score_args(a), Error);
  a = chat_args("all");
  a.data_field.clear();  // ids files have no conversations
  EXPECT_THROW(validate_score_args(a), Error);
  // A tokenizer without a chat template: an error naming the built-in format's option.
  a = chat_args("all");
  a.tokenizer_name_or_path = (kFixtures / "train/gqa_tokenizer").string();
  try {
    read_score_examples(a, 256);
    FAIL() << "a tokenizer without a template must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--chat_template_name builtin"), std::string::npos)
        << e.what();
  }
  a.chat_template_name = "builtin";
  EXPECT_EQ(read_score_examples(a, 256).size(), 3u);
}

TEST(Score, ExampleBatchLaysRowsOutAsTheLoader) {
  const std::vector<Example> ex = {{{5, 6, 7}, {1, 1, 0}}, {{9}, {1}}};
  const TokenBatch b = make_example_batch(ex, 3);
  ASSERT_EQ(b.batch, 2);
  ASSERT_EQ(b.seq, 2);
  EXPECT_EQ(b.input_ids, (std::vector<int32_t>{5, 6, 9, 3}));
  EXPECT_EQ(b.targets, (std::vector<int32_t>{6, TokenBatch::kIgnore, TokenBatch::kIgnore,
                                             TokenBatch::kIgnore}));
  EXPECT_EQ(b.key_valid, (std::vector<int32_t>{1, 1, 1, 0}));
  EXPECT_TRUE(b.segments.empty());
}

}  // namespace
}  // namespace magix
