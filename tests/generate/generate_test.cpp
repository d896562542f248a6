// Generation against HF transformers' generate (fixtures from
// tools/reference/make_generation_fixtures.py), and the batch-independence of sampling.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "magix/error.hpp"
#include "magix/generate.hpp"
#include "magix/model.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<std::vector<int32_t>>;

struct Fixture {
  std::string model;  // the fixture model generated from (tests/fixtures/models/<model>)
  Ids prompts, greedy, penalty_greedy;
  int64_t max_new_tokens = 0;
  int32_t eos = 0, pad = 0;
  float penalty = 1;
  // false where the batch's rows depend on each other (longrope switching for the whole batch):
  // a prompt alone then differs from its row of the batch, in transformers as in magix.
  bool batch_rows_independent = true;
};

Fixture read_fixture(const std::string& name) {
  std::ifstream in(fs::path(MAGIX_FIXTURES_DIR) / "generation" / (name + ".json"));
  EXPECT_TRUE(in.good()) << name;
  const nlohmann::json j = nlohmann::json::parse(in);
  Fixture f;
  f.model = j.value("model", name);
  f.prompts = j.at("prompts").get<Ids>();
  f.greedy = j.at("greedy").get<Ids>();
  f.penalty_greedy = j.at("penalty_greedy").get<Ids>();
  f.max_new_tokens = j.at("max_new_tokens").get<int64_t>();
  f.eos = j.at("eos_token_id").get<int32_t>();
  f.pad = j.at("pad_token_id").get<int32_t>();
  f.penalty = j.at("penalty").get<float>();
  f.batch_rows_independent = j.value("batch_rows_independent", true);
  return f;
}

std::string model_dir(const std::string& name) {
  return (fs::path(MAGIX_FIXTURES_DIR) / "models" / name).string();
}

GenerateOptions fixture_options(const Fixture& f) {
  GenerateOptions o;
  o.max_new_tokens = f.max_new_tokens;
  o.eos_ids = {f.eos};
  o.pad_id = f.pad;
  return o;
}

Ids tokens_of(const std::vector<GenerationResult>& results) {
  Ids out;
  for (const GenerationResult& r : results) out.push_back(r.tokens);
  return out;
}

class GenerateFixture : public ::testing::TestWithParam<std::string> {};

// One left-padded batch of 4 prompts of different lengths: the same ids as HF greedy.
TEST_P(GenerateFixture, GreedyEqualsTransformers) {
  const Fixture f = read_fixture(GetParam());
  Mesh mesh;
  Generator gen(load_decoder(model_dir(f.model), mesh));
  GenerateOptions o = fixture_options(f);
  EXPECT_EQ(tokens_of(gen.generate(f.prompts, o)), f.greedy);
  // More padding (pad_to_multiple_of) changes nothing.
  o.pad_to_multiple_of = 16;
  EXPECT_EQ(tokens_of(gen.generate(f.prompts, o)), f.greedy);
}

// Repetition penalty (HF semantics) on each prompt alone, and on the padded batch (magix never
// penalises padding, so the batch gives the same ids).
TEST_P(GenerateFixture, RepetitionPenaltyEqualsTransformers) {
  const Fixture f = read_fixture(GetParam());
  Mesh mesh;
  Generator gen(load_decoder(model_dir(f.model), mesh));
  GenerateOptions o = fixture_options(f);
  o.sampling.repetition_penalty = f.penalty;
  for (size_t i = 0; i < f.prompts.size(); ++i) {
    EXPECT_EQ(tokens_of(gen.generate({f.prompts[i]}, o))[0], f.penalty_greedy[i]) << "prompt " << i;
  }
  if (f.batch_rows_independent) EXPECT_EQ(tokens_of(gen.generate(f.prompts, o)), f.penalty_greedy);
}

// A bf16-stored decoder is generated from in fp32 after widening: the same as a decoder holding
// the rounded weights in fp32.
TEST_P(GenerateFixture, Bf16WeightsAreWidened) {
  const Fixture f = read_fixture(GetParam());
  Mesh mesh;
  Decoder bf16 = load_decoder(model_dir(f.model), mesh, {.weight_dtype = DType::kBF16});
  ParameterSet rounded(bf16.params().infos());
  for (size_t i = 0; i < rounded.size(); ++i)
    rounded.tensor(i) = bf16.params().tensor(i).to(DType::kF32);
  Generator a(bf16), b(bf16.config(), mesh, rounded);
  const GenerateOptions o = fixture_options(f);
  EXPECT_EQ(tokens_of(a.generate(f.prompts, o)), tokens_of(b.generate(f.prompts, o)));
}

INSTANTIATE_TEST_SUITE_P(Models, GenerateFixture,
                         ::testing::Values("llama_gqa", "llama_mqa_bias", "mistral_window", "gemma",
                                           "qwen2", "qwen2_tied", "qwen3", "gemma2", "gemma3_text",
                                           "llama_yarn", "phi3", "phi3_longrope",
                                           "phi3_longrope_short", "phi3_partial_rotary",
                                           "phi3_longrope_cross"));

// LongRoPE (original context 16) across the switch: the fixture phi3_longrope_cross (prompts of
// 10-13 tokens, 12 new) crosses it mid-generation, where magix recomputes the whole cache with the
// long factors as transformers does, in a batch (GreedyEqualsTransformers: the longest prompt's
// positions trigger it for every row) and for each prompt alone (RepetitionPenalty...). Here: a
// crossing generation continues the one that stops just before the switch.
TEST(Generate, LongRopeGenerationAcrossTheSwitchContinuesTheShortOne) {
  const Fixture f = read_fixture("phi3_longrope_cross");
  Mesh mesh;
  Generator gen(load_decoder(model_dir(f.model), mesh));
  GenerateOptions o = fixture_options(f);
  o.eos_ids = {};
  for (size_t i = 0; i < f.prompts.size(); ++i) {
    o.max_new_tokens = 16 - std::ssize(f.prompts[i]);  // within 16 positions: short factors only
    const Ids::value_type before = gen.generate({f.prompts[i]}, o)[0].tokens;
    o.max_new_tokens = f.max_new_tokens;
    const Ids::value_type across = gen.generate({f.prompts[i]}, o)[0].tokens;
    ASSERT_EQ(std::ssize(across), f.max_new_tokens) << "prompt " << i;
    EXPECT_EQ(Ids::value_type(across.begin(), across.begin() + std::ssize(before)), before)
        << "prompt " << i;
  }
}

// Stopping: an EOS id ends a row at its first occurrence (included); max_length counts the
// prompt's own tokens; max_new_tokens bounds the rest.
TEST(Generate, StopsAtEosAndLengthLimits) {
  const Fixture f = read_fixture("llama_gqa");
  Mesh mesh;
  Generator gen(load_decoder(model_dir("llama_gqa"), mesh));
  GenerateOptions o = fixture_options(f);
  const int32_t stop_id = f.greedy[0][4];
  o.eos_ids = {stop_id};
  const auto res = gen.generate(f.prompts, o);
  for (size_t i = 0; i < f.prompts.size(); ++i) {
    const auto& want = f.greedy[i];
    const auto it = std::find(want.begin(), want.end(), stop_id);
    const Ids::value_type prefix(want.begin(), it == want.end() ? it : it + 1);
    EXPECT_EQ(res[i].tokens, prefix) << "prompt " << i;
    EXPECT_EQ(res[i].finish, it == want.end() ? FinishReason::kLength : FinishReason::kEos);
  }
  EXPECT_EQ(res[0].tokens.size(), 5u);

  o = fixture_options(f);
  o.max_new_tokens = 0;
  o.max_length = 10;  // prompts of 5, 9, 2, 7 tokens: 5, 1, 8, 3 new tokens
  const auto lim = gen.generate(f.prompts, o);
  for (size_t i = 0; i < f.prompts.size(); ++i) {
    const size_t n = 10 - f.prompts[i].size();
    EXPECT_EQ(lim[i].tokens, Ids::value_type(f.greedy[i].begin(), f.greedy[i].begin() + n));
    EXPECT_EQ(lim[i].finish, FinishReason::kLength);
  }
  o.max_length = 3;  // prompt 1 (9 tokens) is already past the limit: nothing generated
  EXPECT_TRUE(gen.generate({f.prompts[1]}, o)[0].tokens.empty());
}

// A prompt's sampled output depends on (seed, its index, token index) only: not on the batch it
// is in, its row, or the other prompts. Another seed gives another output.
TEST(Generate, SamplingIsReproducibleAndBatchIndependent) {
  const Fixture f = read_fixture("qwen2");
  Mesh mesh;
  Generator gen(load_decoder(model_dir("qwen2"), mesh));
  GenerateOptions o = fixture_options(f);
  o.sampling.sample = true;
  o.sampling.temperature = 1.5f;  // flat: many different tokens are likely
  o.sampling.top_k = 50;
  o.sampling.top_p = 0.95f;
  o.sampling.seed = 7;
  const std::vector<int64_t> index = {10, 11, 12, 13};
  const Ids all = tokens_of(gen.generate(f.prompts, o, index));
  EXPECT_EQ(tokens_of(gen.generate(f.prompts, o, index)), all);
  for (size_t i = 0; i < f.prompts.size(); ++i) {
    EXPECT_EQ(tokens_of(gen.generate({f.prompts[i]}, o, {index[i]}))[0], all[i]) << i;
  }
  const Ids reversed = tokens_of(
      gen.generate({f.prompts[3], f.prompts[2], f.prompts[1], f.prompts[0]}, o, {13, 12, 11, 10}));
  EXPECT_EQ(reversed, Ids({all[3], all[2], all[1], all[0]}));
  EXPECT_NE(all, f.greedy);  // not greedy in disguise
  o.sampling.seed = 8;
  EXPECT_NE(tokens_of(gen.generate(f.prompts, o, index)), all);
  // top_k = 1 is greedy whatever the temperature and seed.
  o.sampling.top_k = 1;
  EXPECT_EQ(tokens_of(gen.generate(f.prompts, o, index)), f.greedy);
}

TEST(Generate, BadOptionsAndPromptsAreErrors) {
  Mesh mesh;
  Generator gen(load_decoder(model_dir("qwen2"), mesh));
  GenerateOptions o;
  EXPECT_THROW(gen.generate({{}}, o), Error);
  EXPECT_THROW(gen.generate({{5, 128}}, o), Error);  // vocab is 128
  o.sampling.sample = true;
  o.sampling.temperature = 0;
  EXPECT_THROW(gen.generate({{5}}, o), Error);
  o.sampling.temperature = 1;
  o.sampling.top_p = 0;
  EXPECT_THROW(gen.generate({{5}}, o), Error);
  o.sampling.top_p = 1;
  o.stop = {"x"};  // stop strings need a tokenizer
  EXPECT_THROW(gen.generate({{5}}, o), Error);
}

}  // namespace
}  // namespace magix
