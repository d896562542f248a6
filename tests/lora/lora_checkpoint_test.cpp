// LoRA adapters through a checkpoint step: merged at load (generate --lora) with PEFT's
// logits, the merged export parameters, the PEFT folder of a step, and the errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "../common/json_wrong_types.hpp"
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
    nlohmann::json state = {{"step", 3},
                            {"args",
                             {{"model_name", fx.model_dir.string()},
                              {"model_config", ""},
                              {"seed", 42},
                              {"bf16_model_weights", bf16_base}}},
                            {"trainable",
                             {{"lora_rank", fx.config.rank},
                              {"lora_alpha", fx.config.alpha},
                              {"lora_targets", fx.config.targets}}}};
    if (fx.config.rslora) state["trainable"]["lora_use_rslora"] = true;
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

// The largest |logit - PEFT's logit| relative to max(1, max |PEFT logit|).
double logits_error(const Tensor& got, const Tensor& want) {
  double max_ref = 0, max_diff = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    max_ref = std::max(max_ref, double(std::fabs(want.data<float>()[i])));
    max_diff = std::max(max_diff, double(std::fabs(got.data<float>()[i] - want.data<float>()[i])));
  }
  return max_diff / std::max(1.0, max_ref);
}

// generate --lora without --lora_alpha: the alpha saved with the adapters (12 in the fixture,
// not the reference's default 32); --lora_alpha overrides it.
TEST_F(LoraCheckpointTest, GenerateLoraUsesTheTrainedAlphaUnlessOverridden) {
  const test::LoraFixture fx = test::load_lora_fixture("llama_gqa");
  ASSERT_NE(fx.config.alpha, 32.0);
  const fs::path step = save_fixture_step(fx);
  Mesh mesh;
  Decoder model = load_decoder(fx.model_dir.string(), mesh);
  const LoraConfig used = merge_lora_adapters(tmp_ / "ckpt", model);  // no alpha given
  EXPECT_EQ(used.alpha, fx.config.alpha);
  EXPECT_EQ(used.rank, fx.config.rank);
  EXPECT_EQ(used.targets, fx.config.targets);
  const Tensor want = fx.reader.read_f32("logits");
  EXPECT_LE(logits_error(model.logits(fx.batch), want), 1e-4);
  Decoder other = load_decoder(fx.model_dir.string(), mesh);
  EXPECT_EQ(merge_lora_adapters(step, other, 32.0).alpha, 32.0);
  EXPECT_GT(logits_error(other.logits(fx.batch), want), 1e-2);
}

// A PEFT folder made by PEFT's save_pretrained (tools/reference/make_peft_adapter_fixture.py)
// holding the qwen2_qv_down adapters: read with its settings, merged at load (generate --lora)
// it gives PEFT's logits, and as --lora_init the PEFT gradients.
TEST_F(LoraCheckpointTest, PeftFolderForGenerateAndLoraInit) {
  const test::LoraFixture fx = test::load_lora_fixture("qwen2_qv_down");
  const fs::path dir = test::kLoraFixtures / "qwen2_qv_down" / "peft";
  ASSERT_TRUE(is_peft_adapter_dir(dir));
  Mesh mesh;
  Decoder model = load_decoder(fx.model_dir.string(), mesh);
  const LoadedLora lora = read_peft_adapter(dir, model.params().infos(), mesh);
  EXPECT_EQ(lora.config.rank, 2);
  EXPECT_EQ(lora.config.alpha, 5.0);
  EXPECT_EQ(lora.config.dropout, 0.0);
  const ParameterSet want =
      test::fixture_adapters(fx, lora_adapter_infos(model.params().infos(), fx.config, mesh));
  ASSERT_EQ(lora.adapters.size(), want.size());
  ASSERT_EQ(lora.adapters.size(), 12u);  // 2 layers x q, v, down: A and B
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(lora.adapters.info(i).name, want.info(i).name);
    EXPECT_EQ(rel_l2(lora.adapters.tensor(i), want.tensor(i)), 0.0) << want.info(i).name;
  }
  merge_lora_adapters(dir, model);
  EXPECT_LE(logits_error(model.logits(fx.batch), fx.reader.read_f32("logits")), 1e-4);

  TrainArgs args;
  args.model_name = fx.model_dir.string();
  args.model_type = "qwen2";
  std::unique_ptr<LoraTrainable> t = make_lora_trainable(args, fx.config, mesh, dir);
  ParameterSet grads = t->trainable().zeros_like();
  const double loss = t->loss_and_grad(fx.batch, fx.token_count, grads).loss;
  EXPECT_LE(test::rel(loss, fx.reader.read_f32("loss").data<float>()[0]), 1e-5);
  for (size_t i = 0; i < grads.size(); ++i) {
    EXPECT_LE(rel_l2(grads.tensor(i), fx.reader.read_f32("grad." + grads.info(i).name)), 1e-4)
        << grads.info(i).name;
  }
  // Adapters of another rank than the run's are refused, naming the folder.
  LoraConfig wrong = fx.config;
  wrong.rank = 3;
  EXPECT_THROW(make_lora_trainable(args, wrong, mesh, dir), Error);
  // Settings magix does not implement are errors.
  const fs::path bad = tmp_ / "dora";
  fs::create_directories(bad);
  fs::copy_file(dir / "adapter_model.safetensors", bad / "adapter_model.safetensors");
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(dir / "adapter_config.json"));
  cfg["use_dora"] = true;
  std::ofstream(bad / "adapter_config.json") << cfg.dump();
  try {
    read_peft_adapter(bad, model.params().infos(), mesh);
    ADD_FAILURE() << "use_dora accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("use_dora"), std::string::npos) << e.what();
  }
}

// Rank-stabilised LoRA (PEFT's use_rslora, scale alpha / sqrt(r)): the fixture's adapters written
// as a PEFT folder and as a train-lora step read back with the setting, and merged they give
// PEFT's logits (scale 6 for r 4, alpha 12; plain LoRA's 3 does not); --lora_init refuses a run
// whose --use_rslora differs.
TEST_F(LoraCheckpointTest, RsloraAdaptersKeepTheirScale) {
  const test::LoraFixture fx = test::load_lora_fixture("llama_gqa_rslora");
  ASSERT_TRUE(fx.config.rslora);
  EXPECT_DOUBLE_EQ(fx.config.scale(), 6.0);
  const Tensor want = fx.reader.read_f32("logits");
  const fs::path step = save_fixture_step(fx);
  Mesh mesh;
  Decoder from_step = load_decoder(fx.model_dir.string(), mesh);
  EXPECT_TRUE(merge_lora_adapters(step, from_step).rslora);
  EXPECT_LE(logits_error(from_step.logits(fx.batch), want), 1e-4);

  const fs::path peft = tmp_ / "peft_rslora";
  write_peft_adapter(peft, adapters_, fx.config, "org/base");
  EXPECT_TRUE(nlohmann::json::parse(std::ifstream(peft / "adapter_config.json")).at("use_rslora"));
  Decoder model = load_decoder(fx.model_dir.string(), mesh);
  const LoadedLora lora = read_peft_adapter(peft, model.params().infos(), mesh);
  EXPECT_TRUE(lora.config.rslora);
  merge_lora_adapters(peft, model);
  EXPECT_LE(logits_error(model.logits(fx.batch), want), 1e-4);
  LoraConfig plain = fx.config;
  plain.rslora = false;
  Decoder wrong = load_decoder(fx.model_dir.string(), mesh);
  merge_lora(wrong.params(), lora.adapters, plain.scale());
  EXPECT_GT(logits_error(wrong.logits(fx.batch), want), 1e-2);

  TrainArgs args;
  args.model_name = fx.model_dir.string();
  args.model_type = "llama";
  try {
    make_lora_trainable(args, plain, mesh, peft);
    ADD_FAILURE() << "--lora_init of rsLoRA adapters into a plain LoRA run accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("pass --use_rslora"), std::string::npos) << e.what();
  }
  std::unique_ptr<LoraTrainable> t = make_lora_trainable(args, fx.config, mesh, peft);
  ParameterSet grads = t->trainable().zeros_like();
  const double loss = t->loss_and_grad(fx.batch, fx.token_count, grads).loss;
  EXPECT_LE(test::rel(loss, fx.reader.read_f32("loss").data<float>()[0]), 1e-5);
  EXPECT_EQ(t->describe().at("lora_use_rslora"), true);
}

// adapter_config.json with fields of the wrong type (a string for r, a number for a module name,
// an object for target_modules, null): a magix::Error naming the file and the field, never a
// JSON library exception; so is a file whose top level is not an object.
TEST_F(LoraCheckpointTest, AdapterConfigWrongTypesNameTheField) {
  const test::LoraFixture fx = test::load_lora_fixture("qwen2_qv_down");
  const fs::path peft = test::kLoraFixtures / "qwen2_qv_down" / "peft";
  Mesh mesh;
  Decoder model = load_decoder(fx.model_dir.string(), mesh);
  const std::vector<ParamInfo> infos = model.params().infos();
  const fs::path dir = tmp_ / "peft";
  fs::create_directories(dir);
  fs::copy_file(peft / "adapter_model.safetensors", dir / "adapter_model.safetensors");
  const nlohmann::json valid = nlohmann::json::parse(std::ifstream(peft / "adapter_config.json"));
  const auto read = [&](const nlohmann::json& j) {
    { std::ofstream(dir / "adapter_config.json") << j.dump(); }
    (void)read_peft_adapter(dir, infos, mesh);
  };
  const std::vector<test::JsonField> fields = {
      {"/r"},
      {"/lora_alpha"},
      {"/lora_dropout", true},
      {"/peft_type", true},
      {"/bias", true},
      // A list of module names or one regex string.
      {"/target_modules", false, "", {7, 2.5, true, nlohmann::json{{"k", 1}}, nullptr}},
      {"/target_modules/1", false, "\"target_modules\"[1]"},
  };
  test::expect_wrong_types_named(valid, fields, read);
  EXPECT_GT(test::expect_only_magix_errors(valid, read), 100u);
  for (const char* top : {"[]", "3", "\"r\""}) {
    { std::ofstream(dir / "adapter_config.json") << top; }
    try {
      (void)read_peft_adapter(dir, infos, mesh);
      ADD_FAILURE() << top << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(
          std::string(e.what()).find((dir / "adapter_config.json").string() + " must be an object"),
          std::string::npos)
          << e.what();
    }
  }
  // The message names the file, the key, the expected and the found type.
  nlohmann::json bad = valid;
  bad["r"] = "8";
  try {
    read(bad);
    ADD_FAILURE() << "r = \"8\" accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), (dir / "adapter_config.json").string() +
                                         ": \"r\" must be an integer, found string \"8\"");
  }
}

// A train-lora step's trainer_state.json with fields of the wrong type: a magix::Error naming
// the field, never a JSON library exception.
TEST_F(LoraCheckpointTest, RunInfoWrongTypesNameTheField) {
  Mesh mesh;
  CheckpointManager manager(tmp_ / "state", mesh, CheckpointOptions{0, false});
  int64_t step = 0;
  const auto read = [&](const nlohmann::json& state) {
    manager.save(++step, {}, state);
    manager.wait();
    (void)read_lora_run_info(manager.step_dir(step));
  };
  const nlohmann::json valid = {
      {"step", 3},
      {"args",
       {{"model_name", "m"}, {"model_config", ""}, {"seed", 42}, {"bf16_model_weights", false}}},
      {"trainable",
       {{"lora_rank", 2}, {"lora_alpha", 5.0}, {"lora_targets", "q_proj"}, {"lora_dropout", 0.0}}}};
  const std::vector<test::JsonField> fields = {
      {"/args"},
      {"/args/model_name", true},
      {"/args/model_config", true},
      {"/args/seed", true},
      {"/args/bf16_model_weights", true},
      {"/trainable"},
      {"/trainable/lora_rank"},
      {"/trainable/lora_alpha"},
      {"/trainable/lora_targets"},
      {"/trainable/lora_dropout", true},
  };
  test::expect_wrong_types_named(valid, fields, read);
  test::expect_only_magix_errors(valid, read);
}

}  // namespace
}  // namespace magix
