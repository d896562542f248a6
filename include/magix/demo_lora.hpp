// The pretrained-model demo (`magix demo --model smollm2`): LoRA fine-tuning of a GGUF model
// (SmolLM2-135M-Instruct Q4_1 by default, fetched by scripts/fetch_smollm2.sh) on a task it does
// badly, with held-out accuracy measured before and after, a few chat answers, and the result
// exported as GGUF and as an HF folder. Every stage is a library entry point of the CLI:
// run_generation (`magix generate`), make_lora_trainable + run_training (`magix train-lora`),
// export_checkpoint_gguf and write_hf_folder (`magix export`). See docs/lora.md.
//
// The task: write a date given in words ("March 5, 2021" or "5 March 2021") in ISO 8601 form
// ("2021-03-05"). The user turn asks for it; the assistant turn is the ISO date alone.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "magix/mesh.hpp"

namespace magix {

// ---------------------------------------------------------------------------------------------
// The task

struct DateTask {
  int64_t train_examples = 400;  // distinct dates to train on
  int64_t test_examples = 50;    // distinct held-out dates, never among the training dates
  uint64_t seed = 42;            // the problems are a pure function of (counts, years, seed)
  int first_year = 1950;         // dates are drawn uniformly from the calendar days of
  int last_year = 2049;          // [first_year-01-01, last_year-12-31]
};

struct DateProblem {
  int year = 0, month = 0, day = 0;
  int style = 0;       // 0: "March 5, 2021", 1: "5 March 2021"
  std::string prompt;  // the user turn
  std::string answer;  // "2021-03-05"
};

// The problem for a calendar date (errors: a date that does not exist, a year outside
// [1, 9999], a style other than 0 or 1).
DateProblem make_date_problem(int year, int month, int day, int style);

// "March 5, 2021" (style 0) or "5 March 2021" (style 1).
std::string date_in_words(int year, int month, int day, int style);

// Whether a generation answers the problem: the text, with surrounding whitespace removed,
// is exactly the ISO date.
bool date_answer_correct(std::string_view generated, const DateProblem& problem);

struct DateData {
  std::vector<DateProblem> train;
  std::vector<DateProblem> test;  // no date of test is in train
};

// Distinct dates drawn with a SplitMix64 stream from `seed` (a partial Fisher-Yates shuffle of
// the days of the year range): the test dates first, then the training dates among the rest;
// each date's style drawn from the same stream. Throws when the counts exceed the days.
DateData make_date_data(const DateTask& task);

// A training record {"messages": [user, assistant]} and a prompt record {"prompt", "answer"}.
nlohmann::ordered_json date_train_record(const DateProblem& p);
nlohmann::ordered_json date_test_record(const DateProblem& p);

// ---------------------------------------------------------------------------------------------
// The workflow

// Where scripts/fetch_smollm2.sh puts the model: the `smollm2` folder of magix's cache
// ($MAGIX_CACHE, else $XDG_CACHE_HOME/magix, else ~/.cache/magix), file
// SmolLM2-135M-Instruct.Q4_1.gguf.
std::filesystem::path default_smollm2_gguf();

struct LoraDemoOptions {
  std::filesystem::path work_dir;      // created if absent; must not already hold a demo run
  bool overwrite = false;              // allow a work_dir that holds a previous demo run
  std::vector<int> mesh_shape{-1, 1};  // as passed (recorded in the train/generate args)
  std::filesystem::path gguf;          // the base model (a GGUF file)
  DateTask task;
  int64_t steps = 50;
  int64_t batch_size = 16;  // global batch (rows)
  double learning_rate = 2e-3;
  int64_t warmup_steps = 3;  // linear warmup, then cosine decay to 0 at the last step
  int64_t lora_rank = 16;
  double lora_alpha = 32.0;
  uint64_t seed = 42;  // adapter init and data order
  int64_t log_every = 5;
  bool quiet = false;  // no step log or bar
  bool bf16 = false;   // bf16 mixed precision for training and generation
  std::string outtype = "q8_0";  // weight type of the GGUF export (f32, f16, bf16, q8_0)
  int64_t max_new_tokens = 16;   // per held-out answer (the base model tends to go on)
};

struct LoraDemoReport {
  std::filesystem::path work_dir;
  std::filesystem::path checkpoint;  // the train-lora step of the last training step
  std::filesystem::path gguf_export;  // the merged model as GGUF
  std::filesystem::path hf_export;    // the merged model as an HF folder
  int64_t max_length = 0;             // the longest training conversation, in tokens
  int64_t steps = 0;
  double loss_first = 0.0, loss_last = 0.0;  // first and last step
  double train_seconds = 0.0;
  double train_input_tokens_per_second = 0.0;
  int64_t test_examples = 0;
  int64_t correct_before = 0, correct_after = 0;        // exact (date_answer_correct)
  int64_t containing_before = 0, containing_after = 0;  // the ISO date anywhere in the answer
  std::vector<std::pair<std::string, std::string>> chat;  // example prompt -> answer after
  double total_seconds = 0.0;
};

// Runs the whole demo on `mesh` (collective: every rank calls it; world rank 0 writes the data
// files and the exports, run_training / run_generation write theirs as they document).
// Returns the same accuracy figures on every rank; world rank 0 prints progress and results.
LoraDemoReport run_lora_demo(const LoraDemoOptions& options, const Mesh& mesh);

}  // namespace magix
