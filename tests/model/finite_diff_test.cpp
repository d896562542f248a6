// The whole model's backward pass against finite differences of its loss, independent of the
// fixtures: for each parameter tensor, the directional derivative of the loss along the
// normalised gradient must equal the gradient's norm.
#include <gtest/gtest.h>

#include <cmath>

#include "magix/model.hpp"

namespace magix {
namespace {

using nlohmann::json;

json tiny(const std::string& type) {
  json j{{"model_type", type},       {"vocab_size", 24},       {"hidden_size", 16},
         {"intermediate_size", 24},  {"num_hidden_layers", 2}, {"num_attention_heads", 4},
         {"num_key_value_heads", 2}, {"head_dim", 6},          {"rms_norm_eps", 1e-5},
         {"initializer_range", 0.3}};
  if (type == "llama") {
    j["attention_bias"] = true;
    j["mlp_bias"] = true;
    j["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 100.0},
                            {"factor", 4.0},           {"low_freq_factor", 1.0},
                            {"high_freq_factor", 2.0}, {"original_max_position_embeddings", 8}};
  }
  if (type == "mistral") j["sliding_window"] = 3;
  if (type == "qwen3") {  // layer 1 slides
    j["use_sliding_window"] = true;
    j["sliding_window"] = 3;
    j["max_window_layers"] = 1;
  }
  if (type == "gemma2") {  // layer 0 slides; both soft-caps bite at these sizes
    j["sliding_window"] = 3;
    j["query_pre_attn_scalar"] = 5;
    j["attn_logit_softcapping"] = 0.5;
    j["final_logit_softcapping"] = 1.0;
  }
  if (type == "gemma3_text") {  // layer 0 slides with its own RoPE base
    j["layer_types"] = {"sliding_attention", "full_attention"};
    j["sliding_window"] = 3;
    j["query_pre_attn_scalar"] = 8;
    j["final_logit_softcapping"] = 1.5;
    j["rope_parameters"] = {
        {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 50.0}}},
        {"full_attention", {{"rope_type", "linear"}, {"rope_theta", 1000.0}, {"factor", 2.0}}}};
  }
  return j;
}

// Two rows, the second right-padded, the first holding two packed segments.
TokenBatch tiny_batch() {
  TokenBatch b = make_causal_batch({{1, 5, 7, 3, 9, 11, 2, 4}, {3, 8, 13, 21, 6}});
  b.segments = {0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0};
  b.targets[2] = TokenBatch::kIgnore;  // no target across the segment boundary
  for (int t = 3; t < 8; ++t) b.positions[t] = t - 3;
  return b;
}

class FiniteDiffTest : public testing::TestWithParam<std::string> {};

TEST_P(FiniteDiffTest, DirectionalDerivativesMatchGradients) {
  ModelConfig config = parse_model_config(tiny(GetParam()), "tiny");
  Mesh mesh;
  std::vector<ParamInfo> infos = expected_parameters(config);
  shard_parameters(infos, mesh);
  ParameterSet params = init_parameters(config, infos, 7);
  // Move norms and biases away from their init values so that their gradients are generic.
  ParameterSet noise = init_parameters(config, infos, 8);
  for (size_t i = 0; i < params.size(); ++i) {
    if (infos[i].global_shape.size() != 1) continue;
    for (int64_t k = 0; k < params.tensor(i).numel(); ++k) {
      params.tensor(i).data<float>()[k] += 0.3f * std::sin(float(k + 3 * i));
    }
  }
  Decoder model(config, mesh, std::move(params));
  TokenBatch b = tiny_batch();
  const double count = static_cast<double>(b.count_targets());
  ParameterSet grads = model.params().zeros_like();
  model.loss_and_grad(b, count, grads);

  const float h = 1e-2f;
  for (size_t i = 0; i < grads.size(); ++i) {
    Tensor& p = model.params().tensor(i);
    const Tensor& g = grads.tensor(i);
    double norm = 0;
    for (float v : g.span<float>()) norm += double(v) * v;
    norm = std::sqrt(norm);
    ASSERT_GT(norm, 1e-6) << grads.info(i).name << " has a zero gradient";
    Tensor saved = p.clone();
    auto loss_at = [&](float step) {
      for (int64_t k = 0; k < p.numel(); ++k) {
        p.data<float>()[k] = saved.data<float>()[k] + step * float(g.data<float>()[k] / norm);
      }
      return model.loss(b, count).loss;
    };
    // Fourth-order central difference.
    const double fd =
        (8 * (loss_at(h) - loss_at(-h)) - (loss_at(2 * h) - loss_at(-2 * h))) / (12.0 * h);
    p = saved;
    EXPECT_NEAR(fd, norm, 2e-3 * norm + 2e-5) << grads.info(i).name;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, FiniteDiffTest,
                         testing::Values("llama", "mistral", "gemma", "qwen2", "qwen3", "gemma2",
                                         "gemma3_text"));

// torch's nn.Embedding(padding_idx=pad_token_id) gives the pad row no gradient from the lookup,
// even where the pad id is a real token; the other rows get theirs.
TEST(PadTokenGradient, PadRowGetsNoLookupGradient) {
  json j = tiny("llama");
  j["pad_token_id"] = 5;
  ModelConfig config = parse_model_config(j, "tiny");
  Mesh mesh;
  std::vector<ParamInfo> infos = expected_parameters(config);
  shard_parameters(infos, mesh);
  Decoder model(config, mesh, init_parameters(config, infos, 3));
  TokenBatch b = make_causal_batch({{1, 5, 7, 5, 9}});
  ParameterSet grads = model.params().zeros_like();
  model.loss_and_grad(b, double(b.count_targets()), grads);
  const Tensor& g = grads.at("model.embed_tokens.weight");
  const int64_t C = g.dim(1);
  for (int64_t c = 0; c < C; ++c) EXPECT_EQ(g.data<float>()[5 * C + c], 0.0f);
  double row7 = 0;
  for (int64_t c = 0; c < C; ++c) row7 += std::fabs(g.data<float>()[7 * C + c]);
  EXPECT_GT(row7, 0.0);
}

}  // namespace
}  // namespace magix
