// --eval_file during run_training: evaluating changes nothing in the run, and the eval loss is
// the token-weighted mean NLL computed independently from the model's logits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../common/tiny_train.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"
#include "../io/io_test_util.hpp"
#include "magix/evaluate.hpp"
#include "magix/lora.hpp"
#include "magix/mesh.hpp"
#include "magix/tokenizer.hpp"
#include "magix/trainer.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
const fs::path kFixtures = MAGIX_FIXTURES_DIR;

using test::TempDir;

// The tiny random llama on its corpus (48 examples, 12 steps); the first 13 records are the
// eval set (13: the last pass of 4 rows is partial).
TrainArgs tiny_args(const fs::path& eval_file) {
  TrainArgs a = test::tiny_train_args(kFixtures);
  a.num_epochs = 2;
  {
    std::ifstream in(a.train_file);
    std::ofstream out(eval_file);
    std::string line;
    for (int i = 0; i < 13 && std::getline(in, line); ++i) out << line << "\n";
  }
  a.eval_file = eval_file.string();
  a.per_device_eval_batch_size = 4;
  return a;
}

bool bytes_equal(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.bytes(), b.bytes(), a.nbytes()) == 0;
}

// Sum of -log softmax(logits[t-1])[ids[t]] over the counted targets of each example, one example
// at a time through Decoder::logits (no batching, no padding), in double.
std::pair<double, int64_t> reference_nll(Decoder& model, const std::vector<Example>& examples) {
  double nll = 0;
  int64_t tokens = 0;
  for (const Example& ex : examples) {
    TokenBatch b = make_causal_batch({ex.ids});
    const Tensor logits = model.logits(b);  // (1, T, V)
    const int64_t T = b.seq, V = logits.shape()[2];
    const float* l = logits.data<float>();
    for (int64_t t = 1; t < std::ssize(ex.ids) && t - 1 < T; ++t) {
      if (!ex.loss_mask[t]) continue;
      const float* row = l + (t - 1) * V;
      double mx = row[0];
      for (int64_t v = 1; v < V; ++v) mx = std::max<double>(mx, row[v]);
      double sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
      nll += mx + std::log(sum) - row[ex.ids[t]];
      ++tokens;
    }
  }
  return {nll, tokens};
}

TEST(TrainerEval, EvaluatingChangesNothingInTheRun) {
  TempDir tmp;
  Mesh mesh;
  TrainArgs with = tiny_args(tmp.path() / "eval.jsonl");
  with.eval_steps = 5;
  with.metrics_file = (tmp.path() / "metrics.jsonl").string();
  TrainArgs without = with;
  without.eval_file.clear();
  without.eval_steps = 0;
  without.metrics_file.clear();

  std::unique_ptr<Trainable> a = make_full_trainable(with, mesh);
  std::vector<EvalMetrics> seen;
  TrainHooks hooks;
  hooks.on_eval = [&](const EvalMetrics& e) { seen.push_back(e); };
  const TrainSummary sa = run_training(with, mesh, *a, hooks);
  std::unique_ptr<Trainable> b = make_full_trainable(without, mesh);
  const TrainSummary sb = run_training(without, mesh, *b);

  ASSERT_EQ(sa.losses.size(), 12u);
  ASSERT_EQ(sa.losses.size(), sb.losses.size());
  for (size_t i = 0; i < sa.losses.size(); ++i) EXPECT_EQ(sa.losses[i], sb.losses[i]) << i + 1;
  for (size_t i = 0; i < a->trainable().size(); ++i) {
    EXPECT_TRUE(bytes_equal(a->trainable().tensor(i), b->trainable().tensor(i)))
        << a->trainable().info(i).name;
  }
  // Every 5 steps and at the end.
  ASSERT_EQ(sa.evals.size(), 3u);
  EXPECT_EQ(sa.evals[0].step, 5);
  EXPECT_EQ(sa.evals[1].step, 10);
  EXPECT_EQ(sa.evals[2].step, 12);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_TRUE(sb.evals.empty());
  for (const EvalMetrics& e : sa.evals) {
    EXPECT_EQ(e.examples, 13);
    EXPECT_GT(e.tokens, 0);
    EXPECT_TRUE(std::isfinite(e.loss));
    EXPECT_DOUBLE_EQ(e.perplexity, std::exp(e.loss));
  }
  EXPECT_LT(sa.evals[2].loss, sa.evals[0].loss);  // it learns the corpus it is evaluated on

  // The metrics file: 12 step lines and 3 eval lines after the steps they follow.
  std::ifstream in(with.metrics_file);
  std::string line;
  int steps = 0, evals = 0;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("eval_loss")) {
      EXPECT_EQ(j.at("step").get<int64_t>(), sa.evals[evals].step);
      EXPECT_DOUBLE_EQ(j.at("eval_loss").get<double>(), sa.evals[evals].loss);
      EXPECT_DOUBLE_EQ(j.at("eval_perplexity").get<double>(), sa.evals[evals].perplexity);
      EXPECT_EQ(j.at("eval_tokens").get<int64_t>(), sa.evals[evals].tokens);
      EXPECT_EQ(j.at("step").get<int64_t>(), steps);
      ++evals;
    } else {
      EXPECT_EQ(j.at("step").get<int64_t>(), ++steps);
    }
  }
  EXPECT_EQ(steps, 12);
  EXPECT_EQ(evals, 3);
}

// The eval loss at the end equals the mean NLL over every counted target of the eval set,
// computed from the final weights' logits one example at a time.
TEST(TrainerEval, EvalLossIsTheTokenWeightedMeanNll) {
  TempDir tmp;
  Mesh mesh;
  TrainArgs a = tiny_args(tmp.path() / "eval.jsonl");
  a.max_steps = 3;
  a.per_device_eval_batch_size = 5;
  std::unique_ptr<Trainable> model = make_full_trainable(a, mesh);
  const TrainSummary s = run_training(a, mesh, *model);
  ASSERT_EQ(s.evals.size(), 1u);
  EXPECT_EQ(s.evals[0].step, 3);

  DatasetOptions o;
  o.path = a.eval_file;
  o.encode.max_length = a.max_length;
  const std::vector<Example> examples = load_examples(o, Tokenizer::load(a.tokenizer_name));
  const auto [nll, tokens] = reference_nll(model->decoder(), examples);
  EXPECT_EQ(s.evals[0].tokens, tokens);
  EXPECT_NEAR(s.evals[0].loss, nll / static_cast<double>(tokens), 1e-5 * nll / tokens);

  // Any eval batch size gives the same result (up to float rounding).
  for (int64_t bs : {1, 2, 13, 20}) {
    const EvalResult r = evaluate_examples(model->decoder(), examples, bs, 0);
    EXPECT_EQ(r.tokens, tokens) << bs;
    EXPECT_NEAR(r.mean_nll(), s.evals[0].loss, 1e-6 * s.evals[0].loss) << bs;
  }
}

// train-lora: the eval goes through the adapters (without dropout) and leaves the run unchanged.
TEST(TrainerEval, LoraEvalUsesTheAdaptersAndChangesNothing) {
  TempDir tmp;
  Mesh mesh;
  TrainArgs with = tiny_args(tmp.path() / "eval.jsonl");
  with.max_steps = 4;
  with.eval_steps = 2;
  TrainArgs without = with;
  without.eval_file.clear();
  without.eval_steps = 0;
  LoraConfig lora;
  lora.rank = 4;
  lora.dropout = 0.25;
  auto a = make_lora_trainable(with, lora, mesh, "");
  const TrainSummary sa = run_training(with, mesh, *a);
  auto b = make_lora_trainable(without, lora, mesh, "");
  const TrainSummary sb = run_training(without, mesh, *b);
  ASSERT_EQ(sa.losses.size(), sb.losses.size());
  for (size_t i = 0; i < sa.losses.size(); ++i) EXPECT_EQ(sa.losses[i], sb.losses[i]) << i + 1;
  ASSERT_EQ(sa.evals.size(), 2u);
  DatasetOptions o;
  o.path = with.eval_file;
  o.encode.max_length = with.max_length;
  const auto examples = load_examples(o, Tokenizer::load(with.tokenizer_name));
  const auto [nll, tokens] = reference_nll(a->decoder(), examples);
  EXPECT_NEAR(sa.evals[1].loss, nll / static_cast<double>(tokens), 1e-5 * nll / tokens);
}

TEST(TrainerEval, BadEvalArgumentsAreClearErrors) {
  TempDir tmp;
  TrainArgs a = tiny_args(tmp.path() / "eval.jsonl");
  a.eval_steps = -1;
  EXPECT_THROW(validate_train_args(a), Error);
  a.eval_steps = 0;
  a.per_device_eval_batch_size = 0;
  EXPECT_THROW(validate_train_args(a), Error);
  a.per_device_eval_batch_size = 1;
  a.eval_split = "";  // (a named split of a one-split source is ignored, as --split's is)
  try {
    validate_train_args(a);
    FAIL() << "an empty split must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--eval_split"), std::string::npos) << e.what();
  }
  a.eval_split = "validation";
  a.eval_file.clear();
  a.eval_steps = 3;
  EXPECT_THROW(validate_train_args(a), Error);
}

TEST(TrainerEval, NoCheckpointDirIsOneWarningLine) {
  TrainArgs a;
  const std::string w = unsaved_run_warning(a);
  EXPECT_EQ(w.rfind("WARNING: ", 0), 0u) << w;
  EXPECT_EQ(w.find('\n'), std::string::npos);
  EXPECT_NE(w.find("--checkpoint_dir"), std::string::npos);
  a.checkpoint_dir = "ckpt";
  EXPECT_TRUE(unsaved_run_warning(a).empty());
}

}  // namespace
}  // namespace magix
