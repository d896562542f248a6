// Phi-3: config.json parsing (defaults and refusals), the fused parameters and their specs, and
// the partition specs the decoder refuses for fused tensors.
#include <gtest/gtest.h>

#include "magix/error.hpp"
#include "magix/model.hpp"

namespace magix {
namespace {

using nlohmann::json;

json phi3() {
  return json{{"model_type", "phi3"},          {"vocab_size", 128},      {"hidden_size", 64},
              {"intermediate_size", 96},       {"num_hidden_layers", 2}, {"num_attention_heads", 4},
              {"num_key_value_heads", 2},      {"pad_token_id", 0},      {"eos_token_id", 2},
              {"max_position_embeddings", 128}};
}

std::string error_of(const json& j) {
  try {
    parse_model_config(j, "cfg.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Phi3Config, DefaultsOfPhi3Config) {
  json j = phi3();
  j.erase("max_position_embeddings");
  j["sliding_window"] = 7;
  const ModelConfig c = parse_model_config(j, "cfg.json");
  EXPECT_EQ(c.family, ModelFamily::kPhi3);
  EXPECT_EQ(family_name(c.family), "phi3");
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.sliding_window, std::vector<int64_t>(2, 7));
  EXPECT_FALSE(c.attention_bias || c.o_proj_bias || c.mlp_bias || c.tie_word_embeddings);
  EXPECT_EQ(c.activation, Activation::kSilu);
  EXPECT_EQ(c.bos_token_id, 1);
  j = phi3();
  j["sliding_window"] = nullptr;
  EXPECT_EQ(parse_model_config(j, "cfg.json").sliding_window, std::vector<int64_t>(2, 0));
}

TEST(Phi3Config, UnsupportedFieldsAreClearErrors) {
  json longrope = phi3();  // head_dim 16: 8 factors each
  longrope["rope_scaling"] = {{"type", "longrope"},
                              {"short_factor", json::array({1.0, 1.0})},
                              {"long_factor", json::array({2.0, 2.0})}};
  longrope["original_max_position_embeddings"] = 32;
  EXPECT_NE(error_of(longrope).find("short_factor has 2 entries, expected 8"), std::string::npos)
      << error_of(longrope);
  longrope["rope_scaling"]["short_factor"] = json::array({1, 1, 1, 1, 1, 1, 1, -1});
  EXPECT_NE(error_of(longrope).find("short_factor entries must be positive"), std::string::npos)
      << error_of(longrope);
  json yarn = phi3();  // Phi3Config reads yarn as longrope
  yarn["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 2.0}};
  EXPECT_NE(error_of(yarn).find("longrope needs 'short_factor'"), std::string::npos)
      << error_of(yarn);
  json linear = phi3();
  linear["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  EXPECT_NE(error_of(linear).find("not valid for phi3"), std::string::npos) << error_of(linear);
  for (const double bad : {0.0, -0.5, 1.5}) {
    json partial = phi3();
    partial["partial_rotary_factor"] = bad;
    EXPECT_NE(error_of(partial).find("partial_rotary_factor must be in (0, 1]"), std::string::npos)
        << error_of(partial);
  }
  json odd = phi3();
  odd["partial_rotary_factor"] = 0.1;  // int(16 * 0.1) = 1
  EXPECT_NE(error_of(odd).find("partial_rotary_factor 0.1 of head_dim 16 rotates 1 dims: must be "
                               "even and > 0"),
            std::string::npos)
      << error_of(odd);
  json llama = phi3();
  llama["model_type"] = "llama";
  llama["partial_rotary_factor"] = 0.5;
  EXPECT_NE(error_of(llama).find("partial_rotary_factor 0.5 is supported for phi3 only (llama "
                                 "rotates whole heads)"),
            std::string::npos)
      << error_of(llama);
  json dropout = phi3();
  dropout["resid_pdrop"] = 0.1;
  EXPECT_NE(error_of(dropout).find("resid_pdrop 0.1 is not supported"), std::string::npos)
      << error_of(dropout);
  json pad = phi3();
  pad.erase("pad_token_id");  // Phi3Config's default pad_token_id 32000 is beyond this vocab
  EXPECT_NE(error_of(pad).find("pad_token_id 32000 is outside the vocabulary"), std::string::npos)
      << error_of(pad);
}

TEST(Phi3Params, FusedWeightsWithPartSpecs) {
  const ModelConfig c = parse_model_config(phi3(), "cfg.json");
  const std::vector<ParamInfo> infos = expected_parameters(c);
  std::vector<std::string> names;
  for (const ParamInfo& p : infos) {
    if (p.name.starts_with("model.layers.0.")) names.push_back(p.name.substr(15));
  }
  EXPECT_EQ(names,
            (std::vector<std::string>{"input_layernorm.weight", "self_attn.o_proj.weight",
                                      "post_attention_layernorm.weight", "mlp.down_proj.weight",
                                      "self_attn.qkv_proj.weight", "mlp.gate_up_proj.weight"}));
  for (const ParamInfo& p : infos) {
    if (p.name.ends_with("qkv_proj.weight")) {
      EXPECT_EQ(p.global_shape, (Shape{64 + 32 + 32, 64}));
      EXPECT_EQ(p.part_rows, (std::vector<int64_t>{64, 32, 32}));
      EXPECT_EQ(p.spec.dims, (PartitionSpec{"model", "data"}.dims));
    } else if (p.name.ends_with("gate_up_proj.weight")) {
      EXPECT_EQ(p.global_shape, (Shape{192, 64}));
      EXPECT_EQ(p.part_rows, (std::vector<int64_t>{96, 96}));
    } else {
      EXPECT_TRUE(p.part_rows.empty()) << p.name;
    }
  }
}

// Specs the decoder refuses for fused tensors (a model split without parts is refused on model
// axes > 1: tests/mpi).
TEST(Phi3Params, UnsupportedFusedSpecsAreErrors) {
  const ModelConfig c = parse_model_config(phi3(), "cfg.json");
  const PartitionRules defaults = default_partition_rules("phi3");
  // Parts on a tensor that is not fused: refused by the decoder on any mesh.
  std::vector<ParamInfo> q = expected_parameters(c);
  RuleList rules = {
      {R"(o_proj\.weight$)", PartitionSpec({"data", "model"}, {{"a", "32"}, {"b", "32"}})}};
  for (const auto& r : defaults.rules()) rules.push_back(r);
  apply_partition_rules(q, PartitionRules(rules), c);
  Mesh mesh;
  shard_parameters(q, mesh);
  try {
    Decoder d(c, mesh, ParameterSet(q));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'model.layers.0.self_attn.o_proj.weight': partition "
                                         "spec (data, model) parts [a: 32, b: 32] gives parts, "
                                         "but the tensor is not fused"),
              std::string::npos)
        << e.what();
  }
  // Part sizes that do not match the tensor: an error naming it when the rules are applied.
  std::vector<ParamInfo> r = expected_parameters(c);
  RuleList wrong = {{R"(qkv_proj\.weight$)",
                     PartitionSpec({"model", "data"}, {{"q", "num_attention_heads*head_dim"},
                                                       {"kv", "num_key_value_heads*head_dim"}})}};
  try {
    apply_partition_rules(r, PartitionRules(wrong), c);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("qkv_proj.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("sum to 96 rows"), std::string::npos) << e.what();
  }
}

// Phi-4-mini's partial rotary embeddings: int(head_dim · factor) rotated dims (as transformers
// truncates), from the top level or the rope dict; longrope then needs half as many factors.
TEST(Phi3Config, PartialRotaryFactor) {
  EXPECT_EQ(parse_model_config(phi3(), "cfg.json").rope_dim(), 16);
  for (const auto& [factor, dims] : {std::pair{0.75, 12}, std::pair{0.5, 8}, std::pair{0.3, 4}}) {
    json j = phi3();
    j["partial_rotary_factor"] = factor;
    const ModelConfig c = parse_model_config(j, "cfg.json");
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_EQ(c.rope_dim(), dims) << factor;
  }
  json in_dict = phi3();
  in_dict["rope_parameters"] = {{"rope_type", "default"}, {"partial_rotary_factor", 0.5}};
  EXPECT_EQ(parse_model_config(in_dict, "cfg.json").rope_dim(), 8);
  json longrope = phi3();
  longrope["partial_rotary_factor"] = 0.5;
  longrope["original_max_position_embeddings"] = 32;
  longrope["rope_scaling"] = {{"type", "longrope"},
                              {"short_factor", json::array({1, 1, 1, 1})},
                              {"long_factor", json::array({1, 2, 3, 4})}};
  EXPECT_EQ(parse_model_config(longrope, "cfg.json").rope_scaling.long_factor.size(), 4u);
  longrope["rope_scaling"]["long_factor"] = json::array({1, 2, 3, 4, 5, 6, 7, 8});
  EXPECT_NE(error_of(longrope).find("long_factor has 8 entries, expected 4 (half the 8 rotated "
                                    "dims)"),
            std::string::npos)
      << error_of(longrope);
}

}  // namespace
}  // namespace magix
