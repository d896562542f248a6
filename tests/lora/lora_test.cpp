// LoRA against PEFT (tools/reference/make_lora_fixtures.py): loss, logits and every adapter
// gradient; initialisation, merging, target selection, training steps and the PEFT folder.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "../common/tensor_compare.hpp"
#include "lora_fixture.hpp"
#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"
#include "magix/lora.hpp"
#include "magix/safetensors.hpp"

namespace magix {
namespace {

using test::load_lora_fixture;
using test::rel;
using test::rel_l2;

// W (rows, cols) + scale * B (rows, r) * A (r, cols), in double.
std::vector<double> naive_merge(const Tensor& w, const Tensor& a, const Tensor& b, double scale) {
  const int64_t rows = w.dim(0), cols = w.dim(1), r = a.dim(0);
  std::vector<double> out(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      double s = 0;
      for (int64_t k = 0; k < r; ++k) {
        s += double(b.data<float>()[i * r + k]) * a.data<float>()[k * cols + j];
      }
      out[static_cast<size_t>(i * cols + j)] = w.data<float>()[i * cols + j] + scale * s;
    }
  }
  return out;
}

class PeftFixtureTest : public testing::TestWithParam<std::string> {};

TEST_P(PeftFixtureTest, LossLogitsAndAdapterGradientsMatchPeft) {
  const test::LoraFixture fx = load_lora_fixture(GetParam());
  Mesh mesh;
  Decoder base = load_decoder(fx.model_dir.string(), mesh);
  const std::vector<ParamInfo> infos = lora_adapter_infos(base.params().infos(), fx.config, mesh);
  LoraModel model(std::move(base), fx.config, test::fixture_adapters(fx, infos));
  ParameterSet grads = model.adapters().zeros_like();
  const LossResult res = model.loss_and_grad(fx.batch, fx.token_count, grads);
  const double want_loss = fx.reader.read_f32("loss").data<float>()[0];
  EXPECT_LE(rel(res.loss, want_loss), 1e-5) << res.loss << " vs PEFT " << want_loss;
  EXPECT_LE(rel(model.loss(fx.batch, fx.token_count).loss, res.loss), 1e-7);

  const Tensor logits = model.decoder().logits(fx.batch);
  const Tensor want_logits = fx.reader.read_f32("logits");
  ASSERT_EQ(logits.numel(), want_logits.numel());
  double max_ref = 0, max_diff = 0;
  for (int64_t i = 0; i < logits.numel(); ++i) {
    max_ref = std::max(max_ref, double(std::fabs(want_logits.data<float>()[i])));
    max_diff = std::max(max_diff,
                        double(std::fabs(logits.data<float>()[i] - want_logits.data<float>()[i])));
  }
  EXPECT_LE(max_diff, 1e-4 * std::max(1.0, max_ref));

  size_t checked = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    const std::string& name = grads.info(i).name;
    const Tensor want = fx.reader.read_f32("grad." + name);
    ASSERT_EQ(want.shape(), grads.tensor(i).shape()) << name;
    const double err = rel_l2(grads.tensor(i), want);
    EXPECT_LE(err, 1e-4) << name;
    // A zero reference would make the comparison vacuous (B must be non-zero in the fixture).
    EXPECT_GT(rel_l2(Tensor(want.shape()), want), 0.5) << name << " reference gradient is zero";
    ++checked;
  }
  EXPECT_EQ(checked, fx.reader.entries().size() / 2 - 1);  // every adapter (grad. + adapter.)
}

INSTANTIATE_TEST_SUITE_P(Cases, PeftFixtureTest,
                         testing::Values("llama_gqa", "qwen2_qv_down", "qwen3", "gemma2",
                                         "gemma3_text", "phi3_fused", "llama_gqa_rslora"));

TEST(LoraTargets, DefaultSelectsEveryLayerLinearWeight) {
  const test::LoraFixture fx = load_lora_fixture("llama_gqa");
  Mesh mesh;
  Decoder base = load_decoder(fx.model_dir.string(), mesh);
  const std::vector<size_t> idx = lora_target_indices(base.params().infos(), LoraConfig{});
  ASSERT_EQ(idx.size(), 14u);  // 2 layers x q, k, v, o, gate, up, down
  for (size_t i : idx) {
    const std::string& n = base.params().info(i).name;
    EXPECT_NE(n.find("model.layers."), std::string::npos) << n;
    EXPECT_EQ(base.params().info(i).global_shape.size(), 2u) << n;
  }
  EXPECT_EQ(lora_adapter_name("model.layers.0.mlp.up_proj.weight", 'B'),
            "model.layers.0.mlp.up_proj.lora_B.weight");
}

TEST(LoraTargets, BadTargetsAreErrorsNamingTheRegex) {
  const test::LoraFixture fx = load_lora_fixture("llama_gqa");
  Mesh mesh;
  Decoder base = load_decoder(fx.model_dir.string(), mesh);
  auto expect_error = [&](LoraConfig c, const std::string& text) {
    try {
      lora_target_indices(base.params().infos(), c);
      ADD_FAILURE() << "no error for '" << c.targets << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  expect_error(LoraConfig{8, 32, "no_such_proj"}, "matches no parameter");
  expect_error(LoraConfig{8, 32, "(q_proj"}, "not a valid regular expression");
  expect_error(LoraConfig{8, 32, "input_layernorm"}, "not a linear weight");
  expect_error(LoraConfig{0, 32, kDefaultLoraTargets}, "--lora_rank");
}

TEST(LoraInit, HeUniformPureFunctionOfSeedNameElementAndBZero) {
  const test::LoraFixture fx = load_lora_fixture("llama_gqa");
  Mesh mesh;
  Decoder base = load_decoder(fx.model_dir.string(), mesh);
  const std::vector<ParamInfo> whole =
      lora_adapter_infos(base.params().infos(), LoraConfig{}, mesh);
  const ParameterSet full = init_lora_adapters(whole, 123);
  // One rank's boxes of a 2x2 mesh draw exactly that slice of the whole tensors.
  std::vector<ParamInfo> boxed = whole;
  for (ParamInfo& p : boxed) {
    const ShardBox box = shard_box(p.name, p.global_shape, p.spec, 2, 2, 1, 1);
    p.box_start = box.start;
    p.box_extent = box.extent;
  }
  const ParameterSet part = init_lora_adapters(boxed, 123);
  const ParameterSet other_seed = init_lora_adapters(whole, 124);
  for (size_t i = 0; i < full.size(); ++i) {
    const ParamInfo& p = part.info(i);
    const Tensor& t = full.tensor(i);
    const int64_t cols = p.global_shape[1];
    const bool is_a = i % 2 == 0;
    if (is_a) {
      EXPECT_EQ(p.spec.axis(0), std::nullopt) << p.name;
      EXPECT_LT(p.box_extent[1], p.global_shape[1]) << p.name << " A must follow W's in-dim spec";
    } else {
      EXPECT_LT(p.box_extent[0], p.global_shape[0]) << p.name << " B must follow W's out-dim spec";
    }
    for (int64_t r = 0; r < p.box_extent[0]; ++r) {
      for (int64_t c = 0; c < p.box_extent[1]; ++c) {
        const float got = part.tensor(i).data<float>()[r * p.box_extent[1] + c];
        const float want = t.data<float>()[(p.box_start[0] + r) * cols + p.box_start[1] + c];
        ASSERT_EQ(got, want) << p.name;
      }
    }
    if (!is_a) {
      for (float v : t.span<float>()) ASSERT_EQ(v, 0.0f) << p.name;
      continue;
    }
    // Uniform in [-sqrt(6 / in), sqrt(6 / in)): bounded, variance 2 / in (He), mean 0.
    const double bound = std::sqrt(6.0 / static_cast<double>(cols));
    double sum = 0, sq = 0, max_abs = 0;
    for (float v : t.span<float>()) {
      sum += v;
      sq += double(v) * v;
      max_abs = std::max(max_abs, double(std::fabs(v)));
    }
    const double n = static_cast<double>(t.numel());
    EXPECT_LE(max_abs, bound) << p.name;
    EXPECT_GT(max_abs, 0.9 * bound) << p.name;
    EXPECT_NEAR(sum / n, 0.0, 4 * bound / std::sqrt(3 * n)) << p.name;
    EXPECT_NEAR(sq / n / (2.0 / cols), 1.0, 0.2) << p.name;
    EXPECT_GT(rel_l2(other_seed.tensor(i), t), 0.5) << p.name << " must depend on the seed";
  }
}

TEST(LoraModelTest, StepZeroEqualsTheBaseModel) {
  const test::LoraFixture fx = load_lora_fixture("llama_gqa");
  Mesh mesh;
  Decoder base = load_decoder(fx.model_dir.string(), mesh);
  const double base_loss = base.loss(fx.batch, fx.token_count).loss;
  const std::vector<ParamInfo> infos =
      lora_adapter_infos(base.params().infos(), LoraConfig{}, mesh);
  LoraModel model(std::move(base), LoraConfig{}, init_lora_adapters(infos, 42));
  EXPECT_EQ(model.loss(fx.batch, fx.token_count).loss, base_loss);
  // With B = 0 only B gets a gradient.
  ParameterSet grads = model.adapters().zeros_like();
  model.loss_and_grad(fx.batch, fx.token_count, grads);
  for (size_t i = 0; i < grads.size(); ++i) {
    if (i % 2 == 0) {
      EXPECT_EQ(sum_of_squares(grads.tensor(i).span<float>()), 0.0) << grads.info(i).name;
    } else {
      EXPECT_GT(sum_of_squares(grads.tensor(i).span<float>()), 0.0) << grads.info(i).name;
    }
  }
}

TEST(LoraMerge, MergedWeightsEqualWPlusScaleBA) {
  const test::LoraFixture fx = load_lora_fixture("qwen2_qv_down");
  Mesh mesh;
  Decoder base = load_decoder(fx.model_dir.string(), mesh);
  const std::vector<ParamInfo> infos = lora_adapter_infos(base.params().infos(), fx.config, mesh);
  const ParameterSet adapters = test::fixture_adapters(fx, infos);
  ParameterSet merged = base.params();  // shares storage with `base`: clone the tensors
  for (size_t i = 0; i < merged.size(); ++i) merged.tensor(i) = base.params().tensor(i).clone();
  ParameterSet merged16 = base.params();
  for (size_t i = 0; i < merged16.size(); ++i) {
    merged16.tensor(i) = base.params().tensor(i).to(DType::kBF16);
  }
  merge_lora(merged, adapters, fx.config.scale());
  merge_lora(merged16, adapters, fx.config.scale());
  const std::vector<size_t> idx = lora_target_indices(base.params().infos(), fx.config);
  ASSERT_EQ(idx.size() * 2, adapters.size());
  for (size_t k = 0; k < idx.size(); ++k) {
    const Tensor& w = base.params().tensor(idx[k]);
    const std::vector<double> want =
        naive_merge(w, adapters.tensor(2 * k), adapters.tensor(2 * k + 1), fx.config.scale());
    // A bf16 weight merges as bf16(W) + scale * B * A, rounded once to bf16.
    const std::vector<double> want16 =
        naive_merge(w.to(DType::kBF16).to(DType::kF32), adapters.tensor(2 * k),
                    adapters.tensor(2 * k + 1), fx.config.scale());
    double max_err = 0, max_err16 = 0;
    for (size_t e = 0; e < want.size(); ++e) {
      max_err = std::max(max_err, std::fabs(merged.tensor(idx[k]).data<float>()[e] - want[e]));
      const double w16 = bf16_to_float(merged16.tensor(idx[k]).data<uint16_t>()[e]);
      // Rounding to bf16 (8 significant bits) changes a value by at most 2^-8 of it.
      max_err16 = std::max(max_err16, std::fabs(w16 - want16[e]) / (std::fabs(want16[e]) + 1e-6));
    }
    EXPECT_LE(max_err, 1e-6) << base.params().info(idx[k]).name;
    EXPECT_LE(max_err16, 1.0 / 256) << base.params().info(idx[k]).name;
  }
  // Parameters without adapters are unchanged.
  EXPECT_EQ(rel_l2(merged.at("model.layers.0.self_attn.k_proj.weight"),
                   base.params().at("model.layers.0.self_attn.k_proj.weight")),
            0.0);
}

TEST(LoraTraining, StepsLowerTheLossAndKeepTheBaseFrozen) {
  const test::LoraFixture fx = load_lora_fixture("llama_gqa");
  Mesh mesh;
  for (const bool bf16 : {false, true}) {
    Decoder base = load_decoder(fx.model_dir.string(), mesh);
    std::vector<Tensor> w0;
    for (size_t i = 0; i < base.params().size(); ++i) w0.push_back(base.params().tensor(i).clone());
    const std::vector<ParamInfo> infos =
        lora_adapter_infos(base.params().infos(), LoraConfig{}, mesh);
    LoraModel model(std::move(base), LoraConfig{}, init_lora_adapters(infos, 42),
                    LoraModelOptions{bf16});
    AdamW opt = initialize_lora_opt_state(AdamWOptions{}, model.adapters());
    std::vector<double> losses;
    for (int s = 0; s < 4; ++s) {
      const TrainStepResult r = lora_train_step(model, opt, fx.batch, 1e-2);
      ASSERT_TRUE(r.applied);
      losses.push_back(r.loss);
    }
    EXPECT_LT(losses.back(), losses.front() - 0.05) << "bf16 " << bf16;
    EXPECT_EQ(opt.updates(), 4);
    // The base is never changed (bit for bit, as stored: F32, or its bf16 rounding).
    const ParameterSet& now = model.decoder().params();
    for (size_t i = 0; i < w0.size(); ++i) {
      const Tensor want = bf16 ? w0[i].to(DType::kBF16) : w0[i];
      ASSERT_EQ(now.tensor(i).dtype(), want.dtype()) << now.info(i).name;
      ASSERT_EQ(now.tensor(i).nbytes(), want.nbytes()) << now.info(i).name;
      EXPECT_EQ(std::memcmp(now.tensor(i).bytes(), want.bytes(), want.nbytes()), 0)
          << now.info(i).name;
    }
  }
}

// The low-rank path (never forming dW) against the dense one: the gradient of the merged weights
// W + scale · B · A projected onto the adapters (lora_project_grads), in fp32; and activation
// recomputation gives the same bits.
TEST_P(PeftFixtureTest, LowRankGradientsEqualTheDenseProjection) {
  const test::LoraFixture fx = load_lora_fixture(GetParam());
  Mesh mesh;
  Decoder merged = load_decoder(fx.model_dir.string(), mesh);
  const std::vector<ParamInfo> infos = lora_adapter_infos(merged.params().infos(), fx.config, mesh);
  const ParameterSet adapters = test::fixture_adapters(fx, infos);
  merge_lora(merged.params(), adapters, fx.config.scale());
  ParameterSet dense = merged.params().zeros_like();
  const double dense_loss = merged.loss_and_grad(fx.batch, fx.token_count, dense).loss;
  ParameterSet want = adapters.zeros_like();
  lora_project_grads(dense, adapters, fx.config.scale(), mesh, want);

  for (const bool recompute : {false, true}) {
    Decoder base = load_decoder(fx.model_dir.string(), mesh, {.recompute = recompute});
    LoraModel model(std::move(base), fx.config, test::fixture_adapters(fx, infos));
    ParameterSet grads = model.adapters().zeros_like();
    const double loss = model.loss_and_grad(fx.batch, fx.token_count, grads).loss;
    EXPECT_LE(rel(loss, dense_loss), 1e-6) << "recompute " << recompute;
    for (size_t i = 0; i < grads.size(); ++i) {
      EXPECT_LE(rel_l2(grads.tensor(i), want.tensor(i)), 1e-5)
          << grads.info(i).name << " recompute " << recompute;
    }
    // Accumulation: a second call adds the same gradients again.
    ParameterSet twice = grads.zeros_like();
    for (size_t i = 0; i < twice.size(); ++i) twice.tensor(i) = grads.tensor(i).clone();
    model.loss_and_grad(fx.batch, fx.token_count, twice);
    for (size_t i = 0; i < grads.size(); ++i) {
      Tensor doubled = grads.tensor(i).clone();
      for (float& v : doubled.span<float>()) v *= 2;
      EXPECT_LE(rel_l2(twice.tensor(i), doubled), 1e-6) << grads.info(i).name;
    }
  }
  // Recomputation replays the same forward pass: bit-identical gradients.
  ParameterSet g0, g1;
  for (const bool recompute : {false, true}) {
    Decoder base = load_decoder(fx.model_dir.string(), mesh, {.recompute = recompute});
    LoraModel model(std::move(base), fx.config, test::fixture_adapters(fx, infos));
    ParameterSet& g = recompute ? g1 : g0;
    g = model.adapters().zeros_like();
    model.loss_and_grad(fx.batch, fx.token_count, g);
  }
  for (size_t i = 0; i < g0.size(); ++i) {
    EXPECT_EQ(rel_l2(g0.tensor(i), g1.tensor(i)), 0.0) << g0.info(i).name;
  }
}

// bf16 mixed precision (bf16 base as stored, bf16 GEMMs for the base, fp32 adapters): close to
// the fp32 run at bf16's precision, and the base stays bf16.
TEST_P(PeftFixtureTest, Bf16BaseAndComputeStayCloseToFp32) {
  const test::LoraFixture fx = load_lora_fixture(GetParam());
  Mesh mesh;
  Decoder base32 = load_decoder(fx.model_dir.string(), mesh);
  const std::vector<ParamInfo> infos = lora_adapter_infos(base32.params().infos(), fx.config, mesh);
  LoraModel m32(std::move(base32), fx.config, test::fixture_adapters(fx, infos));
  ParameterSet want = m32.adapters().zeros_like();
  const double want_loss = m32.loss_and_grad(fx.batch, fx.token_count, want).loss;
  Decoder base16 = load_decoder(fx.model_dir.string(), mesh,
                                {.weight_dtype = DType::kBF16, .compute_dtype = DType::kBF16});
  LoraModel m16(std::move(base16), fx.config, test::fixture_adapters(fx, infos));
  ParameterSet got = m16.adapters().zeros_like();
  const double loss = m16.loss_and_grad(fx.batch, fx.token_count, got).loss;
  EXPECT_LE(rel(loss, want_loss), 2e-2);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_LE(rel_l2(got.tensor(i), want.tensor(i)), 5e-2) << got.info(i).name;
  }
  for (size_t i = 0; i < m16.decoder().params().size(); ++i) {
    EXPECT_EQ(m16.decoder().params().tensor(i).dtype(), DType::kBF16);
  }
}

// --lora_dropout against PEFT with magix's masks reproduced in Python
// (tools/reference/make_lora_dropout_fixture.py: p 0.25, seed 5, step 3); p = 0 is the plain
// pass bit for bit; evaluation never drops; a different step draws other masks.
TEST(LoraDropout, MatchesPeftWithTheSameMasks) {
  const test::LoraFixture fx = load_lora_fixture("llama_gqa");
  const SafetensorsReader ref(test::kLoraFixtures / "llama_gqa" / "dropout.safetensors");
  ASSERT_EQ(ref.metadata().at("p"), "0.25");
  Mesh mesh;
  LoraConfig config = fx.config;
  const auto make = [&](double p) {
    config.dropout = p;
    Decoder base = load_decoder(fx.model_dir.string(), mesh);
    const std::vector<ParamInfo> infos = lora_adapter_infos(base.params().infos(), config, mesh);
    return LoraModel(std::move(base), config, test::fixture_adapters(fx, infos),
                     LoraModelOptions{.seed = 5});
  };
  LoraModel model = make(0.25);
  model.set_step(3, 1);
  ParameterSet grads = model.adapters().zeros_like();
  const double loss = model.loss_and_grad(fx.batch, fx.token_count, grads).loss;
  const double want_loss = ref.read_f32("loss").data<float>()[0];
  EXPECT_LE(rel(loss, want_loss), 1e-5) << loss << " vs PEFT " << want_loss;
  for (size_t i = 0; i < grads.size(); ++i) {
    const Tensor want = ref.read_f32("grad." + grads.info(i).name);
    EXPECT_LE(rel_l2(grads.tensor(i), want), 1e-4) << grads.info(i).name;
  }
  // The dropped pass differs from the plain one (else the comparison above proves nothing).
  const double plain_loss = fx.reader.read_f32("loss").data<float>()[0];
  EXPECT_GT(rel(want_loss, plain_loss), 1e-4);
  EXPECT_LE(rel(model.loss(fx.batch, fx.token_count).loss, plain_loss), 1e-5);  // no dropout
  // Another step: other masks.
  model.set_step(4, 1);
  ParameterSet other = model.adapters().zeros_like();
  model.loss_and_grad(fx.batch, fx.token_count, other);
  EXPECT_GT(rel_l2(other.tensor(0), grads.tensor(0)), 1e-3);

  // p = 0: the plain pass, bit for bit.
  LoraModel zero = make(0.0);
  zero.set_step(3, 1);
  ParameterSet g0 = zero.adapters().zeros_like();
  zero.loss_and_grad(fx.batch, fx.token_count, g0);
  config.dropout = 0;
  Decoder base = load_decoder(fx.model_dir.string(), mesh);
  base.set_adapters(
      test::fixture_adapters(fx, lora_adapter_infos(base.params().infos(), config, mesh)),
      config.scale());
  ParameterSet g1 = base.adapters().zeros_like();
  base.loss_and_adapter_grad(fx.batch, fx.token_count, g1);
  for (size_t i = 0; i < g0.size(); ++i) {
    EXPECT_EQ(rel_l2(g0.tensor(i), g1.tensor(i)), 0.0) << g0.info(i).name;
  }
}

TEST(LoraPeft, AdapterFolderHasPeftNamesAndConfig) {
  const test::LoraFixture fx = load_lora_fixture("qwen2_qv_down");
  Mesh mesh;
  Decoder base = load_decoder(fx.model_dir.string(), mesh);
  const std::vector<ParamInfo> infos = lora_adapter_infos(base.params().infos(), fx.config, mesh);
  const ParameterSet adapters = test::fixture_adapters(fx, infos);
  const std::filesystem::path tmp =
      std::filesystem::temp_directory_path() / fmt::format("magix_lora_peft_{}", ::getpid());
  std::filesystem::remove_all(tmp);
  const std::filesystem::path out = tmp / "adapter";
  write_peft_adapter(out, adapters, fx.config, "org/base-model");
  std::ifstream f(out / "adapter_config.json");
  const nlohmann::json cfg = nlohmann::json::parse(f);
  EXPECT_EQ(cfg.at("peft_type"), "LORA");
  EXPECT_EQ(cfg.at("task_type"), "CAUSAL_LM");
  EXPECT_EQ(cfg.at("r"), 2);
  EXPECT_EQ(cfg.at("lora_alpha"), 5);
  EXPECT_EQ(cfg.at("base_model_name_or_path"), "org/base-model");
  EXPECT_EQ(cfg.at("target_modules").size(), 6u);  // 2 layers x q, v, down
  EXPECT_EQ(cfg.at("target_modules")[0], "model.layers.0.self_attn.q_proj");
  SafetensorsReader st(out / "adapter_model.safetensors");
  ASSERT_EQ(st.entries().size(), adapters.size());
  for (size_t i = 0; i < adapters.size(); ++i) {
    const Tensor t = st.read_f32("base_model.model." + adapters.info(i).name);
    EXPECT_EQ(rel_l2(t, adapters.tensor(i)), 0.0) << adapters.info(i).name;
  }
  EXPECT_EQ(st.metadata().at("format"), "pt");
  // An existing non-empty folder is refused and left as it was.
  EXPECT_THROW(write_peft_adapter(out, adapters, fx.config, "x"), Error);
  EXPECT_TRUE(std::filesystem::exists(out / "adapter_model.safetensors"));
  // No temporary folder is left behind.
  size_t entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp)) entries += (void(e), 1);
  EXPECT_EQ(entries, 1u);
  std::filesystem::remove_all(tmp);
}

}  // namespace
}  // namespace magix
