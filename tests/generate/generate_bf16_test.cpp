// Generation with bf16 mixed precision (--bf16: weights kept and streamed in bf16): every greedy
// token the generator picks is (within bf16 tolerance) the argmax of the training decoder's
// logits on the same prefix, in bf16 and in fp32 — prefill and the KV-cache decode steps compute
// the decoder's function. Batched generation equals one prompt at a time.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "magix/generate.hpp"
#include "magix/model.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<std::vector<int32_t>>;

std::string model_dir(const std::string& name) {
  return (fs::path(MAGIX_FIXTURES_DIR) / "models" / name).string();
}

// How far the logit of `token` at the last position of `row` is below the row's max, with the
// decoder's logits (1, T, V) for the whole sequence.
float gap_to_max(Decoder& model, const std::vector<int32_t>& row, int32_t token) {
  const Tensor logits = model.logits(make_causal_batch({row}));
  const int64_t V = logits.dim(2), T = logits.dim(1);
  const float* last = logits.data<float>() + (T - 1) * V;
  return *std::max_element(last, last + V) - last[token];
}

class GenerateBf16 : public ::testing::TestWithParam<std::string> {};

TEST_P(GenerateBf16, GreedyTokensAreTheDecodersArgmax) {
  std::ifstream in(fs::path(MAGIX_FIXTURES_DIR) / "generation" / (GetParam() + ".json"));
  const nlohmann::json j = nlohmann::json::parse(in);
  const Ids prompts = j.at("prompts").get<Ids>();
  GenerateOptions o;
  o.max_new_tokens = j.at("max_new_tokens").get<int64_t>();
  o.eos_ids = {j.at("eos_token_id").get<int32_t>()};
  o.pad_id = j.at("pad_token_id").get<int32_t>();
  Mesh mesh;
  const DecoderOptions bf16{.compute_dtype = DType::kBF16};
  Decoder model_bf16 = load_decoder(model_dir(GetParam()), mesh, bf16);
  Decoder model_f32 = load_decoder(model_dir(GetParam()), mesh);
  Generator gen(model_bf16);
  const auto batched = gen.generate(prompts, o);
  ASSERT_EQ(batched.size(), prompts.size());
  float worst_bf16 = 0, worst_f32 = 0;
  for (size_t p = 0; p < prompts.size(); ++p) {
    // The same prompt alone gives the same tokens.
    EXPECT_EQ(gen.generate({prompts[p]}, o)[0].tokens, batched[p].tokens) << "prompt " << p;
    std::vector<int32_t> row = prompts[p];
    for (int32_t t : batched[p].tokens) {
      worst_bf16 = std::max(worst_bf16, gap_to_max(model_bf16, row, t));
      worst_f32 = std::max(worst_f32, gap_to_max(model_f32, row, t));
      row.push_back(t);
    }
  }
  // The fixtures' logits are O(1-10); bf16 rounding of weights and GEMM inputs moves them by
  // ~1e-2 at most.
  EXPECT_LE(worst_bf16, 5e-2) << "a token the bf16 decoder ranks below its argmax";
  EXPECT_LE(worst_f32, 1e-1) << "a token the fp32 decoder ranks far below its argmax";
  RecordProperty("worst_gap_bf16", std::to_string(worst_bf16));
  RecordProperty("worst_gap_f32", std::to_string(worst_f32));
}

INSTANTIATE_TEST_SUITE_P(Models, GenerateBf16,
                         ::testing::Values("llama_gqa", "llama_mqa_bias", "mistral_window", "gemma",
                                           "qwen2", "qwen2_tied", "qwen3", "gemma2",
                                           "gemma3_text"));

}  // namespace
}  // namespace magix
