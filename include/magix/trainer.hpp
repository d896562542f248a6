// The training loop behind `magix train` (and `train-lora`, `demo`): data, schedule, AdamW,
// gradient accumulation, logging, sharded checkpoints and exact resume on any mesh
// (docs/training.md).
//
//   magix::Mesh mesh = magix::create_device_mesh(args.mesh_shape);
//   std::unique_ptr<magix::Trainable> model = magix::make_full_trainable(args, mesh);
//   magix::TrainSummary s = magix::run_training(args, mesh, *model);
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "magix/dataset.hpp"
#include "magix/mesh.hpp"
#include "magix/model.hpp"
#include "magix/train_step.hpp"

namespace magix {

// Every flag of `magix train`, with the reference script's defaults where it has the flag.
struct TrainArgs {
  // Model: an HF folder / hub name, or a config.json for random weights (exactly one).
  std::string model_type = "llama";  // checked against the config's model_type
  std::string model_name;            // HF folder or hub name in the local HF cache
  std::string model_config;          // config.json: random init (init_parameters, seed)
  std::string model_cache_dir;       // HF cache root for hub names (default: $HF_HOME)
  std::string tokenizer_name;        // default: the model folder / the config's folder
  bool bf16_model_weights = false;   // parameters stored in bf16, updated from fp32 values
  bool bf16 = false;       // mixed precision: bf16 GEMMs, fp32 accumulation (compute_dtype BF16)
  bool recompute = false;  // activation recomputation in the backward pass
  std::string device;      // "cpu" or "cuda" (--device); empty: default_device()
  bool overlap_comm = true;  // FSDP collectives behind compute (DecoderOptions::overlap_comm)

  // Data.
  std::string train_file;         // any data source: a file, folder, glob or hub dataset name
  std::string train_data_config;  // HF dataset config (a subfolder of a hub-style dataset)
  std::string train_data_field = "text";
  std::string split = "train";  // HF dataset split (sources with splits; docs/data.md)
  bool use_chat_template = false;
  // A named template of the tokenizer; kBuiltinChatFormat ("builtin"): the reference scripts'
  // built-in format. Empty: the tokenizer's default template (an error when it has none).
  std::string chat_template_name;
  std::string train_on = "all";   // "all" | "assistant"
  bool pack = false;              // pack examples into full rows
  bool skip_bad_records = false;  // skip (and count) unreadable records instead of failing
  int64_t max_length = 1024;      // T; rows hold max_length + 1 tokens

  // Evaluation (docs/training.md): eval_file's records are encoded exactly as train_file's
  // (use_chat_template, chat_template_name, train_on, max_length, skip_bad_records), one
  // example per row (never packed), in file order. The eval loss is the mean NLL over all its
  // counted targets (token-weighted), the same on every mesh.
  std::string eval_file;                  // empty: no evaluation
  std::string eval_split = "validation";  // HF dataset split (only local files: the default)
  std::string eval_data_field;            // empty: train_data_field
  int64_t eval_steps = 0;  // > 0: every this many steps and at the end; 0: at the end
  int64_t per_device_eval_batch_size = 8;  // eval rows per data rank and forward pass

  // Steps.
  int64_t num_epochs = 1;
  int64_t max_steps = -1;   // > 0: stop after this many optimizer steps (and schedule over them)
  int64_t batch_size = 16;  // global rows per optimizer step; divides over data axis × accum
  int64_t gradient_accumulation_steps = 1;

  // Optimizer and schedule.
  double learning_rate = 2e-6;
  std::string lr_schedule = "warmup_cosine";  // | "linear" | "constant"
  double warmup_ratio = 0.1;                  // warmup steps = floor(ratio × total steps)
  double lr_decay_ratio = 1.0;  // decay ends at ratio × total steps (0.9 = the reference's tail)
  double weight_decay = 1e-4;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_eps = 1e-8;
  double max_grad_norm = 1.0;  // <= 0: no clipping

  // Checkpoints.
  std::string checkpoint_dir;  // empty: no checkpoints, no resume
  int64_t save_steps = 200;    // <= 0: only at the end
  int max_to_keep = 3;         // <= 0: keep all
  bool async_save = true;

  // Logs.
  int64_t log_steps = 10;
  std::string metrics_file;  // JSONL, one line per optimizer step (world rank 0)
  std::string progress =
      "auto";  // "auto" (a bar when stderr is a terminal) | "bar" | "log" | "none"
  std::string report_to = "none";  // "none" | "tensorboard" (event files in logging_dir)
  std::string logging_dir;         // empty: CHECKPOINT_DIR/runs, or ./runs without one

  uint64_t seed = 42;
  std::vector<int> mesh_shape = {-1, 1};
  std::string partition_rules;  // JSON rules file replacing the family's defaults

  // As JSON (saved in the trainer state) and the fields a resume must not change.
  nlohmann::json to_json() const;
};

// Checks values that need no file: positive sizes, known schedule / train_on names, ratios in
// range, exactly one of model_name / model_config. Throws naming the flag.
void validate_train_args(const TrainArgs& args);

// The one WARNING line a run without --checkpoint_dir prints up front (nothing it trains is
// saved); empty when there is a checkpoint_dir.
std::string unsaved_run_warning(const TrainArgs& args);

// The model for a run: load_decoder(model_name) or random init from model_config (seed), placed
// by partition_rules (or the family's), with weight_dtype from bf16_model_weights.
Decoder load_train_decoder(const TrainArgs& args, const Mesh& mesh);
std::unique_ptr<Trainable> make_full_trainable(const TrainArgs& args, const Mesh& mesh);

// One evaluation of --eval_file (world rank 0 writes it to --metrics_file as a line of its
// own: step, epoch, eval_loss, eval_perplexity, eval_tokens, eval_examples, eval_runtime_s).
struct EvalMetrics {
  int64_t step = 0;  // optimizer steps done when evaluated
  int64_t total_steps = 0;
  int64_t epoch = 0;        // epoch of the last step's batch
  double loss = 0.0;        // mean NLL over all counted targets of the eval set
  double perplexity = 0.0;  // exp(loss)
  int64_t tokens = 0;       // counted targets of the eval set
  int64_t examples = 0;
  double seconds = 0.0;  // wall time of the evaluation
};

// One optimizer step as reported (world rank 0 writes these to --metrics_file).
struct StepMetrics {
  int64_t step = 0;  // 1-based optimizer step just taken
  int64_t total_steps = 0;
  int64_t epoch = 0;  // epoch the step's batch came from
  double loss = 0.0;
  double lr = 0.0;
  double grad_norm = 0.0;
  int64_t tokens = 0;         // counted targets in the step
  double tokens_per_s = 0.0;  // counted targets per second over this step
  int64_t input_tokens = 0;   // tokens the step read (all rows of the global batch, no padding)
  double input_tokens_per_s = 0.0;
  double elapsed_s = 0.0;     // since the run (this process) started training
  bool skipped = false;       // a non-finite step, not applied
  int64_t skipped_total = 0;  // skipped steps so far in the run
};

struct TrainHooks {
  // Called on every rank after every step (e.g. the demo's display; tests).
  std::function<void(const StepMetrics&)> on_step;
  // Called on every rank after every evaluation (--eval_file).
  std::function<void(const EvalMetrics&)> on_eval;
  // Called on every rank after every step (after on_step): true on any rank stops the run there,
  // after saving a checkpoint of that step when there is a --checkpoint_dir (a later run with
  // the same arguments resumes exactly; the schedule stays planned over all the steps). For
  // time-limited jobs and the resume tests.
  std::function<bool(const StepMetrics&)> should_stop;
  // Replaces the data of --train_file (e.g. the demo's built-in corpus, tests): examples as
  // load_examples gives them. Must give the same examples on every rank. --train_file may then
  // be empty (it only names the data in the trainer state).
  std::function<std::vector<Example>(const Tokenizer&)> load_examples;
};

struct TrainSummary {
  int64_t start_step = 0;   // steps already done when this run started (resume)
  int64_t end_step = 0;     // steps done when it stopped
  int64_t total_steps = 0;  // planned steps of the whole run
  int64_t steps_per_epoch = 0;
  int64_t skipped_steps = 0;                 // non-finite steps skipped in this process
  std::vector<double> losses;                // loss of each step taken in this process, in order
  double first_loss = 0.0, last_loss = 0.0;  // NaN when no step was taken
  int64_t tokens = 0;                        // counted targets trained on in this process
  double tokens_per_s = 0.0;                 // counted targets/s over the steps of this process
  int64_t input_tokens = 0;                  // tokens read (no padding) in this process
  double input_tokens_per_s = 0.0;
  double seconds = 0.0;            // training time (excluding loading)
  std::vector<EvalMetrics> evals;  // evaluations of --eval_file in this process, in order
  std::string last_checkpoint;     // step directory of the last committed checkpoint (or empty)
  std::optional<std::string> resumed_from;  // step directory restored at the start
};

// Runs (or resumes, when args.checkpoint_dir holds a committed step) training of `model` on
// `mesh`. Collective over the mesh; only world rank 0 prints and writes files other than
// checkpoint shards. A resume restores trainable(), the optimizer and the data position on any
// mesh, and refuses when batch_size, max_length, seed, the data, packing, the model or the
// trainable's describe() differ (the message lists each difference).
TrainSummary run_training(const TrainArgs& args, const Mesh& mesh, Trainable& model,
                          const TrainHooks& hooks = {});

}  // namespace magix
