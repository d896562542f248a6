// bf16 parameter storage (DecoderOptions::weight_dtype, --bf16_model_weights): a decoder that
// stores its weights in bf16 computes in fp32 exactly what an fp32 decoder computes whose
// weights were rounded to bf16 — the same bits of loss, logits and every gradient.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "../common/fixture_batch.hpp"
#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"
#include "magix/model.hpp"
#include "magix/safetensors.hpp"

namespace magix {
namespace {

const std::filesystem::path kModels = std::filesystem::path(MAGIX_FIXTURES_DIR) / "models";

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.bytes(), b.bytes(), a.nbytes()) == 0;
}

// The fixture's inputs (fixtures_test.cpp's convention: targets[t] = labels[t + 1]).
class Bf16Fixture : public testing::TestWithParam<std::string> {};

TEST_P(Bf16Fixture, EqualsFp32DecoderWithRoundedWeights) {
  const std::filesystem::path dir = kModels / GetParam();
  Mesh mesh;
  Decoder bf16 = load_decoder(dir.string(), mesh, {.weight_dtype = DType::kBF16});
  // The reference: fp32 storage holding the bf16-rounded values.
  Decoder f32 = load_decoder(dir.string(), mesh);
  bool any_rounded = false;
  for (size_t i = 0; i < f32.params().size(); ++i) {
    Tensor& t = f32.params().tensor(i);
    const Tensor rounded = t.to(DType::kBF16);
    // load_decoder stores exactly Tensor::to's rounding of the file's values.
    ASSERT_TRUE(same_bits(bf16.params().tensor(i), rounded)) << f32.params().info(i).name;
    Tensor widened = rounded.to(DType::kF32);
    any_rounded = any_rounded || !same_bits(widened, t);
    t = widened;
  }
  ASSERT_TRUE(any_rounded) << "the fixture's weights are already bf16: the test would prove little";

  const TokenBatch b = test::read_fixture_batch(SafetensorsReader(dir / "reference.safetensors"));
  const double count = static_cast<double>(b.count_targets());
  for (bool recompute : {false, true}) {
    bf16.set_options({.recompute = recompute, .head_chunk_rows = 5, .weight_dtype = DType::kBF16});
    f32.set_options({.recompute = recompute, .head_chunk_rows = 5});
    ParameterSet g_bf16 = bf16.params().zeros_like();
    ParameterSet g_f32 = f32.params().zeros_like();
    const LossResult r_bf16 = bf16.loss_and_grad(b, count, g_bf16);
    const LossResult r_f32 = f32.loss_and_grad(b, count, g_f32);
    EXPECT_EQ(r_bf16.loss, r_f32.loss) << "recompute " << recompute;
    EXPECT_EQ(r_bf16.nll_per_row, r_f32.nll_per_row);
    for (size_t i = 0; i < g_f32.size(); ++i) {
      EXPECT_EQ(g_bf16.tensor(i).dtype(), DType::kF32);
      EXPECT_TRUE(same_bits(g_bf16.tensor(i), g_f32.tensor(i)))
          << g_f32.info(i).name << " recompute " << recompute;
    }
  }
  EXPECT_EQ(bf16.loss(b, count).loss, f32.loss(b, count).loss);
  EXPECT_TRUE(same_bits(bf16.logits(b), f32.logits(b)));
  // Storage stayed bf16 through all of it.
  for (size_t i = 0; i < bf16.params().size(); ++i) {
    EXPECT_EQ(bf16.params().tensor(i).dtype(), DType::kBF16);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, Bf16Fixture,
                         testing::Values("llama_gqa", "llama_mqa_bias", "gemma", "qwen2_tied",
                                         "qwen3"));

TEST(Bf16Storage, ConstructorAndSetOptionsConvert) {
  const std::filesystem::path dir = kModels / "llama_gqa";
  Mesh mesh;
  Decoder d = load_decoder(dir.string(), mesh);
  const Tensor w = d.params().at("model.layers.0.mlp.up_proj.weight").clone();
  d.set_options({.weight_dtype = DType::kBF16});
  const Tensor& stored = d.params().at("model.layers.0.mlp.up_proj.weight");
  ASSERT_EQ(stored.dtype(), DType::kBF16);
  for (int64_t e = 0; e < w.numel(); ++e) {
    ASSERT_EQ(stored.data<uint16_t>()[e], float_to_bf16(w.data<float>()[e])) << e;
  }
  d.set_options({.weight_dtype = DType::kF32});  // widening back is exact
  const Tensor& back = d.params().at("model.layers.0.mlp.up_proj.weight");
  ASSERT_EQ(back.dtype(), DType::kF32);
  for (int64_t e = 0; e < w.numel(); ++e) {
    ASSERT_EQ(back.data<float>()[e], bf16_to_float(float_to_bf16(w.data<float>()[e]))) << e;
  }
  // The constructor converts too; gradients stay fp32.
  ParameterSet p = d.params();
  Decoder e(d.config(), mesh, p, {.weight_dtype = DType::kBF16});
  for (size_t i = 0; i < e.params().size(); ++i) {
    EXPECT_EQ(e.params().tensor(i).dtype(), DType::kBF16);
    EXPECT_EQ(e.params().zeros_like().tensor(i).dtype(), DType::kF32);
  }
  EXPECT_EQ(e.params().nbytes() * 2, d.params().nbytes());
  EXPECT_THROW(Decoder(d.config(), mesh, p, {.weight_dtype = DType::kF16}), Error);
  EXPECT_THROW(load_decoder(dir.string(), mesh, {.weight_dtype = DType::kI32}), Error);
}

TEST(Bf16Storage, InitParametersRoundsTheFp32Draw) {
  const nlohmann::json j{{"model_type", "qwen2"},    {"vocab_size", 64},
                         {"hidden_size", 16},        {"intermediate_size", 24},
                         {"num_hidden_layers", 2},   {"num_attention_heads", 4},
                         {"num_key_value_heads", 2}, {"tie_word_embeddings", false},
                         {"initializer_range", 0.02}};
  const ModelConfig c = parse_model_config(j, "test");
  std::vector<ParamInfo> infos = expected_parameters(c);
  Mesh mesh;
  shard_parameters(infos, mesh);
  const ParameterSet f32 = init_parameters(c, infos, 7);
  const ParameterSet bf16 = init_parameters(c, infos, 7, DType::kBF16);
  ASSERT_EQ(f32.size(), bf16.size());
  for (size_t i = 0; i < f32.size(); ++i) {
    EXPECT_TRUE(same_bits(bf16.tensor(i), f32.tensor(i).to(DType::kBF16))) << f32.info(i).name;
  }
}

}  // namespace
}  // namespace magix
