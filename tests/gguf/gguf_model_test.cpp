// A GGUF file as a model, against transformers loading the same file
// (tools/reference/make_gguf_fixtures.py): tiny_llama.gguf holds every block type, llama.cpp's
// q/k row order and a byte-level BPE tokenizer in its metadata. Token ids equal, logits within
// fp32 tolerance, greedy generation token-identical.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "../io/io_test_util.hpp"
#include "magix/error.hpp"
#include "magix/generate.hpp"
#include "magix/gguf_model.hpp"
#include "magix/hf_files.hpp"
#include "magix/model.hpp"
#include "magix/safetensors.hpp"
#include "magix/tokenizer.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kDir = fs::path(MAGIX_FIXTURES_DIR) / "gguf";

class GgufModel : public ::testing::Test {
 protected:
  void SetUp() override {
    ::setenv("MAGIX_CACHE", cache_.path().c_str(), 1);
    expected_ = json::parse(std::ifstream(kDir / "tiny_llama_expected.json"));
  }
  void TearDown() override { ::unsetenv("MAGIX_CACHE"); }
  std::string gguf() const { return (kDir / "tiny_llama.gguf").string(); }

  test::TempDir cache_;
  json expected_;
};

TEST_F(GgufModel, ConfigFromMetadata) {
  const fs::path dir = resolve_model_dir(gguf());
  EXPECT_EQ(dir.parent_path(), cache_.path() / "gguf");
  const json c = json::parse(std::ifstream(dir / "config.json"));
  for (const auto& [k, v] : expected_["config"].items()) EXPECT_EQ(c.at(k), v) << k;
  EXPECT_EQ(c.at("model_type"), "llama");
  // The same folder on the next call; a folder holding the file resolves to it too.
  EXPECT_EQ(resolve_model_dir(gguf()), dir);
  EXPECT_EQ(gguf_source_of(dir), fs::canonical(gguf()));
}

TEST_F(GgufModel, TokenIdsEqualTransformers) {
  const Tokenizer tok = Tokenizer::load(gguf());
  for (const auto& t : expected_["texts"]) {
    const std::string text = t["text"];
    SCOPED_TRACE(text);
    EXPECT_EQ(tok.encode(text, true), t["ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(tok.decode(t["ids"].get<std::vector<int32_t>>(), true), t["decoded"]);
  }
}

TEST_F(GgufModel, LogitsEqualTransformers) {
  Mesh mesh;
  Decoder model = load_decoder(gguf(), mesh);
  SafetensorsReader want(kDir / "tiny_llama_expected.safetensors");
  for (int i = 0; i < 2; ++i) {
    const auto ids = expected_["texts"][i]["ids"].get<std::vector<int32_t>>();
    const Tensor logits = model.logits(make_causal_batch({ids}, 0));
    const Tensor w = want.read_f32("logits." + std::to_string(i));
    ASSERT_EQ(logits.numel(), w.numel());
    double max_diff = 0, max_abs = 0;
    for (int64_t k = 0; k < w.numel(); ++k) {
      max_diff = std::max(max_diff, double(std::fabs(logits.data<float>()[k] - w.data<float>()[k])));
      max_abs = std::max(max_abs, double(std::fabs(w.data<float>()[k])));
    }
    EXPECT_LT(max_diff, 1e-4 * std::max(1.0, max_abs)) << "sequence " << i;
  }
}

TEST_F(GgufModel, GreedyGenerationEqualsTransformers) {
  Mesh mesh;
  Generator gen(load_decoder(gguf(), mesh));
  const json& g = expected_["generation"];
  const auto prompt = g["prompt_ids"].get<std::vector<int32_t>>();
  const auto want = g["generated_ids"].get<std::vector<int32_t>>();
  GenerateOptions o;
  o.max_new_tokens = static_cast<int64_t>(want.size());
  o.eos_ids = {701};  // transformers ran without an eos: one that is never generated here
  const auto res = gen.generate({prompt}, o);
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(std::vector<int32_t>(res[0].tokens.begin(), res[0].tokens.end()), want);
  // The chat template from the file's metadata gives the same prompt text.
  const Tokenizer tok = Tokenizer::load(gguf());
  EXPECT_EQ(tok.encode(g["templated"].get<std::string>(), true), prompt);
}

TEST_F(GgufModel, UnsupportedArchitectureIsAClearError) {
  // quants.gguf says llama but has no llama hyper-parameters: the missing key is named.
  try {
    resolve_model_dir((kDir / "quants.gguf").string());
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("llama.embedding_length"));
  }
  EXPECT_FALSE(fs::exists(cache_.path() / "gguf") &&
               !fs::is_empty(cache_.path() / "gguf"));  // nothing half-made left
}

}  // namespace
}  // namespace magix
