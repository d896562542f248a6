// The offline demo (`magix demo`): a synthetic chat task with an exactly checkable answer, a
// character-level tokenizer, a small Llama trained from scratch on it by run_training (the
// library entry point of `magix train`), and greedy answers for held-out prompts from the
// checkpoint by run_generation (`magix generate`), scored by exact match. Everything is written
// under one work directory.
//
// The task: "add two `digits`-digit numbers". The user turn is "a+b" with both operands
// zero-padded to `digits` digits ("42+07"); the assistant turn is the sum written with
// digits + 1 digits, least significant digit first ("940" for 49 = 049). Writing the sum
// backwards lets a causal model produce each digit right after the carry it depends on (the
// usual format for teaching addition to small transformers). See docs/cli.md ("magix demo").
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "magix/mesh.hpp"
#include "magix/tokenizer.hpp"

namespace magix {

// ---------------------------------------------------------------------------------------------
// The task and its files

struct DemoTask {
  int digits = 2;                 // operand width (1..9)
  int64_t train_examples = 8000;  // distinct (a, b) pairs to train on
  int64_t test_examples = 200;    // distinct held-out pairs, never among the training pairs
  uint64_t seed = 42;             // the problems are a pure function of (digits, counts, seed)
};

struct DemoProblem {
  int64_t a = 0;
  int64_t b = 0;
  std::string prompt;  // "42+07"
  std::string answer;  // "940": a + b with digits + 1 digits, least significant first
};

// The problem a + b (both in [0, 10^digits)).
DemoProblem make_demo_problem(int64_t a, int64_t b, int digits);

// The sum an answer string stands for ("940" -> 49); -1 when it is not digits + 1 digits.
int64_t demo_answer_value(const std::string& answer, int digits);

struct DemoData {
  std::vector<DemoProblem> train;
  std::vector<DemoProblem> test;  // no (a, b) pair of test is in train
};

// Distinct pairs drawn with a SplitMix64 stream from `seed`: the test pairs first, then the
// training pairs among the rest. Throws when the counts exceed the 10^(2·digits) pairs.
DemoData make_demo_data(const DemoTask& task);

// tokenizer.json of the demo: a BPE model without merges over single characters (the special
// tokens <pad>, </s>, <unk>, <|user|>, <|assistant|>, then newline, space, printable ASCII), no
// normalizer or pre-tokenizer, a Fuse decoder. HF `tokenizers` loads it with the same ids.
std::string demo_tokenizer_json();

// tokenizer_config.json: eos </s>, pad <pad>, unk <unk>, and the chat template
//   <|user|>\n{content}</s><|assistant|>\n{content}</s>   (other roles raise an error)
// whose generation prompt is "<|assistant|>\n".
nlohmann::ordered_json demo_tokenizer_config();

// The default model: a small Llama (config.json fields) for a vocabulary of `vocab_size`
// (examples/configs/demo_llama.json is this for the demo tokenizer, vocab_size 128).
nlohmann::ordered_json demo_model_config(int64_t vocab_size);

// A training record {"messages": [user, assistant]} and a prompt record {"prompt", "answer"}.
nlohmann::ordered_json demo_train_record(const DemoProblem& p);
nlohmann::ordered_json demo_test_record(const DemoProblem& p);

// ---------------------------------------------------------------------------------------------
// The workflow

struct DemoOptions {
  std::filesystem::path work_dir;      // created if absent; must not already hold a demo run
  bool overwrite = false;              // allow a work_dir that holds a previous demo run
  std::vector<int> mesh_shape{-1, 1};  // as passed (recorded in the train/generate args)
  DemoTask task;
  std::filesystem::path model_config;  // a config.json to use instead of demo_model_config
  int64_t steps = 1200;
  int64_t batch_size = 64;  // global batch (rows)
  double learning_rate = 2e-3;
  int64_t warmup_steps = 100;
  double weight_decay = 0.01;
  uint64_t seed = 42;  // model init and data order
  int64_t log_every = 100;
  bool quiet = false;  // print only the summary
  bool bf16 = false;   // bf16 mixed precision for training and generation
};

struct DemoReport {
  std::filesystem::path work_dir;
  std::filesystem::path checkpoint;  // the checkpoint step of the last training step
  int64_t steps = 0;
  double loss_first = 0.0;                   // loss of the first step
  double loss_last = 0.0;                    // mean loss of the last min(steps, 50) steps
  double train_seconds = 0.0;                // wall time of the training loop
  double train_tokens_per_second = 0.0;      // counted (assistant) targets per second
  double train_row_tokens_per_second = 0.0;  // all positions of the rows per second
  int64_t test_examples = 0;
  int64_t correct = 0;
  double accuracy = 0.0;  // correct / test_examples
  double generate_seconds = 0.0;
  double generate_tokens_per_second = 0.0;  // generated tokens per second
  std::vector<std::string> commands;        // how to continue (generate, export)
};

// Runs the whole demo on `mesh` (collective: every rank calls it; world rank 0 writes the
// files, run_training / run_generation write theirs as they document). Returns the same
// accuracy figures on every rank; world rank 0 prints the progress and the result.
DemoReport run_demo(const DemoOptions& options, const Mesh& mesh);

}  // namespace magix
