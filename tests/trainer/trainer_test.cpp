// run_training: 10 steps against a PyTorch reference of the optimizer and schedule, exact
// resume on the same mesh, gradient accumulation, the schedule and the resume checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../common/json_wrong_types.hpp"
#include "../common/tensor_compare.hpp"
#include "../common/tiny_train.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"
#include "magix/mesh.hpp"
#include "magix/safetensors.hpp"
#include "magix/train_step.hpp"
#include "magix/trainer.hpp"
#include "train/trainer_checkpoint.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
const fs::path kFixtures = MAGIX_FIXTURES_DIR;

// A fresh folder under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string t = (fs::temp_directory_path() / "magix-trainer-test-XXXXXX").string();
    EXPECT_NE(mkdtemp(t.data()), nullptr);
    path_ = t;
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// The tiny random llama of tests/fixtures/train on its corpus: 48 examples, 6 steps per epoch.
TrainArgs tiny_args() {
  TrainArgs a = test::tiny_train_args(kFixtures);
  a.num_epochs = 2;
  return a;
}

bool bytes_equal(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.bytes(), b.bytes(), a.nbytes()) == 0;
}

TEST(Trainer, TenStepsMatchPytorchReference) {
  const nlohmann::json ref =
      nlohmann::json::parse(std::ifstream(kFixtures / "train/reference.json"));
  const nlohmann::json& ra = ref.at("args");
  std::vector<Example> examples;
  for (const auto& e : ref.at("examples")) {
    examples.push_back(
        {e.at("ids").get<std::vector<int32_t>>(), e.at("loss_mask").get<std::vector<uint8_t>>()});
  }
  for (int64_t accum : {1, 2}) {
    SCOPED_TRACE("gradient_accumulation_steps " + std::to_string(accum));
    TrainArgs a;
    a.model_name = (kFixtures / "models/llama_gqa").string();
    // A 224-token tokenizer with an eos (the model has 256 ids); only its pad id is used.
    a.tokenizer_name = (kFixtures / "train/gqa_tokenizer").string();
    a.max_length = ra.at("max_length");
    a.batch_size = ra.at("batch_size");
    a.num_epochs = ra.at("num_epochs");  // one step per epoch: every step sees all 4 rows
    a.gradient_accumulation_steps = accum;
    a.learning_rate = ra.at("learning_rate");
    a.warmup_ratio = ra.at("warmup_ratio");
    a.weight_decay = ra.at("weight_decay");
    a.adam_beta1 = ra.at("adam_beta1");
    a.adam_beta2 = ra.at("adam_beta2");
    a.adam_eps = ra.at("adam_eps");
    a.max_grad_norm = ra.at("max_grad_norm");
    a.progress = "none";
    a.mesh_shape = {1, 1};
    Mesh mesh;
    std::unique_ptr<Trainable> model = make_full_trainable(a, mesh);
    std::vector<StepMetrics> steps;
    TrainHooks hooks;
    hooks.load_examples = [&](const Tokenizer&) { return examples; };
    hooks.on_step = [&](const StepMetrics& m) { steps.push_back(m); };
    const TrainSummary s = run_training(a, mesh, *model, hooks);

    const auto& losses = ref.at("losses");
    ASSERT_EQ(s.losses.size(), losses.size());
    ASSERT_EQ(steps.size(), losses.size());
    for (size_t i = 0; i < losses.size(); ++i) {
      const double want = losses[i];
      EXPECT_NEAR(s.losses[i], want, 1e-5 * std::abs(want)) << "step " << i + 1;
      EXPECT_NEAR(steps[i].lr, ref.at("lrs")[i].get<double>(), 1e-12) << "step " << i + 1;
      const double gn = ref.at("grad_norms")[i];
      EXPECT_NEAR(steps[i].grad_norm, gn, 1e-4 * gn) << "step " << i + 1;
      EXPECT_EQ(steps[i].tokens, ref.at("counted_targets").get<int64_t>());
    }
    const SafetensorsReader want(kFixtures / "train/reference_final.safetensors");
    const ParameterSet& params = model->trainable();
    ASSERT_EQ(params.size(), want.entries().size());
    double worst = 0.0;
    for (size_t i = 0; i < params.size(); ++i) {
      const Tensor w = want.read_f32(params.info(i).name);
      const double err = test::rel_l2(params.tensor(i), w);
      EXPECT_LT(err, 1e-5) << params.info(i).name;
      worst = std::max(worst, err);
    }
    RecordProperty("worst_param_rel_l2_k" + std::to_string(accum), std::to_string(worst));
    std::printf("accumulation %lld: worst parameter relative L2 %.3g\n",
                static_cast<long long>(accum), worst);
  }
}

// N steps straight and N/2 + restart + N/2 give the same losses and parameters bit for bit, with
// fp32 and with bf16 weights (bf16 values are saved as they are; the moments are fp32).
TEST(Trainer, StopAndResumeIsBitIdenticalOnTheSameMesh) {
  for (bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16 weights" : "fp32 weights");
    TempDir tmp;
    Mesh mesh;
    TrainArgs a = tiny_args();  // 12 steps
    a.bf16_model_weights = bf16;
    a.save_steps = 100;  // only at the end (and where the run is stopped)
    a.checkpoint_dir = (tmp.path() / "straight").string();
    std::unique_ptr<Trainable> straight = make_full_trainable(a, mesh);
    const TrainSummary full = run_training(a, mesh, *straight);
    ASSERT_EQ(full.losses.size(), 12u);
    EXPECT_EQ(full.last_checkpoint, (tmp.path() / "straight" / "000012").string());
    EXPECT_EQ(straight->trainable().tensor(0).dtype(), bf16 ? DType::kBF16 : DType::kF32);

    a.checkpoint_dir = (tmp.path() / "split").string();
    std::vector<double> losses;
    {
      std::unique_ptr<Trainable> first = make_full_trainable(a, mesh);
      TrainHooks hooks;
      hooks.should_stop = [](const StepMetrics& m) { return m.step == 5; };
      const TrainSummary s = run_training(a, mesh, *first, hooks);
      EXPECT_EQ(s.end_step, 5);
      EXPECT_EQ(s.last_checkpoint, (tmp.path() / "split" / "000005").string());
      losses = s.losses;
    }
    std::unique_ptr<Trainable> second = make_full_trainable(a, mesh);  // fresh random init
    const TrainSummary s = run_training(a, mesh, *second);
    ASSERT_TRUE(s.resumed_from.has_value());
    EXPECT_EQ(s.start_step, 5);
    EXPECT_EQ(s.end_step, 12);
    losses.insert(losses.end(), s.losses.begin(), s.losses.end());
    ASSERT_EQ(losses.size(), full.losses.size());
    for (size_t i = 0; i < losses.size(); ++i) {
      EXPECT_EQ(losses[i], full.losses[i]) << "step " << i + 1;
    }
    for (size_t i = 0; i < straight->trainable().size(); ++i) {
      EXPECT_TRUE(bytes_equal(straight->trainable().tensor(i), second->trainable().tensor(i)))
          << straight->trainable().info(i).name;
    }
    // A third run with the same folder has nothing left to do and changes nothing.
    const TrainSummary again = run_training(a, mesh, *second);
    EXPECT_TRUE(again.losses.empty());
    EXPECT_EQ(again.end_step, 12);
  }
}

TEST(Trainer, ResumeRefusesChangedDataSettingsAndSaysWhat) {
  TempDir tmp;
  Mesh mesh;
  TrainArgs a = tiny_args();
  a.max_steps = 2;
  a.checkpoint_dir = tmp.path().string();
  {
    std::unique_ptr<Trainable> m = make_full_trainable(a, mesh);
    run_training(a, mesh, *m);
  }
  TrainArgs b = a;
  b.batch_size = 4;
  b.seed = 7;
  std::unique_ptr<Trainable> m = make_full_trainable(b, mesh);
  try {
    run_training(b, mesh, *m);
    FAIL() << "resuming with another batch size must fail";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("--batch_size: checkpoint has 8, this run has 4"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--seed: checkpoint has 42, this run has 7"), std::string::npos) << msg;
  }
}

// The gradient of a step split into micro-batches of different token counts equals the one-batch
// gradient: each micro-batch's loss is normalised by the whole step's count, not its own.
TEST(Trainer, GradientAccumulationGivesTheOneBatchGradient) {
  Mesh mesh;
  TrainArgs a = tiny_args();
  std::vector<std::vector<int32_t>> rows;
  for (int r = 0; r < 8; ++r) {
    std::vector<int32_t> ids;
    for (int t = 0; t < 4 + 3 * r; ++t) ids.push_back((r * 131 + t * 17) % 700);
    rows.push_back(ids);
  }
  const TokenBatch batch = make_causal_batch(rows, 0);
  std::vector<ParameterSet> grads;
  std::vector<double> losses;
  for (int64_t k : {1, 2, 4}) {
    FullTrainable model(load_train_decoder(a, mesh));
    AdamW opt = make_opt_state(AdamWOptions{}, model.trainable());
    std::vector<TokenBatch> micro;
    for (int64_t i = 0; i < k; ++i) micro.push_back(slice_rows(batch, i * 8 / k, 8 / k));
    ParameterSet g(model.trainable().infos());
    const TrainStepResult r = train_step(model, opt, micro, 0.0, g);
    EXPECT_EQ(r.tokens, batch.count_targets());
    losses.push_back(r.loss);
    grads.push_back(std::move(g));
  }
  for (size_t k = 1; k < grads.size(); ++k) {
    EXPECT_NEAR(losses[k], losses[0], 1e-6 * losses[0]);
    for (size_t i = 0; i < grads[0].size(); ++i) {
      EXPECT_LT(test::rel_l2(grads[k].tensor(i), grads[0].tensor(i)), 1e-6)
          << grads[0].info(i).name;
    }
  }
}

// The same through the trainer: its micro-batch split gives the losses of one big batch. (The
// parameters after a few AdamW steps are not compared: Adam divides by sqrt(v), so float-order
// noise in near-zero gradient elements becomes lr-sized; the gradients are compared above.)
TEST(Trainer, GradientAccumulationKeepsTheLosses) {
  Mesh mesh;
  std::vector<std::vector<double>> losses;
  for (int64_t k : {1, 2, 4}) {
    TrainArgs a = tiny_args();
    a.max_steps = 4;
    a.gradient_accumulation_steps = k;
    std::unique_ptr<Trainable> m = make_full_trainable(a, mesh);
    losses.push_back(run_training(a, mesh, *m).losses);
  }
  for (size_t k = 1; k < losses.size(); ++k) {
    ASSERT_EQ(losses[k].size(), 4u);
    for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(losses[k][i], losses[0][i], 1e-6 * losses[0][i]);
  }
}

// The schedule as the reference builds it (optax warmup_cosine_decay_schedule, init 0, end 0).
double reference_lr(int64_t count, double peak, int64_t warmup, int64_t decay_end) {
  if (count < warmup) return peak * static_cast<double>(count) / static_cast<double>(warmup);
  const double t =
      std::min(1.0, static_cast<double>(count - warmup) / static_cast<double>(decay_end - warmup));
  return peak * 0.5 * (1.0 + std::cos(M_PI * t));
}

TEST(Trainer, ScheduleMetricsAndTheReferenceTail) {
  TempDir tmp;
  Mesh mesh;
  TrainArgs a = tiny_args();
  a.max_steps = 20;  // past the 6 steps of an epoch: the loader moves on to the next epochs
  a.metrics_file = (tmp.path() / "metrics.jsonl").string();
  for (double decay_ratio : {1.0, 0.9}) {
    a.lr_decay_ratio = decay_ratio;
    std::unique_ptr<Trainable> m = make_full_trainable(a, mesh);
    std::vector<StepMetrics> steps;
    TrainHooks hooks;
    hooks.on_step = [&](const StepMetrics& s) { steps.push_back(s); };
    const TrainSummary s = run_training(a, mesh, *m, hooks);
    ASSERT_EQ(steps.size(), 20u);
    EXPECT_EQ(steps.back().epoch, 3);  // steps 19-20 come from the fourth epoch
    const int64_t decay_end = decay_ratio == 1.0 ? 20 : 18;
    for (size_t i = 0; i < steps.size(); ++i) {
      EXPECT_NEAR(steps[i].lr, reference_lr(static_cast<int64_t>(i), 1e-2, 2, decay_end), 1e-15);
    }
    if (decay_ratio == 0.9) {
      EXPECT_EQ(steps[18].lr, 0.0);  // the reference trains its last 10% at lr 0
      EXPECT_EQ(steps[19].lr, 0.0);
    } else {
      EXPECT_GT(steps[19].lr, 0.0);
    }
    std::ifstream in(a.metrics_file);
    std::string line;
    int64_t n = 0;
    while (std::getline(in, line)) {
      const nlohmann::json j = nlohmann::json::parse(line);
      ++n;
      EXPECT_EQ(j.at("step").get<int64_t>(), n);
      EXPECT_DOUBLE_EQ(j.at("loss").get<double>(), s.losses.at(n - 1));
      EXPECT_DOUBLE_EQ(j.at("lr").get<double>(), steps.at(n - 1).lr);
      for (const char* key : {"grad_norm", "tokens_per_s", "skipped", "tokens", "epoch"}) {
        EXPECT_TRUE(j.contains(key)) << key;
      }
    }
    EXPECT_EQ(n, 20);
  }
}

TEST(Trainer, BadArgumentsAreClearErrors) {
  Mesh mesh;
  const auto expect_error = [&](TrainArgs a, const std::string& want) {
    try {
      validate_train_args(a);
      std::unique_ptr<Trainable> m = make_full_trainable(a, mesh);
      run_training(a, mesh, *m);
      ADD_FAILURE() << "expected an error containing: " << want;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  TrainArgs a = tiny_args();
  a.gradient_accumulation_steps = 3;
  expect_error(a, "--batch_size 8 does not divide into --gradient_accumulation_steps 3");
  a = tiny_args();
  a.model_name = "somewhere";
  expect_error(a, "give exactly one of --model_name");
  a = tiny_args();
  a.lr_schedule = "cosine";
  expect_error(a, "unknown learning-rate schedule 'cosine'");
  a = tiny_args();
  a.model_type = "gemma";
  expect_error(a, "pass --model_type llama");
  a = tiny_args();
  a.batch_size = 64;  // 48 examples: not one full batch
  expect_error(a, "");
  a = tiny_args();
  a.train_file = "/nonexistent/data.jsonl";
  expect_error(a, "/nonexistent/data.jsonl");
}

// A step's trainer_state.json with the fields a resume reads of the wrong type (optimizer
// counters, step, data position): a magix::Error naming the file and the field, never a JSON
// library exception.
TEST(Trainer, ResumeStateWithWrongTypesNamesTheField) {
  TempDir tmp;
  Mesh mesh;
  const TrainArgs a = tiny_args();
  std::unique_ptr<Trainable> model = make_full_trainable(a, mesh);
  AdamW optimizer = make_opt_state(AdamWOptions{}, model->trainable());
  std::vector<Example> examples(16);
  for (size_t i = 0; i < examples.size(); ++i) {
    examples[i].ids = {1, static_cast<int32_t>(2 + i), 3};
    examples[i].loss_mask = {1, 1, 1};
  }
  LoaderOptions lo;
  lo.global_batch = 4;
  lo.max_length = 8;
  DataLoader loader(examples, lo);
  const nlohmann::json valid =
      detail::make_trainer_state(a, *model, optimizer, loader, 0, 4, 0);
  CheckpointManager manager(tmp.path(), mesh, CheckpointOptions{0, false});
  int64_t step = 0;
  std::string state_file;
  const auto read = [&](const nlohmann::json& state) {
    manager.save(++step, detail::training_items(*model, optimizer), state);
    manager.wait();
    state_file = (manager.step_dir(step) / "trainer_state.json").string();
    (void)detail::restore_training(CheckpointReader(manager.step_dir(step)), *model, optimizer,
                                   loader);
  };
  const std::vector<test::JsonField> fields = {
      {"/optimizer", false, "", {"x", 7, true, nlohmann::json::array({1}), nullptr}},
      {"/optimizer/updates"},
      {"/optimizer/consecutive_skipped"},
      {"/data", false, "", {"x", 7, true, nlohmann::json::array({1}), nullptr}},
      {"/data/epoch"},
      {"/data/step"},
      {"/data/version"},
      {"/step"},
  };
  test::expect_wrong_types_named(valid, fields, read);
  nlohmann::json bad = valid;
  bad["optimizer"]["updates"] = "3";
  try {
    read(bad);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              state_file + ": \"optimizer\": \"updates\" must be an integer, found string \"3\"");
  }
  try {
    read(nlohmann::json::array());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(state_file + " must be an object, found list"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace magix
