// bf16 mixed precision (DecoderOptions::compute_dtype = BF16, the CLI's --bf16) against HF
// transformers' fp32 numbers of every fixture family: per-example NLL within 1e-2 relative and
// every parameter gradient at cosine similarity >= 0.99 with the fp32 reference. Recompute is
// bit-identical to stored activations in bf16 too, and the fp32 default is untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "../common/fixture_batch.hpp"
#include "magix/model.hpp"
#include "magix/safetensors.hpp"

namespace magix {
namespace {

const std::filesystem::path kModels = std::filesystem::path(MAGIX_FIXTURES_DIR) / "models";

double cosine(const Tensor& a, const Tensor& b) {
  const float* x = a.data<float>();
  const float* y = b.data<float>();
  double xy = 0, xx = 0, yy = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    xy += double(x[i]) * y[i];
    xx += double(x[i]) * x[i];
    yy += double(y[i]) * y[i];
  }
  return xy / std::max(std::sqrt(xx) * std::sqrt(yy), 1e-300);
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.bytes(), b.bytes(), a.nbytes()) == 0;
}

class MixedPrecision : public testing::TestWithParam<std::string> {};

TEST_P(MixedPrecision, NllAndGradientsNearTransformersFp32) {
  const std::filesystem::path dir = kModels / GetParam();
  Mesh mesh;
  Decoder model = load_decoder(dir.string(), mesh, {.compute_dtype = DType::kBF16});
  SafetensorsReader ref(dir / "reference.safetensors");
  const TokenBatch b = test::read_fixture_batch(ref);
  const Tensor tokens = ref.read("tokens_per_example");
  double count = 0;
  for (int64_t r = 0; r < b.batch; ++r) count += tokens.data<int64_t>()[r];

  ParameterSet grads = model.params().zeros_like();
  const LossResult res = model.loss_and_grad(b, count, grads);
  const Tensor nll = ref.read_f32("nll_per_example");
  double worst_nll = 0;
  for (int64_t r = 0; r < b.batch; ++r) {
    const double want = nll.data<float>()[r];
    EXPECT_NEAR(res.nll_per_row[r], want, 1e-2 * std::fabs(want)) << "row " << r;
    EXPECT_EQ(res.tokens_per_row[r], tokens.data<int64_t>()[r]);
    worst_nll = std::max(worst_nll, std::fabs(res.nll_per_row[r] - want) / std::fabs(want));
  }
  RecordProperty("worst_nll_relative_error", std::to_string(worst_nll));
  // It really computes in bf16: the loss is not the fp32 one.
  const double want_loss = ref.read_f32("loss").data<float>()[0];
  EXPECT_NE(res.loss, load_decoder(dir.string(), mesh).loss(b, count).loss);
  EXPECT_NEAR(res.loss, want_loss, 1e-2 * std::fabs(want_loss));
  // The forward-only loss is the same computation.
  EXPECT_EQ(model.loss(b, count).loss, res.loss);

  double worst = 1;
  for (size_t i = 0; i < grads.size(); ++i) {
    const std::string& name = grads.info(i).name;
    const Tensor want = ref.read_f32("grad." + name);
    ASSERT_EQ(grads.tensor(i).shape(), want.shape()) << name;
    const double c = cosine(grads.tensor(i), want);
    EXPECT_GE(c, 0.99) << name;
    worst = std::min(worst, c);
  }
  RecordProperty("worst_gradient_cosine", std::to_string(worst));

  // Recomputed activations are the same bf16 computation: bit-identical gradients.
  model.set_options({.recompute = true, .compute_dtype = DType::kBF16});
  ParameterSet grads_rc = model.params().zeros_like();
  EXPECT_EQ(model.loss_and_grad(b, count, grads_rc).loss, res.loss);
  for (size_t i = 0; i < grads.size(); ++i) {
    EXPECT_TRUE(same_bits(grads.tensor(i), grads_rc.tensor(i))) << grads.info(i).name;
  }
}

// bf16 storage (--bf16_model_weights) with bf16 compute: the same bands.
TEST_P(MixedPrecision, Bf16WeightsAndCompute) {
  const std::filesystem::path dir = kModels / GetParam();
  Mesh mesh;
  Decoder model = load_decoder(dir.string(), mesh,
                               {.weight_dtype = DType::kBF16, .compute_dtype = DType::kBF16});
  SafetensorsReader ref(dir / "reference.safetensors");
  const TokenBatch b = test::read_fixture_batch(ref);
  const double count = static_cast<double>(b.count_targets());
  ParameterSet grads = model.params().zeros_like();
  const LossResult res = model.loss_and_grad(b, count, grads);
  const Tensor nll = ref.read_f32("nll_per_example");
  for (int64_t r = 0; r < b.batch; ++r) {
    EXPECT_NEAR(res.nll_per_row[r], nll.data<float>()[r], 1e-2 * std::fabs(nll.data<float>()[r]));
  }
  for (size_t i = 0; i < grads.size(); ++i) {
    EXPECT_GE(cosine(grads.tensor(i), ref.read_f32("grad." + grads.info(i).name)), 0.99)
        << grads.info(i).name;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, MixedPrecision,
                         testing::Values("llama_gqa", "llama_mqa_bias", "mistral_window", "gemma",
                                         "qwen2", "qwen2_tied", "qwen3", "gemma2", "gemma3_text"));

}  // namespace
}  // namespace magix
