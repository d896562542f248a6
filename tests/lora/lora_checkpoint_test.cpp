// LoRA adapters through a checkpoint step: merged at load (generate --lora) with PEFT's
// logits, the merged export parameters, the PEFT folder of a step, and the errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "../common/tensor_compare.hpp"
#include "lora_fixture.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"
#include "magix/lora.hpp"
#include "magix/safetensors.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
using test::rel_l2;

class LoraCheckpointTest : public testing::Test {
 protected:
  void SetUp() override {
    tmp_ = fs::temp_directory_path() / fmt::format("magix_lora_ckpt_{}", ::getpid());
    fs::remove_all(tmp_);
  }
  void TearDown() override { fs::remove_all(tmp_); }

  // Saves the llama_gqa fixture's adapters as step 3 of a train-lora run on `model_name`.
  fs::path save_fixture_step(const test::LoraFixture& fx, bool bf16_base = false) {
    Mesh mesh;
    Decoder base = load_decoder(fx.model_dir.string(), mesh);
    const auto infos = lora_adapter_infos(base.params().infos(), fx.config, mesh);
    adapters_ = test::fixture_adapters(fx, infos);
    CheckpointManager manager(tmp_ / "ckpt", mesh, CheckpointOptions{3, false});
    const nlohmann::json state = {{"step", 3},
                                  {"args",
                                   {{"model_name", fx.model_dir.string()},
                                    {"model_config", ""},
                                    {"seed", 42},
                                    {"bf16_model_weights", bf16_base}}},
                                  {"trainable",
                                   {{"lora_rank", fx.config.rank},
                                    {"lora_alpha", fx.config.alpha},
                                    {"lora_targets", fx.config.targets}}}};
    manager.save(3, {{"lora", sharded_tensors(adapters_)}}, state, {fx.model_dir / "config.json"});
    manager.wait();
    return manager.step_dir(3);
  }

  fs::path tmp_;
  ParameterSet adapters_;
};

TEST_F(LoraCheckpointTest, MergedAtLoadGivesPeftLogits) {
  const test::LoraFixture fx = test::load_lora_fixture("llama_gqa");
  const fs::path step = save_fixture_step(fx);
  EXPECT_TRUE(is_lora_checkpoint(step));
  EXPECT_EQ(resolve_lora_step(tmp_ / "ckpt"), step);  // a checkpoint dir: its latest step
  Mesh mesh;
  Decoder model = load_decoder(fx.model_dir.string(), mesh);
  const LoraConfig used = merge_lora_checkpoint(step, model, fx.config.alpha);
  EXPECT_EQ(used.rank, fx.config.rank);
  const Tensor logits = model.logits(fx.batch);
  const Tensor want = fx.reader.read_f32("logits");
  ASSERT_EQ(logits.numel(), want.numel());
  double max_ref = 0, max_diff = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    max_ref = std::max(max_ref, double(std::fabs(want.data<float>()[i])));
    max_diff =
        std::max(max_diff, double(std::fabs(logits.data<float>()[i] - want.data<float>()[i])));
  }
  EXPECT_LE(max_diff, 1e-4 * std::max(1.0, max_ref));
  const double loss = model.loss(fx.batch, fx.token_count).loss;
  EXPECT_NEAR(loss, fx.reader.read_f32("loss").data<float>()[0], 1e-5 * loss);
}

TEST_F(LoraCheckpointTest, MergedExportParametersAndAlphaOverride) {
  const test::LoraFixture fx = test::load_lora_fixture("llama_gqa");
  const fs::path step = save_fixture_step(fx);
  const LoraRunInfo run = read_lora_run_info(step);
  EXPECT_EQ(run.config.rank, fx.config.rank);
  EXPECT_EQ(run.config.alpha, fx.config.alpha);
  EXPECT_EQ(run.model_name, fx.model_dir.string());
  ModelConfig config;
  const ParameterSet merged = load_lora_merged_parameters(step, "", std::nullopt, &config);
  const ParameterSet doubled = load_lora_merged_parameters(step, "", 2 * fx.config.alpha, nullptr);
  EXPECT_EQ(config.num_layers, 2);
  Mesh mesh;
  Decoder base = load_decoder(fx.model_dir.string(), mesh);
  ParameterSet want = base.params();
  for (size_t i = 0; i < want.size(); ++i) want.tensor(i) = base.params().tensor(i).clone();
  merge_lora(want, adapters_, fx.config.scale());
  ASSERT_EQ(merged.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_LE(rel_l2(merged.tensor(i), want.tensor(i)), 1e-7) << want.info(i).name;
  }
  // Doubling alpha doubles W_eff - W.
  const std::string q = "model.layers.1.self_attn.q_proj.weight";
  const Tensor& w = base.params().at(q);
  Tensor d1(w.shape()), d2(w.shape());
  for (int64_t e = 0; e < w.numel(); ++e) {
    d1.data<float>()[e] = 2 * (merged.at(q).data<float>()[e] - w.data<float>()[e]);
    d2.data<float>()[e] = doubled.at(q).data<float>()[e] - w.data<float>()[e];
  }
  EXPECT_LE(rel_l2(d2, d1), 1e-5);
  EXPECT_GT(rel_l2(d1, Tensor(w.shape())), 0.5);
}

TEST_F(LoraCheckpointTest, PeftFolderOfAStep) {
  const test::LoraFixture fx = test::load_lora_fixture("llama_gqa");
  const fs::path step = save_fixture_step(fx);
  export_lora_peft(step, tmp_ / "peft", "org/base");
  SafetensorsReader st(tmp_ / "peft" / "adapter_model.safetensors");
  ASSERT_EQ(st.entries().size(), adapters_.size());
  for (size_t i = 0; i < adapters_.size(); ++i) {
    EXPECT_EQ(
        rel_l2(st.read_f32("base_model.model." + adapters_.info(i).name), adapters_.tensor(i)),
        0.0);
  }
  EXPECT_TRUE(fs::exists(tmp_ / "peft" / "adapter_config.json"));
}

TEST_F(LoraCheckpointTest, ErrorsNameTheProblem) {
  const test::LoraFixture fx = test::load_lora_fixture("llama_gqa");
  Mesh mesh;
  Decoder model = load_decoder(fx.model_dir.string(), mesh);
  // A checkpoint without item "lora".
  {
    CheckpointManager manager(tmp_ / "full", mesh, CheckpointOptions{3, false});
    manager.save(1, {{"model", sharded_tensors(model.params())}}, nlohmann::json::object());
    manager.wait();
  }
  try {
    merge_lora_checkpoint(tmp_ / "full" / "000001", model, 32);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no LoRA adapters"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(is_lora_checkpoint(tmp_ / "full" / "000001"));
  EXPECT_THROW(resolve_lora_step(tmp_ / "nothing_here"), Error);
  // Adapters of another model (qwen2's adapters onto llama_gqa).
  const test::LoraFixture other = test::load_lora_fixture("qwen2_qv_down");
  Decoder qwen = load_decoder(other.model_dir.string(), mesh);
  const auto infos = lora_adapter_infos(qwen.params().infos(), other.config, mesh);
  ParameterSet qa = test::fixture_adapters(other, infos);
  {
    CheckpointManager manager(tmp_ / "qwen", mesh, CheckpointOptions{3, false});
    manager.save(1, {{"lora", sharded_tensors(qa)}}, nlohmann::json::object());
    manager.wait();
  }
  try {
    merge_lora_checkpoint(tmp_ / "qwen" / "000001", model, 32);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another base model"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace magix
