// The decoder against HF transformers 5.23: logits, loss and every parameter gradient of the
// fixture models written by tools/reference/make_model_fixtures.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "../common/fixture_batch.hpp"
#include "../common/tensor_compare.hpp"
#include "magix/model.hpp"
#include "magix/safetensors.hpp"

namespace magix {
namespace {

using test::rel_l2;

const std::filesystem::path kModels = std::filesystem::path(MAGIX_FIXTURES_DIR) / "models";

struct Reference {
  TokenBatch batch;
  double token_count = 0;
  SafetensorsReader reader;
};

// The fixture's HF inputs and the global count of its targets.
Reference read_reference(const std::filesystem::path& dir) {
  Reference ref{TokenBatch{}, 0, SafetensorsReader(dir / "reference.safetensors")};
  ref.batch = test::read_fixture_batch(ref.reader);
  const TokenBatch& b = ref.batch;
  Tensor tokens = ref.reader.read("tokens_per_example");
  for (int64_t r = 0; r < b.batch; ++r) ref.token_count += tokens.data<int64_t>()[r];
  return ref;
}

class FixtureTest : public testing::TestWithParam<std::string> {};

TEST_P(FixtureTest, LogitsLossAndGradientsMatchTransformers) {
  const std::filesystem::path dir = kModels / GetParam();
  Mesh mesh;
  Decoder model = load_decoder(dir.string(), mesh);
  Reference ref = read_reference(dir);
  const TokenBatch& b = ref.batch;

  // Logits at every position (padded ones included: HF computes them the same way).
  Tensor logits = model.logits(b);
  Tensor want = ref.reader.read_f32("logits");
  ASSERT_EQ(logits.shape(), want.shape());
  double max_ref = 0, max_diff = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    max_ref = std::max(max_ref, double(std::fabs(want.data<float>()[i])));
    max_diff =
        std::max(max_diff, double(std::fabs(logits.data<float>()[i] - want.data<float>()[i])));
  }
  EXPECT_LE(max_diff, 1e-4 * std::max(1.0, max_ref)) << "max |logit| " << max_ref;

  // Loss and per-example NLL.
  ParameterSet grads = model.params().zeros_like();
  LossResult res = model.loss_and_grad(b, ref.token_count, grads);
  const double want_loss = ref.reader.read_f32("loss").data<float>()[0];
  EXPECT_NEAR(res.loss, want_loss, 1e-5 * std::fabs(want_loss));
  Tensor nll = ref.reader.read_f32("nll_per_example");
  Tensor tokens = ref.reader.read("tokens_per_example");
  for (int64_t r = 0; r < b.batch; ++r) {
    EXPECT_NEAR(res.nll_per_row[r], nll.data<float>()[r], 1e-5 * std::fabs(nll.data<float>()[r]));
    EXPECT_EQ(res.tokens_per_row[r], tokens.data<int64_t>()[r]);
  }
  // The forward-only loss is the same number.
  EXPECT_NEAR(model.loss(b, ref.token_count).loss, res.loss, 1e-6 * std::fabs(res.loss));

  // Every parameter gradient (tied models: lm_head's gradient is inside embed_tokens').
  size_t checked = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    const std::string& name = grads.info(i).name;
    ASSERT_NE(ref.reader.find("grad." + name), nullptr) << "no reference gradient for " << name;
    Tensor g_ref = ref.reader.read_f32("grad." + name);
    ASSERT_EQ(grads.tensor(i).shape(), g_ref.shape()) << name;
    EXPECT_LE(rel_l2(grads.tensor(i), g_ref), 1e-4) << name;
    ++checked;
  }
  size_t ref_grads = 0;
  for (const auto& e : ref.reader.entries()) ref_grads += e.name.starts_with("grad.");
  EXPECT_EQ(checked, ref_grads) << "reference has gradients the model does not";

  // Recomputing block activations in backward gives bit-identical gradients.
  model.set_options({.recompute = true, .head_chunk_rows = 256});
  ParameterSet grads_rc = model.params().zeros_like();
  LossResult res_rc = model.loss_and_grad(b, ref.token_count, grads_rc);
  EXPECT_EQ(res_rc.loss, res.loss);
  for (size_t i = 0; i < grads.size(); ++i) {
    EXPECT_EQ(
        std::memcmp(grads.tensor(i).bytes(), grads_rc.tensor(i).bytes(), grads.tensor(i).nbytes()),
        0)
        << grads.info(i).name;
  }

  // Gradients accumulate: a second call adds the same amount again.
  model.set_options({.recompute = false, .head_chunk_rows = 7});
  model.loss_and_grad(b, ref.token_count, grads_rc);
  for (size_t i = 0; i < grads.size(); ++i) {
    Tensor twice = grads.tensor(i).clone();
    for (float& v : twice.span<float>()) v *= 2;
    EXPECT_LE(rel_l2(grads_rc.tensor(i), twice), 1e-5) << grads.info(i).name;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, FixtureTest,
                         testing::Values("llama_gqa", "llama_mqa_bias", "mistral_window", "gemma",
                                         "qwen2", "qwen2_tied", "qwen3", "gemma2", "gemma3_text",
                                         "llama_yarn", "phi3", "phi3_longrope",
                                         "phi3_longrope_short", "phi3_partial_rotary"));

}  // namespace
}  // namespace magix
