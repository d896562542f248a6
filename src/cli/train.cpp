// magix train: full fine-tuning or training from random weights (docs/training.md).
#include <fmt/format.h>
#include <stdlib.h>

#include <filesystem>

#include "cli_util.hpp"
#include "commands.hpp"
#include "magix/distributed.hpp"
#include "magix/error.hpp"
#include "magix/trainer.hpp"

namespace magix::cli {

void add_train_options(CLI::App& cmd, TrainArgs& a) {
  // A flag given twice takes its last value (scripts that append overrides).
  cmd.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  // Model.
  cmd.add_option(flag("model_type"), a.model_type,
                 "model family: llama, mistral, gemma, qwen2, qwen3, gemma2, gemma3_text or phi3 "
                 "(must match config.json)")
      ->capture_default_str();
  cmd.add_option(flag("model_name"), a.model_name, "HF model folder or hub name to fine-tune");
  cmd.add_option(flag("model_config"), a.model_config,
                 "config.json to train from random weights instead of --model_name");
  cmd.add_option(flag("model_cache_dir"), a.model_cache_dir,
                 "HF hub cache folder for hub names (default: $HF_HUB_CACHE or $HF_HOME/hub)");
  cmd.add_option(flag("tokenizer_name"), a.tokenizer_name,
                 "tokenizer folder or hub name (default: the model's folder, or the folder of "
                 "--model_config)");
  cmd.add_flag(flag("bf16_model_weights"), a.bf16_model_weights,
               "store the weights in bf16 (updated from fp32 values; moments stay fp32)");
  cmd.add_flag(flag("bf16"), a.bf16,
               "bf16 mixed precision: matrix products in bf16 with fp32 accumulation; norms, "
               "softmax, loss, RoPE, gradients and AdamW stay fp32 (docs/model.md)");
  cmd.add_flag(flag("recompute"), a.recompute,
               "recompute activations in the backward pass (less memory, ~1/3 more compute)");
  add_device_option(cmd, a.device);
  cmd.add_option(flag("overlap_comm"), a.overlap_comm,
                 "run FSDP gathers and gradient reduce-scatters over the data axis on a "
                 "communication thread, behind the layers' compute (same numbers either way; "
                 "docs/multihost.md)")
      ->capture_default_str();
  // Data.
  cmd.add_option(flag("train_file"), a.train_file,
                 "training data: .jsonl, .json, .txt (each optionally .gz), .parquet, .arrow, "
                 "several separated by commas, a folder (datasets save_to_disk, or parquet files "
                 "as the hub lays them out), a glob, or a hub dataset ORG/NAME in the local HF "
                 "cache (docs/data.md)");
  cmd.add_option(flag("train_data_config"), a.train_data_config,
                 "HF dataset config: the subfolder of a hub dataset holding its splits");
  cmd.add_option(flag("train_data_field"), a.train_data_field,
                 "record field holding the text or the messages list")
      ->capture_default_str();
  cmd.add_option(flag("split"), a.split,
                 "HF dataset split: a DatasetDict's split folder, or a hub dataset's "
                 "<split>-*.parquet files (a source without splits ignores it)")
      ->capture_default_str();
  cmd.add_flag(flag("use_chat_template"), a.use_chat_template,
               "render `messages` records with the tokenizer's chat template (an error when it "
               "has none: see --chat_template_name)");
  cmd.add_option(flag("chat_template_name"), a.chat_template_name,
                 "a named template of the tokenizer, or builtin: the reference scripts' built-in "
                 "<|role|> format");
  cmd.add_option(flag("train_on"), a.train_on,
                 "targets that count: all (the reference) or assistant (assistant turns only)")
      ->capture_default_str();
  cmd.add_flag(flag("pack"), a.pack,
               "pack several examples per row (no attention across examples)");
  cmd.add_flag(flag("skip_bad_records"), a.skip_bad_records,
               "skip (and count) bad records instead of stopping at the first");
  cmd.add_option(flag("max_length"), a.max_length,
                 "tokens per row (examples are cut to max_length + 1 tokens)")
      ->capture_default_str();
  // Evaluation.
  cmd.add_option(flag("eval_file"), a.eval_file,
                 "evaluation data (.jsonl, .json or .txt), encoded as the training data; its "
                 "loss is logged, written to --metrics_file and --report_to");
  cmd.add_option(flag("eval_split"), a.eval_split,
                 "HF dataset split of the eval data (local files: validation only)")
      ->capture_default_str();
  cmd.add_option(flag("eval_data_field"), a.eval_data_field,
                 "record field of --eval_file (default: --train_data_field)");
  cmd.add_option(flag("eval_steps"), a.eval_steps,
                 "evaluate every this many optimizer steps and at the end (0: only at the end)")
      ->capture_default_str();
  cmd.add_option(flag("per_device_eval_batch_size"), a.per_device_eval_batch_size,
                 "eval rows per data rank and forward pass (never packed)")
      ->capture_default_str();
  // Steps.
  cmd.add_option(flag("num_epochs"), a.num_epochs, "passes over the data")->capture_default_str();
  cmd.add_option(flag("max_steps"), a.max_steps,
                 "> 0: train exactly this many optimizer steps (overrides --num_epochs)")
      ->capture_default_str();
  cmd.add_option(flag("batch_size"), a.batch_size,
                 "global rows per optimizer step; must divide over the data axis")
      ->capture_default_str();
  cmd.add_option(flag("gradient_accumulation_steps"), a.gradient_accumulation_steps,
                 "micro-batches per optimizer step (the loss is normalised by the whole step's "
                 "token count)")
      ->capture_default_str();
  // Optimizer.
  cmd.add_option(flag("learning_rate"), a.learning_rate, "peak learning rate")
      ->capture_default_str();
  cmd.add_option(flag("lr_schedule"), a.lr_schedule, "warmup_cosine, linear or constant")
      ->capture_default_str();
  cmd.add_option(flag("warmup_ratio"), a.warmup_ratio,
                 "fraction of the steps spent warming up from 0")
      ->capture_default_str();
  cmd.add_option(flag("lr_decay_ratio"), a.lr_decay_ratio,
                 "fraction of the steps at which the decay reaches 0 (0.9: the reference's "
                 "lr-0 tail)")
      ->capture_default_str();
  cmd.add_option(flag("weight_decay"), a.weight_decay,
                 "AdamW decoupled weight decay (not on biases and norms)")
      ->capture_default_str();
  cmd.add_option(flag("adam_beta1"), a.adam_beta1)->capture_default_str();
  cmd.add_option(flag("adam_beta2"), a.adam_beta2)->capture_default_str();
  cmd.add_option(flag("adam_eps"), a.adam_eps)->capture_default_str();
  cmd.add_option(flag("max_grad_norm"), a.max_grad_norm,
                 "clip the global gradient norm to this (<= 0: no clipping)")
      ->capture_default_str();
  // Checkpoints.
  cmd.add_option(flag("checkpoint_dir"), a.checkpoint_dir,
                 "save here; a run with the same folder resumes from its latest step");
  cmd.add_option(flag("save_steps"), a.save_steps,
                 "save every this many steps (and at the end; <= 0: only at the end)")
      ->capture_default_str();
  cmd.add_option(flag("max_to_keep"), a.max_to_keep, "checkpoints kept (<= 0: all)")
      ->capture_default_str();
  cmd.add_option(flag("async_save"), a.async_save,
                 "write checkpoints in the background while training goes on")
      ->capture_default_str();
  // Logs.
  cmd.add_option(flag("log_steps"), a.log_steps, "a log line every this many steps")
      ->capture_default_str();
  cmd.add_option(flag("metrics_file"), a.metrics_file,
                 "JSONL per step: step, epoch, loss, lr, grad_norm, tokens and tokens_per_s "
                 "(counted targets), input_tokens, input_tokens_per_s, elapsed_s, skipped, "
                 "skipped_total; with --eval_file a line per evaluation (step, epoch, eval_loss, "
                 "eval_perplexity, eval_tokens, eval_examples, eval_runtime_s); its loss curves "
                 "are drawn to METRICS.svg at the end");
  cmd.add_option(flag("progress"), a.progress,
                 "auto (a bar on a terminal, log lines otherwise), bar, log or none")
      ->capture_default_str();
  cmd.add_option(flag("report_to"), a.report_to,
                 "none, or tensorboard: event files (loss, lr, grad_norm, tokens/s per step; "
                 "eval/loss and eval/perplexity) in --logging_dir")
      ->capture_default_str();
  cmd.add_option(flag("logging_dir"), a.logging_dir,
                 "TensorBoard folder (default: CHECKPOINT_DIR/runs, or ./runs without one)");
  // Run.
  cmd.add_option(flag("seed"), a.seed, "data order and random init")->capture_default_str();
  cmd.add_option(flag("mesh_shape"), a.mesh_shape,
                 "data and model axis sizes, one may be -1 (run under mpirun for more than one)")
      ->expected(2)
      ->capture_default_str();
  cmd.add_option(flag("partition_rules"), a.partition_rules,
                 "JSON list of [regex, spec] pairs replacing the default sharding rules");
}

void check_train_paths(const TrainArgs& a) {
  MAGIX_CHECK(a.eval_file.empty() || std::filesystem::is_regular_file(a.eval_file),
              "--eval_file '{}' does not exist or is not a regular file", a.eval_file);
  check_outputs_spare_inputs(
      {{"--train_file", a.train_file},
       {"--eval_file", a.eval_file},
       {"--model_name", a.model_name},
       {"--model_config", a.model_config},
       {"--tokenizer_name", a.tokenizer_name},
       {"--partition_rules", a.partition_rules}},
      {{"--metrics_file", a.metrics_file}, {"--checkpoint_dir", a.checkpoint_dir}});
}

void warn_unsaved_run(const TrainArgs& a) {
  const std::string warning = unsaved_run_warning(a);
  if (!warning.empty()) fmt::print(stderr, "{}\n", warning);
}

void print_train_summary(const TrainSummary& s) {
  fmt::print("steps: {}..{} of {}\n", s.start_step, s.end_step, s.total_steps);
  if (!s.losses.empty()) {
    fmt::print(
        "first loss: {:.6f}\nlast loss: {:.6f}\ntokens/s: {:.1f} (counted targets)\ninput "
        "tokens/s: {:.1f}\n",
        s.first_loss, s.last_loss, s.tokens_per_s, s.input_tokens_per_s);
  }
  if (!s.evals.empty()) {
    fmt::print("eval loss: {:.6f} (step {})\neval perplexity: {:.4f}\n", s.evals.back().loss,
               s.evals.back().step, s.evals.back().perplexity);
  }
  fmt::print("skipped steps: {}\n", s.skipped_steps);
  if (!s.last_checkpoint.empty()) fmt::print("checkpoint: {}\n", s.last_checkpoint);
}

namespace {

void run_train(const TrainArgs& a) {
  validate_train_args(a);
  check_train_paths(a);
  // Before a model that may take minutes to load: the data source opens and its first record
  // reads.
  {
    ReadOptions read;
    read.field = a.train_data_field;
    read.config = a.train_data_config;
    read.split = a.split;
    read.skip_bad_records = a.skip_bad_records;
    Record first;
    open_records(a.train_file, read)->next(first);
  }
  // The reference's cache_dir: where hub names are looked up (resolve_model_dir reads it).
  if (!a.model_cache_dir.empty()) setenv("HF_HUB_CACHE", a.model_cache_dir.c_str(), 1);
  Mesh mesh = create_device_mesh(a.mesh_shape);
  if (mesh.world_rank() == 0) warn_unsaved_run(a);
  check_train_hosts(a, mesh);
  std::unique_ptr<Trainable> model = make_full_trainable(a, mesh);
  const TrainSummary s = run_training(a, mesh, *model);
  if (mesh.world_rank() == 0) print_train_summary(s);
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "train", "Full fine-tuning, or training from random weights (--model_config)");
  auto args = std::make_shared<TrainArgs>();
  add_train_options(*cmd, *args);
  cmd->callback([args] { run_train(*args); });
}

}  // namespace magix::cli
