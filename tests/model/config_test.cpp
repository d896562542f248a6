// config.json parsing: layouts of real HF folders, family defaults, and clear errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "../common/json_wrong_types.hpp"
#include "magix/error.hpp"
#include "magix/model.hpp"

namespace magix {
namespace {

using nlohmann::json;

json llama() {
  return json{
      {"model_type", "llama"},    {"vocab_size", 256},      {"hidden_size", 64},
      {"intermediate_size", 128}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
      {"num_key_value_heads", 2}, {"rms_norm_eps", 1e-5},   {"max_position_embeddings", 256}};
}

// The message of the Error that parsing `j` throws ("" if none).
std::string error_of(const json& j) {
  try {
    parse_model_config(j, "cfg.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelConfig, LlamaDefaults) {
  ModelConfig c = parse_model_config(llama(), "cfg.json");
  EXPECT_EQ(c.family, ModelFamily::kLlama);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::kNone);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.sliding_window, std::vector<int64_t>(2, 0));
  EXPECT_EQ(c.activation, Activation::kSilu);
  json j = llama();
  j.erase("num_key_value_heads");
  EXPECT_EQ(parse_model_config(j, "x").num_kv_heads, 4);
}

TEST(ModelConfig, RopeOldAndNewLayoutsAgree) {
  json old_layout = llama();
  old_layout["rope_theta"] = 500000.0;
  old_layout["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  json new_layout = llama();
  new_layout["rope_parameters"] = {
      {"rope_type", "linear"}, {"factor", 2.0}, {"rope_theta", 500000.0}};
  for (const json& j : {old_layout, new_layout}) {
    ModelConfig c = parse_model_config(j, "x");
    EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::kLinear);
    EXPECT_FLOAT_EQ(c.rope_scaling.factor, 2.0f);
    EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  }
  json l3 = llama();
  l3["rope_scaling"] = {{"rope_type", "llama3"},
                        {"factor", 8.0},
                        {"low_freq_factor", 1.0},
                        {"high_freq_factor", 4.0},
                        {"original_max_position_embeddings", 64}};
  ModelConfig c = parse_model_config(l3, "x");
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::kLlama3);
  EXPECT_EQ(c.rope_scaling.original_max_position, 64);
  l3["rope_scaling"].erase("original_max_position_embeddings");
  EXPECT_EQ(parse_model_config(l3, "x").rope_scaling.original_max_position, 256);
}

TEST(ModelConfig, FamilyVariants) {
  json g = llama();
  g["model_type"] = "gemma";
  g["hidden_act"] = "gelu";  // legacy Gemma value: the tanh approximation
  g["head_dim"] = 12;
  ModelConfig c = parse_model_config(g, "x");
  EXPECT_EQ(c.activation, Activation::kGeluTanh);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FLOAT_EQ(c.norm_offset, 1.0f);
  EXPECT_FLOAT_EQ(c.embed_scale, 8.0f);
  EXPECT_EQ(c.head_dim, 12);
  ASSERT_TRUE(c.pad_token_id.has_value());
  EXPECT_EQ(*c.pad_token_id, 0);

  json q = llama();
  q["model_type"] = "qwen2";
  c = parse_model_config(q, "x");
  EXPECT_TRUE(c.attention_bias);
  EXPECT_FALSE(c.o_proj_bias);
  EXPECT_EQ(c.sliding_window, std::vector<int64_t>(2, 0));  // use_sliding_window false
  q["use_sliding_window"] = true;
  q["sliding_window"] = 8;
  q["max_window_layers"] = 1;
  EXPECT_EQ(parse_model_config(q, "x").sliding_window, (std::vector<int64_t>{0, 8}));

  json m = llama();
  m["model_type"] = "mistral";
  EXPECT_EQ(parse_model_config(m, "x").sliding_window, std::vector<int64_t>(2, 4096));
  m["sliding_window"] = nullptr;
  EXPECT_EQ(parse_model_config(m, "x").sliding_window, std::vector<int64_t>(2, 0));
  m["sliding_window"] = 6;
  EXPECT_EQ(parse_model_config(m, "x").sliding_window, std::vector<int64_t>(2, 6));

  json lb = llama();
  lb["attention_bias"] = true;
  lb["mlp_bias"] = true;
  c = parse_model_config(lb, "x");
  EXPECT_TRUE(c.attention_bias && c.o_proj_bias && c.mlp_bias);
}

// Qwen3Config, Gemma2Config and Gemma3TextConfig defaults of transformers 5.23.
TEST(ModelConfig, Qwen3Gemma2Gemma3Defaults) {
  json q = llama();
  q["model_type"] = "qwen3";
  q["num_attention_heads"] = 32;
  q.erase("num_key_value_heads");
  ModelConfig c = parse_model_config(q, "x");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_kv_heads, 32);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.sandwich_norms || c.attention_bias || c.o_proj_bias || c.tie_word_embeddings);
  EXPECT_EQ(c.sliding_window, std::vector<int64_t>(2, 0));
  q["attention_bias"] = true;  // Qwen3: q, k, v and o
  q["use_sliding_window"] = true;
  q["max_window_layers"] = 1;
  c = parse_model_config(q, "x");
  EXPECT_TRUE(c.attention_bias && c.o_proj_bias);
  EXPECT_EQ(c.sliding_window, (std::vector<int64_t>{0, 4096}));
  std::vector<ParamInfo> p = expected_parameters(c);
  auto find = [&](const std::string& name) -> const ParamInfo* {
    for (const ParamInfo& info : p) {
      if (info.name == name) return &info;
    }
    return nullptr;
  };
  ASSERT_NE(find("model.layers.1.self_attn.q_norm.weight"), nullptr);
  EXPECT_EQ(find("model.layers.1.self_attn.k_norm.weight")->global_shape, Shape{128});
  EXPECT_EQ(find("model.layers.1.self_attn.k_norm.weight")->spec.str(), "()");
  EXPECT_EQ(find("model.layers.0.pre_feedforward_layernorm.weight"), nullptr);

  json g = llama();
  g["model_type"] = "gemma2";
  g["num_hidden_layers"] = 3;
  g.erase("num_key_value_heads");
  g["hidden_act"] = "relu";  // not read: Gemma2Config's field is hidden_activation
  c = parse_model_config(g, "x");
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.activation, Activation::kGeluTanh);
  EXPECT_TRUE(c.sandwich_norms && c.tie_word_embeddings);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_FLOAT_EQ(c.norm_offset, 1.0f);
  EXPECT_FLOAT_EQ(c.embed_scale, 8.0f);
  EXPECT_DOUBLE_EQ(c.query_pre_attn_scalar, 256.0);
  EXPECT_FLOAT_EQ(c.attn_softcap, 50.0f);
  EXPECT_FLOAT_EQ(c.final_softcap, 30.0f);
  EXPECT_EQ(c.sliding_window, (std::vector<int64_t>{4096, 0, 4096}));
  EXPECT_TRUE(c.local_rope.empty());
  g["attn_logit_softcapping"] = nullptr;
  g["final_logit_softcapping"] = nullptr;
  g["sliding_window"] = nullptr;
  c = parse_model_config(g, "x");
  EXPECT_EQ(c.attn_softcap, 0.0f);
  EXPECT_EQ(c.final_softcap, 0.0f);
  EXPECT_EQ(c.sliding_window, std::vector<int64_t>(3, 0));
  p = expected_parameters(c);
  EXPECT_NE(find("model.layers.2.pre_feedforward_layernorm.weight"), nullptr);
  EXPECT_NE(find("model.layers.2.post_feedforward_layernorm.weight"), nullptr);
  EXPECT_EQ(find("model.layers.2.self_attn.q_norm.weight"), nullptr);

  // Gemma 3 text, older layout: rope_theta / rope_scaling for the full layers,
  // rope_local_base_freq for the sliding ones; sliding_window_pattern.
  json t = llama();
  t["model_type"] = "gemma3_text";
  t["num_hidden_layers"] = 7;
  c = parse_model_config(t, "x");
  EXPECT_FLOAT_EQ(c.rope_theta, 1e6f);
  EXPECT_FLOAT_EQ(c.rope_local_theta, 1e4f);
  EXPECT_EQ(c.final_softcap, 0.0f);
  EXPECT_EQ(c.local_rope, (std::vector<char>{1, 1, 1, 1, 1, 0, 1}));
  EXPECT_EQ(c.sliding_window, (std::vector<int64_t>{4096, 4096, 4096, 4096, 4096, 0, 4096}));
  EXPECT_TRUE(c.qk_norm && c.sandwich_norms);
  t["rope_theta"] = 500000.0;
  t["rope_local_base_freq"] = 50.0;
  t["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  t["sliding_window_pattern"] = 3;
  t["attn_logit_softcapping"] = 20.0;  // transformers 5.23's Gemma3Attention ignores it
  c = parse_model_config(t, "x");
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::kLinear);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 8.0f);
  EXPECT_FLOAT_EQ(c.rope_local_theta, 50.0f);
  EXPECT_EQ(c.rope_local_scaling.kind, RopeScaling::Kind::kNone);
  EXPECT_EQ(c.local_rope, (std::vector<char>{1, 1, 0, 1, 1, 0, 1}));
  EXPECT_EQ(c.attn_softcap, 0.0f);
  // The newer layout, keyed by layer type, says the same.
  json n = llama();
  n["model_type"] = "gemma3_text";
  n["num_hidden_layers"] = 7;
  n["layer_types"] = {"sliding_attention", "sliding_attention", "full_attention",
                      "sliding_attention", "sliding_attention", "full_attention",
                      "sliding_attention"};
  n["rope_parameters"] = {
      {"full_attention", {{"rope_type", "linear"}, {"factor", 8.0}, {"rope_theta", 500000.0}}},
      {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 50.0}}}};
  ModelConfig c2 = parse_model_config(n, "x");
  EXPECT_EQ(c2.local_rope, c.local_rope);
  EXPECT_EQ(c2.rope_theta, c.rope_theta);
  EXPECT_EQ(c2.rope_local_theta, c.rope_local_theta);
  EXPECT_EQ(c2.rope_scaling.kind, c.rope_scaling.kind);
}

TEST(ModelConfig, Gemma2Gemma3Errors) {
  json g = llama();
  g["model_type"] = "gemma2";
  g["attention_bias"] = true;
  EXPECT_NE(error_of(g).find("attention_bias true is not supported for gemma2"),
            std::string::npos)
      << error_of(g);
  g = llama();
  g["model_type"] = "gemma2";
  g["hidden_activation"] = "gelu";  // exact GELU: not implemented
  EXPECT_NE(error_of(g).find("hidden_activation 'gelu'"), std::string::npos) << error_of(g);
  g = llama();
  g["model_type"] = "gemma2";
  g["attn_logit_softcapping"] = -1.0;
  EXPECT_NE(error_of(g).find("attn_logit_softcapping"), std::string::npos) << error_of(g);
  g = llama();
  g["model_type"] = "gemma3_text";
  g["layer_types"] = {"sliding_attention"};
  EXPECT_NE(error_of(g).find("layer_types must list 2"), std::string::npos) << error_of(g);
  g = llama();
  g["model_type"] = "gemma3_text";
  g["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10.0}};
  EXPECT_NE(error_of(g).find("keyed by layer type"), std::string::npos) << error_of(g);
  g = llama();
  g["model_type"] = "gemma3_text";
  g["rope_parameters"] = {{"full_attention", {{"rope_type", "dynamic"}, {"factor", 2.0}}}};
  EXPECT_NE(error_of(g).find("full_attention layers"), std::string::npos) << error_of(g);
}

TEST(ModelConfig, ErrorsNameTheField) {
  json j = llama();
  j["rope_scaling"] = {{"rope_type", "longrope"}, {"factor", 4.0}};
  EXPECT_NE(error_of(j).find("longrope needs 'short_factor'"), std::string::npos) << error_of(j);
  j = llama();
  j["rope_parameters"] = {{"rope_type", "dynamic"}, {"factor", 4.0}};
  EXPECT_NE(error_of(j).find("'dynamic'"), std::string::npos);
  j = llama();
  j["rope_scaling"] = {{"rope_type", 3}};
  EXPECT_NE(error_of(j).find("\"rope_scaling\": \"rope_type\" must be a string"),
            std::string::npos);
  j = llama();
  j["attention_dropout"] = 0.1;
  EXPECT_NE(error_of(j).find("attention_dropout"), std::string::npos);
  j = llama();
  j.erase("hidden_size");
  EXPECT_NE(error_of(j).find("\"hidden_size\" is missing"), std::string::npos);
  j = llama();
  j["model_type"] = "gpt2";
  EXPECT_NE(error_of(j).find("model_type 'gpt2'"), std::string::npos);
  j = llama();
  j["hidden_act"] = "relu";
  EXPECT_NE(error_of(j).find("hidden_act 'relu'"), std::string::npos);
  j = llama();
  j["num_key_value_heads"] = 3;
  EXPECT_NE(error_of(j).find("num_key_value_heads"), std::string::npos);
  j = llama();
  j["vocab_size"] = "many";
  EXPECT_NE(error_of(j).find("\"vocab_size\" must be an integer"), std::string::npos);
  j = llama();
  j["model_type"] = "gemma";
  j["use_bidirectional_attention"] = true;
  EXPECT_NE(error_of(j).find("use_bidirectional_attention"), std::string::npos);
  j = llama();
  j["some_unknown_key"] = 5;  // ignored
  EXPECT_EQ(error_of(j), "");
}

TEST(ModelConfig, ExpectedParametersAndSpecs) {
  json j = llama();
  j["attention_bias"] = true;
  ModelConfig c = parse_model_config(j, "x");
  std::vector<ParamInfo> p = expected_parameters(c);
  // embed + 2 x (2 norms + 4 attention weights + 4 attention biases + 3 mlp) + norm + lm_head
  ASSERT_EQ(p.size(), 1u + 2u * 13u + 2u);
  EXPECT_EQ(p.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(p.back().name, "lm_head.weight");
  EXPECT_EQ(p[2].name, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(p[2].global_shape, (Shape{64, 64}));
  EXPECT_EQ(p[4].name, "model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(p[4].global_shape, (Shape{32, 64}));
  auto spec = [&](const std::string& name) {
    for (const ParamInfo& info : p) {
      if (info.name == name) return info.spec.str();
    }
    return std::string("absent");
  };
  EXPECT_EQ(spec("model.layers.1.self_attn.q_proj.weight"), "(model, data)");
  EXPECT_EQ(spec("model.layers.1.self_attn.o_proj.weight"), "(data, model)");
  EXPECT_EQ(spec("model.layers.1.mlp.down_proj.weight"), "(data, model)");
  EXPECT_EQ(spec("model.layers.1.self_attn.k_proj.bias"), "(model)");
  EXPECT_EQ(spec("model.layers.1.self_attn.o_proj.bias"), "()");
  EXPECT_EQ(spec("model.norm.weight"), "()");
  EXPECT_EQ(spec("lm_head.weight"), "(model, data)");
  EXPECT_EQ(spec("model.embed_tokens.weight"), "(model, data)");
  Mesh mesh;
  shard_parameters(p, mesh);
  for (const ParamInfo& info : p) EXPECT_EQ(info.box_extent, info.global_shape);
}

TEST(ModelConfig, UnsupportedPartitionSpecIsAnError) {
  ModelConfig c = parse_model_config(llama(), "x");
  std::vector<ParamInfo> p = expected_parameters(c);
  RuleList rules;
  rules.emplace_back(R"(q_proj\.weight$)", PartitionSpec{"data", "model"});
  const PartitionRules defaults = default_partition_rules("llama");
  for (const auto& r : defaults.rules()) rules.push_back(r);
  apply_partition_rules(p, PartitionRules(rules), c);
  Mesh mesh;
  shard_parameters(p, mesh);
  try {
    Decoder d(c, mesh, ParameterSet(p));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'model.layers.0.self_attn.q_proj.weight': partition "
                                         "spec (data, model) is not supported"),
              std::string::npos)
        << e.what();
  }
  // The data axis may shard another dim than the default one.
  p = expected_parameters(c);
  RuleList fsdp_only_q;  // q_proj: model axis as the default, not sharded over data
  fsdp_only_q.emplace_back(R"(q_proj\.weight$)", PartitionSpec{"model"});
  for (const auto& r : defaults.rules()) fsdp_only_q.push_back(r);
  apply_partition_rules(p, PartitionRules(fsdp_only_q), c);
  shard_parameters(p, mesh);
  EXPECT_NO_THROW(Decoder(c, mesh, ParameterSet(p)));
}

// config.json fields of the wrong type (a string for a number, a number for a string, an object
// for a list, null for a required field): a magix::Error naming the field, never a JSON library
// exception.
TEST(ModelConfig, WrongTypesNameTheField) {
  json valid = llama();
  valid["head_dim"] = 16;
  valid["rope_theta"] = 10000.0;
  valid["initializer_range"] = 0.02;
  valid["tie_word_embeddings"] = false;
  valid["attention_bias"] = false;
  valid["mlp_bias"] = false;
  valid["hidden_act"] = "silu";
  valid["attention_dropout"] = 0.0;
  valid["bos_token_id"] = 1;
  valid["pad_token_id"] = 0;
  valid["eos_token_id"] = json::array({2, 3});
  valid["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", 8.0},
                           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 64}};
  const auto read = [](const json& j) { parse_model_config(j, "config.json"); };
  const std::vector<test::JsonField> fields = {
      {"/model_type"},
      {"/vocab_size"},
      {"/hidden_size"},
      {"/intermediate_size"},
      {"/num_hidden_layers"},
      {"/num_attention_heads"},
      {"/num_key_value_heads", true},
      {"/head_dim", true},
      {"/rms_norm_eps", true},
      {"/max_position_embeddings", true},
      {"/rope_theta", true},
      {"/initializer_range", true},
      {"/tie_word_embeddings", true},
      {"/attention_bias", true},
      {"/mlp_bias", true},
      {"/hidden_act", true},
      {"/attention_dropout", true},
      {"/bos_token_id", true},
      {"/pad_token_id", true},
      {"/eos_token_id/1", false, "\"eos_token_id\"[1]"},
      // An id or a list of ids: a string, a fraction, an object, true are wrong.
      {"/eos_token_id", true, "", {"x", 2.5, json{{"k", 1}}, true}},
      {"/rope_scaling", true, "", {"x", 7, json::array({1}), true}},
      // null: the rope type defaults, a required factor is "missing"
      {"/rope_scaling/rope_type", true},
      {"/rope_scaling/factor", true},
      {"/rope_scaling/low_freq_factor", true},
      {"/rope_scaling/original_max_position_embeddings", true},
  };
  test::expect_wrong_types_named(valid, fields, read);
  EXPECT_GT(test::expect_only_magix_errors(valid, read), 100u);
  // A top level that is not an object names the file.
  for (const json& top : {json::array(), json(3)}) {
    EXPECT_NE(error_of(top).find("cfg.json: a model config must be a JSON object"),
              std::string::npos)
        << error_of(top);
  }
}

// The same through load_model_config, from a file.
TEST(ModelConfig, FileWithWrongTypes) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / fmt::format("magix_cfg_{}.json", ::getpid());
  for (const auto& [text, want] : std::vector<std::pair<std::string, std::string>>{
           {"[]", "a model config must be a JSON object, found list"},
           {"3", "a model config must be a JSON object, found integer 3"},
           {R"({"model_type": "llama", "vocab_size": "256"})",
            R"("vocab_size" must be an integer, found string "256")"}}) {
    { std::ofstream(path) << text; }
    try {
      load_model_config(path);
      ADD_FAILURE() << text << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path.string() + ": "), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace magix
