// run_training: data -> micro-batches -> train_step -> logs and checkpoints, resumable on any
// mesh (docs/training.md).
#include "magix/trainer.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <limits>

#include "backends/backend.hpp"
#include "magix/checkpoint.hpp"
#include "magix/data_loader.hpp"
#include "magix/error.hpp"
#include "magix/evaluate.hpp"
#include "magix/hf_files.hpp"
#include "magix/json_parse.hpp"
#include "magix/memory_check.hpp"
#include "magix/tokenizer.hpp"
#include "trainer_checkpoint.hpp"
#include "trainer_log.hpp"

namespace magix {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

// --tokenizer_name, else the model folder, else the folder of --model_config.
std::string tokenizer_source(const TrainArgs& a) {
  if (!a.tokenizer_name.empty()) return a.tokenizer_name;
  if (!a.model_name.empty()) {
    MAGIX_CHECK(fs::is_regular_file(resolve_model_dir(a.model_name) / "tokenizer.json"),
                "the model {} has no tokenizer.json: pass --tokenizer_name (a folder or hub name "
                "with tokenizer.json)",
                a.model_name);
    return a.model_name;
  }
  const fs::path dir = fs::path(a.model_config).parent_path();
  MAGIX_CHECK(fs::is_regular_file(dir / "tokenizer.json"),
              "--model_config {} has no tokenizer.json beside it: pass --tokenizer_name (a folder "
              "or hub name with tokenizer.json)",
              a.model_config);
  return dir.empty() ? std::string(".") : dir.string();
}

EncodeOptions encode_options(const TrainArgs& a) {
  EncodeOptions e;
  e.use_chat_template = a.use_chat_template;
  if (!a.chat_template_name.empty()) e.chat_template_name = a.chat_template_name;
  e.train_on = parse_train_on(a.train_on);
  e.max_length = a.max_length;
  return e;
}

// The examples of `path` (--train_file, or --eval_file when `eval`), encoded by the training
// options, with what reading and truncation did printed on world rank 0.
std::vector<Example> read_examples(const TrainArgs& a, const std::string& path,
                                   const std::string& field, bool eval, const Tokenizer& tokenizer,
                                   bool is_rank0) {
  DatasetOptions options;
  options.path = path;
  options.data_field = field;
  options.skip_bad_records = a.skip_bad_records;
  options.encode = encode_options(a);
  options.data_config = a.train_data_config;
  options.split = eval ? a.eval_split : a.split;
  DatasetStats stats;
  std::vector<Example> examples = load_examples(options, tokenizer, &stats);
  if (is_rank0) {
    fmt::print(stderr, "{}: {} examples, {} tokens from {} ({} truncated to {} tokens",
               eval ? "eval data" : "data", stats.examples, stats.tokens, path, stats.truncated,
               a.max_length + 1);
    if (stats.skipped() > 0) fmt::print(stderr, ", {} bad records skipped", stats.skipped());
    fmt::print(stderr, ")\n");
    for (const std::string& e : stats.skipped_errors) fmt::print(stderr, "  skipped: {}\n", e);
    for (const std::string& e : stats.read.skipped_errors) fmt::print(stderr, "  skipped: {}\n", e);
    // Truncation that removes counted targets changes what is learned: say so before training.
    if (stats.examples_losing_targets > 0) {
      const double lost =
          static_cast<double>(stats.targets_before_truncation - stats.targets) /
          static_cast<double>(std::max<int64_t>(1, stats.targets_before_truncation));
      fmt::print(stderr,
                 "WARNING: --max_length {} cuts counted targets from {} of {} {}examples: "
                 "{:.1f}% of the targets ({} of {}) are never {}{}. --max_length {} would keep "
                 "99% of the examples whole.\n",
                 a.max_length, stats.examples_losing_targets, stats.examples, eval ? "eval " : "",
                 100.0 * lost, stats.targets_before_truncation - stats.targets,
                 stats.targets_before_truncation, eval ? "evaluated" : "trained on",
                 stats.without_targets > 0
                     ? fmt::format(", and {} examples keep no target at all", stats.without_targets)
                     : std::string(),
                 stats.max_length_p99);
    }
  }
  return examples;
}

std::vector<Example> read_training_examples(const TrainArgs& a, const Tokenizer& tokenizer,
                                            const TrainHooks& hooks, bool is_rank0) {
  if (hooks.load_examples) return hooks.load_examples(tokenizer);
  return read_examples(a, a.train_file, a.train_data_field, false, tokenizer, is_rank0);
}

// --eval_file's loss on the model as it is: a forward pass only (no dropout, no optimizer, no
// data loader), so evaluating never changes the training run. Collective over the mesh.
EvalMetrics evaluate_run(Trainable& model, const std::vector<Example>& examples,
                         int64_t per_rank_batch, int32_t pad_id, int64_t step, int64_t total_steps,
                         int64_t epoch) {
  const Clock::time_point t0 = Clock::now();
  const EvalResult r = evaluate_examples(model.decoder(), examples, per_rank_batch, pad_id);
  EvalMetrics e;
  e.step = step;
  e.total_steps = total_steps;
  e.epoch = epoch;
  e.loss = r.mean_nll();
  e.perplexity = std::exp(e.loss);
  e.tokens = r.tokens;
  e.examples = std::ssize(examples);
  e.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return e;
}

LrSchedule make_schedule(const TrainArgs& a, int64_t total_steps) {
  LrSchedule s;
  s.kind = parse_schedule_kind(a.lr_schedule);
  s.peak = a.learning_rate;
  s.warmup_steps =
      static_cast<int64_t>(std::floor(a.warmup_ratio * static_cast<double>(total_steps)));
  s.decay_end =
      static_cast<int64_t>(std::llround(a.lr_decay_ratio * static_cast<double>(total_steps)));
  s.end_value = 0.0;
  return s;
}

// Collective over mesh.world(): throws on every rank, naming the step and a tensor, when some
// rank's trainable weights hold a NaN or infinity (an update that overflowed).
void check_weights_finite(Trainable& model, const Mesh& mesh, int64_t step) {
  const ParameterSet& params = model.trainable();
  std::string found;
  for (size_t i = 0; i < params.size() && found.empty(); ++i) {
    const Tensor t = to_host(params.tensor(i));  // a copy where it lives on a device
    const int64_t bad = first_non_finite(t.bytes(), t.dtype(), static_cast<size_t>(t.numel()));
    if (bad >= 0) {
      found =
          fmt::format("{} at {}", params.info(i).name,
                      box_coordinates(bad, params.info(i).box_start, params.info(i).box_extent));
    }
  }
  std::vector<double> flag = {found.empty() ? 0.0 : 1.0};
  mesh.world().all_reduce(flag, ReduceOp::kMax);
  if (flag[0] == 0) return;
  MAGIX_FAIL(
      "step {}: the weights hold non-finite values{} after an update overflowed; the run "
      "diverged and no checkpoint of it is saved (lower --learning_rate or "
      "--weight_decay, or resume from the last checkpoint)",
      step, found.empty() ? " (on another rank)" : " (" + found + ")");
}

AdamWOptions adamw_options(const TrainArgs& a) {
  AdamWOptions o;
  o.beta1 = a.adam_beta1;
  o.beta2 = a.adam_beta2;
  o.eps = a.adam_eps;
  o.weight_decay = a.weight_decay;
  o.max_grad_norm = a.max_grad_norm;
  return o;
}

}  // namespace

TrainSummary run_training(const TrainArgs& given, const Mesh& mesh, Trainable& model,
                          const TrainHooks& hooks) {
  TrainArgs args = given;
  if (hooks.load_examples && args.train_file.empty()) args.train_file = "(in memory)";
  validate_train_args(args);
  const bool rank0 = mesh.world_rank() == 0;
  MAGIX_CHECK(&model.decoder().mesh() == &mesh,
              "run_training: the model was placed on a different mesh object");

  // Data: the same global batches whatever the mesh; this rank takes its data-axis slice.
  const std::string tok_source = tokenizer_source(args);
  verify_if_checkpoint_step(tok_source);  // a step's tokenizer files match its index
  const Tokenizer tokenizer = Tokenizer::load(tok_source);
  const ModelConfig& config = model.decoder().config();
  MAGIX_CHECK(tokenizer.vocab_size() <= config.vocab_size,
              "the tokenizer ({}) has {} tokens but the model's vocabulary is {}", tok_source,
              tokenizer.vocab_size(), config.vocab_size);
  const int64_t D = mesh.data_size(), k = args.gradient_accumulation_steps;
  MAGIX_CHECK(args.batch_size % D == 0,
              "--batch_size {} does not divide over the {} ranks of the data axis (--mesh_shape "
              "{} {}): use a multiple of {}",
              args.batch_size, D, mesh.data_size(), mesh.model_size(), D);
  MAGIX_CHECK((args.batch_size / D) % k == 0,
              "--batch_size {} gives {} rows per data rank, which do not split into "
              "--gradient_accumulation_steps {} micro-batches: use a multiple of {}",
              args.batch_size, args.batch_size / D, k, D * k);
  {
    // Up front, a lower bound of one micro-batch's activations (even with --recompute): per
    // token each layer's input kept for the backward pass, one MLP hidden, and the logits.
    const double rows = static_cast<double>(args.batch_size) / static_cast<double>(D * k);
    const double tokens = rows * static_cast<double>(args.max_length + 1);
    const double per_token =
        static_cast<double>(config.num_layers) * static_cast<double>(config.hidden_size) +
        static_cast<double>(config.intermediate_size) +
        static_cast<double>(config.vocab_size) / mesh.model_size();
    check_fits_in_memory(tokens * per_token * 4,
                         fmt::format("--max_length {} with --batch_size {} ({:.0f} rows per data "
                                     "rank and micro-batch): the activations",
                                     args.max_length, args.batch_size, rows),
                         model.decoder().options().device);
  }
  LoaderOptions lo;
  lo.global_batch = args.batch_size;
  lo.seed = args.seed;
  lo.data_rank = mesh.data_rank();
  lo.data_size = D;
  lo.max_length = args.max_length;
  lo.pad_id = training_pad_id(tokenizer);
  lo.pack = args.pack;
  DataLoader loader(read_training_examples(args, tokenizer, hooks, rank0), lo);
  std::vector<Example> eval_examples;
  if (!args.eval_file.empty()) {
    eval_examples =
        read_examples(args, args.eval_file,
                      args.eval_data_field.empty() ? args.train_data_field : args.eval_data_field,
                      true, tokenizer, rank0);
    int64_t targets = 0;
    for (const Example& ex : eval_examples) {
      for (size_t t = 1; t < ex.loss_mask.size(); ++t) targets += ex.loss_mask[t] ? 1 : 0;
    }
    MAGIX_CHECK(targets > 0,
                "--eval_file {}: no counted target in any example (nothing to "
                "evaluate)",
                args.eval_file);
  }

  const int64_t total_steps =
      args.max_steps > 0 ? args.max_steps : loader.steps_per_epoch() * args.num_epochs;
  const LrSchedule schedule = make_schedule(args, total_steps);
  AdamW optimizer = make_opt_state(adamw_options(args), model.trainable());

  TrainSummary summary;
  summary.total_steps = total_steps;
  summary.steps_per_epoch = loader.steps_per_epoch();
  int64_t skipped_total = 0;

  // Checkpoints and resume.
  std::unique_ptr<CheckpointManager> manager;
  std::unique_ptr<detail::CheckpointExtraFiles> extra;
  int64_t step = 0;
  if (!args.checkpoint_dir.empty()) {
    CheckpointOptions co;
    co.max_to_keep = args.max_to_keep;
    co.async = args.async_save;
    manager = std::make_unique<CheckpointManager>(args.checkpoint_dir, mesh, co);
    // The model folder's generation defaults travel with every step (magix export copies them).
    std::vector<fs::path> files = model.extra_files();
    if (!args.model_name.empty()) {
      const fs::path g = resolve_model_dir(args.model_name) / "generation_config.json";
      if (fs::is_regular_file(g)) files.push_back(g);
    }
    extra = std::make_unique<detail::CheckpointExtraFiles>(
        manager->dir(), config.raw, resolve_model_dir(tok_source), std::move(files), rank0);
    if (const std::optional<int64_t> latest = manager->latest_step()) {
      const CheckpointReader reader(manager->step_dir(*latest));
      const nlohmann::json saved = reader.trainer_state();
      const nlohmann::json current =
          detail::make_trainer_state(args, model, optimizer, loader, 0, total_steps, 0);
      const std::vector<std::string> conflicts = detail::resume_conflicts(saved, current);
      if (!conflicts.empty()) {
        std::string msg =
            fmt::format("cannot resume from {}: this run's settings differ from the checkpoint's:",
                        reader.dir().string());
        for (const std::string& c : conflicts) msg += "\n  " + c;
        msg += "\nuse the same settings, or another --checkpoint_dir to start afresh";
        MAGIX_FAIL("{}", msg);
      }
      step = detail::restore_training(reader, model, optimizer, loader);
      const std::string state_file = (reader.dir() / "trainer_state.json").string();
      skipped_total = json_value<int64_t>(saved, "skipped_steps", 0, state_file);
      const int64_t saved_total =
          json_value<int64_t>(saved, "total_steps", total_steps, state_file);
      summary.resumed_from = reader.dir().string();
      summary.last_checkpoint = reader.dir().string();
      if (rank0) {
        fmt::print(stderr, "resuming from {} (step {} of {}, epoch {})\n", reader.dir().string(),
                   step, total_steps, loader.epoch());
        if (saved_total != total_steps) {
          fmt::print(stderr,
                     "note: the checkpoint planned {} steps, this run plans {}: the learning-rate "
                     "schedule follows this run's\n",
                     saved_total, total_steps);
        }
      }
    }
  }
  summary.start_step = step;
  summary.end_step = step;

  detail::TrainLogger logger(args, rank0, step, total_steps);
  if (rank0) {
    logger.message(
        fmt::format("training {} steps ({} per epoch) of {} rows x {} tokens on a {}x{} mesh; {} "
                    "micro-batch(es) "
                    "per step",
                    total_steps, loader.steps_per_epoch(), args.batch_size, args.max_length, D,
                    mesh.model_size(), k));
    // Which engines run the products: without AMX the bf16 GEMM widens to the fp32 one.
    if (args.bf16) {
      logger.message("bf16 mixed precision: " +
                     backend_for(model.decoder().options().device).describe());
    }
  }

  ParameterSet grads = model.trainable().zeros_like();  // fp32 gradients, this rank's boxes
  const int64_t micro_rows = loader.local_batch() / k;
  const Clock::time_point t0 = Clock::now();
  int64_t last_saved = summary.resumed_from ? step : -1;
  while (step < total_steps) {
    const Clock::time_point ts = Clock::now();
    const int64_t epoch = loader.epoch();
    const TokenBatch batch = loader.next();
    std::vector<TokenBatch> micro;
    for (int64_t i = 0; i < k; ++i) micro.push_back(slice_rows(batch, i * micro_rows, micro_rows));
    const double lr = schedule(optimizer.updates());
    model.begin_step(step, k);
    const TrainStepResult r = train_step(model, optimizer, micro, lr, grads);
    ++step;
    const double dt = std::chrono::duration<double>(Clock::now() - ts).count();

    StepMetrics m;
    m.step = step;
    m.total_steps = total_steps;
    m.epoch = epoch;
    m.loss = r.loss;
    m.lr = lr;
    m.grad_norm = r.grad_norm;
    m.tokens = r.tokens;
    m.tokens_per_s = dt > 0 ? static_cast<double>(r.tokens) / dt : 0.0;
    {
      // Input tokens of the global batch (padding excluded): this data rank's, summed over the
      // data axis (model ranks hold the same rows).
      std::vector<double> n = {0.0};
      for (int32_t v : batch.key_valid) n[0] += v != 0 ? 1.0 : 0.0;
      mesh.data().all_reduce(n, ReduceOp::kSum);
      m.input_tokens = static_cast<int64_t>(n[0]);
    }
    m.input_tokens_per_s = dt > 0 ? static_cast<double>(m.input_tokens) / dt : 0.0;
    m.elapsed_s = std::chrono::duration<double>(Clock::now() - t0).count();
    m.skipped = !r.applied;
    skipped_total += m.skipped ? 1 : 0;
    m.skipped_total = skipped_total;
    summary.losses.push_back(r.loss);
    summary.tokens += r.tokens;
    summary.input_tokens += m.input_tokens;
    summary.skipped_steps += m.skipped ? 1 : 0;
    summary.end_step = step;
    logger.step(m);
    if (m.skipped) {
      logger.message(fmt::format("step {}: non-finite gradient norm, update skipped ({} in a row)",
                                 step, optimizer.consecutive_skipped()));
    }
    if (hooks.on_step) hooks.on_step(m);
    const bool last = step == total_steps;
    if (!eval_examples.empty() && (last || (args.eval_steps > 0 && step % args.eval_steps == 0))) {
      const EvalMetrics e = evaluate_run(model, eval_examples, args.per_device_eval_batch_size,
                                         lo.pad_id, step, total_steps, epoch);
      summary.evals.push_back(e);
      logger.eval(e);
      if (hooks.on_eval) hooks.on_eval(e);
    }
    bool stop = false;
    if (hooks.should_stop) {
      std::vector<double> flag = {hooks.should_stop(m) ? 1.0 : 0.0};
      mesh.world().all_reduce(flag, ReduceOp::kMax);
      stop = flag[0] > 0;
    }

    if (manager) {
      manager->poll();
      const bool periodic = args.save_steps > 0 && step % args.save_steps == 0;
      if (periodic || step == total_steps || stop) {
        check_weights_finite(model, mesh, step);  // never a checkpoint of a diverged run
        manager->save(step, detail::training_items(model, optimizer),
                      detail::make_trainer_state(args, model, optimizer, loader, step, total_steps,
                                                 skipped_total),
                      extra->files());
        last_saved = step;
      }
    }
    if (stop) {
      logger.message(fmt::format("stopping after step {} as asked", step));
      break;
    }
  }
  summary.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  logger.finish();
  if (manager) {
    manager->wait();
    if (last_saved >= 0) summary.last_checkpoint = manager->step_dir(last_saved).string();
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  summary.first_loss = summary.losses.empty() ? nan : summary.losses.front();
  summary.last_loss = summary.losses.empty() ? nan : summary.losses.back();
  summary.tokens_per_s =
      summary.seconds > 0 ? static_cast<double>(summary.tokens) / summary.seconds : 0.0;
  summary.input_tokens_per_s =
      summary.seconds > 0 ? static_cast<double>(summary.input_tokens) / summary.seconds : 0.0;
  if (rank0) {
    if (summary.losses.empty()) {
      logger.message(
          fmt::format("nothing to do: the checkpoint is at step {} of {}", step, total_steps));
    } else {
      logger.message(fmt::format(
          "done: steps {}..{} of {}, loss {:.4f} (first step) -> {:.4f} (last step), {:.0f} "
          "input tokens/s, {:.0f} counted targets/s, {} skipped, {}{}",
          summary.start_step + 1, summary.end_step, total_steps, summary.first_loss,
          summary.last_loss, summary.input_tokens_per_s, summary.tokens_per_s,
          summary.skipped_steps, detail::format_duration(summary.seconds),
          summary.last_checkpoint.empty() ? "" : ", checkpoint " + summary.last_checkpoint));
    }
  }
  return summary;
}

}  // namespace magix
