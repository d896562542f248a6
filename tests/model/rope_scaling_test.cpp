// YaRN rope scaling: config.json parsing and the frequencies and attention factor against values
// dumped from transformers 5.23 (_compute_yarn_parameters), bit for bit; and every fixture
// model's rotary frequencies against the inv_freq its reference.json recorded.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <tuple>

#include "magix/error.hpp"
#include "magix/model.hpp"
#include "model/rope_frequencies.hpp"

namespace magix {
namespace {

using nlohmann::json;

const std::filesystem::path kModels = std::filesystem::path(MAGIX_FIXTURES_DIR) / "models";

json llama(int64_t hidden, int64_t heads, int64_t max_pos, json rope) {
  return json{{"model_type", "llama"},
              {"vocab_size", 32},
              {"hidden_size", hidden},
              {"intermediate_size", 64},
              {"num_hidden_layers", 1},
              {"num_attention_heads", heads},
              {"max_position_embeddings", max_pos},
              {"rope_parameters", std::move(rope)}};
}

struct YarnCase {
  const char* name;
  json config;
  double attention_scaling;
  std::vector<float> inv_freq;
};

// Printed by transformers 5.23.0 (ROPE_INIT_FUNCTIONS["yarn"](LlamaConfig(...))) with %.9g.
std::vector<YarnCase> yarn_cases() {
  return {
      {"qwen-like (factor 4 over 32768, theta 1e6, default betas)",
       llama(1024, 16, 131072,
             {{"rope_type", "yarn"},
              {"rope_theta", 1000000.0},
              {"factor", 4.0},
              {"original_max_position_embeddings", 32768}}),
       1.138629436111989,
       {1.0f,
        0.649381638f,
        0.421696514f,
        0.273841977f,
        0.177827939f,
        0.115478203f,
        0.0749894157f,
        0.0486967526f,
        0.0316227786f,
        0.0205352511f,
        0.0133352149f,
        0.00865964312f,
        0.00515479548f,
        0.0030431177f,
        0.00177853031f,
        0.00102661771f,
        0.000583333371f,
        0.000324690831f,
        0.000175706868f,
        9.12806499e-05f,
        4.44569851e-05f,
        2.88695483e-05f,
        1.87473561e-05f,
        1.21741887e-05f,
        7.90569356e-06f,
        5.13381246e-06f,
        3.33380353e-06f,
        2.16491094e-06f,
        1.40585337e-06f,
        9.1293532e-07f,
        5.92843435e-07f,
        3.84981632e-07f}},
      {"mscale / mscale_all_dim, factor 40, truncate false",
       llama(512, 8, 4096,
             {{"rope_type", "yarn"},
              {"rope_theta", 10000.0},
              {"factor", 40.0},
              {"original_max_position_embeddings", 4096},
              {"mscale", 1.0},
              {"mscale_all_dim", 0.5},
              {"beta_fast", 32},
              {"beta_slow", 1},
              {"truncate", false}}),
       1.1557219901962608,
       {1.0f,
        0.749894202f,
        0.562341332f,
        0.421696514f,
        0.316227764f,
        0.237137362f,
        0.177827939f,
        0.133352146f,
        0.100000001f,
        0.0749894157f,
        0.0562341288f,
        0.0403675847f,
        0.0277108587f,
        0.0188600607f,
        0.0127031431f,
        0.00844623521f,
        0.00552406255f,
        0.00353525812f,
        0.00219573081f,
        0.00130510959f,
        0.000722638157f,
        0.000349887385f,
        0.000118387645f,
        3.3338034e-05f,
        2.49999994e-05f,
        1.87473543e-05f,
        1.40585325e-05f,
        1.05424124e-05f,
        7.90569447e-06f,
        5.92843435e-06f,
        4.44569832e-06f,
        3.33380353e-06f}},
      {"factor null (max_position / original), explicit attention_factor",
       llama(256, 8, 8192,
             {{"rope_type", "yarn"},
              {"rope_theta", 500000.0},
              {"factor", nullptr},
              {"original_max_position_embeddings", 2048},
              {"attention_factor", 0.9}}),
       0.9,
       {1.0f, 0.440366626f, 0.193922758f, 0.0747224614f, 0.028204523f, 0.0103502758f, 0.0036463323f,
        0.00120429229f, 0.000353553361f, 0.000155693109f, 6.85620471e-05f, 3.01924356e-05f,
        1.32957393e-05f, 5.85499947e-06f, 2.57834631e-06f, 1.13541762e-06f}},
  };
}

TEST(Yarn, FrequenciesAndAttentionFactorMatchTransformersBitForBit) {
  for (const YarnCase& yc : yarn_cases()) {
    const ModelConfig c = parse_model_config(yc.config, "cfg.json");
    ASSERT_EQ(c.rope_scaling.kind, RopeScaling::Kind::kYarn) << yc.name;
    EXPECT_EQ(c.rope_scaling.attention_scaling, static_cast<float>(yc.attention_scaling))
        << yc.name;
    const std::vector<float> got = rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling);
    ASSERT_EQ(got.size(), yc.inv_freq.size()) << yc.name;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i], yc.inv_freq[i]) << yc.name << " inv_freq[" << i << "]";
    }
  }
}

// gemma3_text reads rope_parameters per layer type; either may be yarn, each with its own
// frequencies and attention factor (the same transformers values as above).
TEST(Yarn, Gemma3TextPerLayerType) {
  const std::vector<YarnCase> cases = yarn_cases();
  const YarnCase& full = cases[0];
  const YarnCase& sliding = cases[1];
  const json j = {{"model_type", "gemma3_text"},
                  {"vocab_size", 32},
                  {"hidden_size", 64},
                  {"intermediate_size", 64},
                  {"num_hidden_layers", 2},
                  {"num_attention_heads", 4},
                  {"num_key_value_heads", 4},
                  {"head_dim", 64},
                  {"max_position_embeddings", 131072},
                  {"sliding_window_pattern", 2},
                  {"rope_parameters",
                   {{"full_attention", full.config.at("rope_parameters")},
                    {"sliding_attention", sliding.config.at("rope_parameters")}}}};
  const ModelConfig c = parse_model_config(j, "cfg.json");
  ASSERT_EQ(c.local_rope, (std::vector<char>{1, 0}));
  for (const auto& [name, yc, theta, scaling] :
       {std::tuple{"full", &full, c.rope_theta, c.rope_scaling},
        std::tuple{"sliding", &sliding, c.rope_local_theta, c.rope_local_scaling}}) {
    ASSERT_EQ(scaling.kind, RopeScaling::Kind::kYarn) << name;
    EXPECT_EQ(scaling.attention_scaling, static_cast<float>(yc->attention_scaling)) << name;
    EXPECT_EQ(rope_inv_freq(c.head_dim, theta, scaling), yc->inv_freq) << name;
  }
}

TEST(Yarn, ParsingDefaultsAndErrors) {
  json j = llama(64, 4, 256, {{"rope_type", "yarn"}, {"factor", 2.0}});
  RopeScaling s = parse_model_config(j, "cfg.json").rope_scaling;
  EXPECT_EQ(s.beta_fast, 32);
  EXPECT_EQ(s.beta_slow, 1);
  EXPECT_TRUE(s.truncate);
  EXPECT_EQ(s.original_max_position, 256);  // from max_position_embeddings
  // The older layout (rope_scaling with "type") and a top-level original_max_position_embeddings,
  // which wins over the dict's (as transformers' standardize_rope_params).
  json old = llama(64, 4, 256, nullptr);
  old.erase("rope_parameters");
  old["rope_scaling"] = {
      {"type", "yarn"}, {"factor", 2.0}, {"original_max_position_embeddings", 64}};
  old["original_max_position_embeddings"] = 128;
  EXPECT_EQ(parse_model_config(old, "cfg.json").rope_scaling.original_max_position, 128);

  auto error_of = [](const json& cfg) -> std::string {
    try {
      parse_model_config(cfg, "cfg.json");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  json no_factor = llama(64, 4, 256, {{"rope_type", "yarn"}});
  EXPECT_NE(error_of(no_factor).find("yarn rope needs 'factor'"), std::string::npos);
  json bad_factor = llama(64, 4, 256, {{"rope_type", "yarn"}, {"factor", -1.0}});
  EXPECT_NE(error_of(bad_factor).find("factor must be a positive"), std::string::npos);
  json bad_beta = llama(64, 4, 256, {{"rope_type", "yarn"}, {"factor", 2.0}, {"beta_fast", "x"}});
  EXPECT_NE(error_of(bad_beta).find("beta_fast"), std::string::npos);
  json bad_attn =
      llama(64, 4, 256, {{"rope_type", "yarn"}, {"factor", 2.0}, {"attention_factor", -1.0}});
  EXPECT_NE(error_of(bad_attn).find("attention_factor"), std::string::npos);
  json dynamic = llama(64, 4, 256, {{"rope_type", "dynamic"}, {"factor", 2.0}});
  EXPECT_NE(error_of(dynamic).find("rope type 'dynamic' is not supported"), std::string::npos);
}

// Each fixture's reference.json records the inv_freq and attention_scaling of the HF model
// (gemma3_text: one per layer type).
TEST(RopeOfFixtures, MatchTheReferenceBitForBit) {
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kModels)) {
    const auto ref_path = entry.path() / "reference.json";
    if (!std::filesystem::exists(ref_path)) continue;
    std::ifstream in(ref_path);
    const json ref = json::parse(in);
    if (!ref.contains("rope")) continue;
    const ModelConfig c = load_model_config(entry.path() / "config.json");
    // longrope: the factors of the fixture's forward (long past the original context).
    const bool long_context =
        c.rope_scaling.kind == RopeScaling::Kind::kLongRope &&
        ref.at("seq_len").get<int64_t>() > c.rope_scaling.original_max_position;
    const auto check = [&](const json& want, float theta, const RopeScaling& scaling,
                           const std::string& what) {
      const std::vector<float> got = rope_inv_freq(c.rope_dim(), theta, scaling, long_context);
      ASSERT_EQ(got.size(), want.at("inv_freq").size()) << what;
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i], want.at("inv_freq")[i].get<float>()) << what << " inv_freq[" << i << "]";
      }
      EXPECT_EQ(scaling.attention_scaling,
                static_cast<float>(want.at("attention_scaling").get<double>()))
          << what;
    };
    const json& rope = ref.at("rope");
    if (rope.contains("full_attention")) {
      // gemma3_text: one rope per layer type.
      check(rope.at("full_attention"), c.rope_theta, c.rope_scaling,
            entry.path().string() + " full_attention");
      check(rope.at("sliding_attention"), c.rope_local_theta, c.rope_local_scaling,
            entry.path().string() + " sliding_attention");
    } else {
      check(rope, c.rope_theta, c.rope_scaling, entry.path().string());
    }
    ++checked;
  }
  EXPECT_GE(checked, 13);
}

}  // namespace
}  // namespace magix
