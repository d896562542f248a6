// magix demo: the offline end-to-end examples (include/magix/demo.hpp: a small Llama trained
// from scratch; include/magix/demo_lora.hpp: --model smollm2, LoRA on a pretrained GGUF model).
#include <fmt/format.h>
#include <omp.h>

#include "cli_util.hpp"
#include "commands.hpp"
#include "magix/demo.hpp"
#include "magix/demo_lora.hpp"
#include "magix/distributed.hpp"
#include "magix/error.hpp"

namespace magix::cli {
namespace {

struct DemoCliArgs {
  std::string model = "tiny";  // tiny | smollm2
  DemoOptions options;         // --model tiny; its defaults are the help's
  LoraDemoOptions lora;        // --model smollm2
  std::string work_dir;
  std::string model_config;
  std::string gguf;
  int threads = 1;
};

void print_tiny_result(const DemoReport& rep) {
  fmt::print("\nEverything is under {}:\n", rep.work_dir.string());
  fmt::print("  model/             config.json, tokenizer.json, tokenizer_config.json\n");
  fmt::print("  data/              train.jsonl (conversations), test.jsonl (held-out prompts)\n");
  fmt::print("  checkpoints/       {} (model, optimizer, trainer state)\n",
             rep.checkpoint.filename().string());
  fmt::print("  metrics.jsonl      loss, learning rate, tokens/s of every step\n");
  fmt::print("  generated.jsonl    what `magix generate` wrote for the held-out prompts\n");
  fmt::print("  exact_match.jsonl  each prompt with its answer, the generation and the verdict\n");
  fmt::print("  demo_report.json   accuracy, losses, timings and these commands\n");
  fmt::print("To continue:\n");
  for (const std::string& c : rep.commands) fmt::print("  {}\n", c);
}

// --model smollm2 takes the shared flags given on the command line; the others keep
// LoraDemoOptions' defaults.
void run_smollm2(DemoCliArgs& a, const CLI::App& cmd, const Mesh& mesh) {
  for (const char* tiny_only : {"--digits", "--model_config", "--weight_decay"}) {
    MAGIX_CHECK(cmd.count(tiny_only) == 0, "{} belongs to --model tiny, not --model smollm2",
                tiny_only);
  }
  LoraDemoOptions& l = a.lora;
  const DemoOptions& t = a.options;
  auto given = [&](const char* name) { return cmd.count(name) > 0; };
  l.work_dir = a.work_dir.empty() ? "magix_demo_smollm2" : a.work_dir;
  l.gguf = a.gguf.empty() ? default_smollm2_gguf() : std::filesystem::path(a.gguf);
  l.overwrite = t.overwrite;
  l.mesh_shape = t.mesh_shape;
  l.bf16 = t.bf16;
  l.quiet = t.quiet;
  if (given("--train_examples")) l.task.train_examples = t.task.train_examples;
  if (given("--test_examples")) l.task.test_examples = t.task.test_examples;
  if (given("--data_seed")) l.task.seed = t.task.seed;
  if (given("--steps")) l.steps = t.steps;
  if (given("--batch_size")) l.batch_size = t.batch_size;
  if (given("--learning_rate")) l.learning_rate = t.learning_rate;
  if (given("--warmup_steps")) l.warmup_steps = t.warmup_steps;
  if (given("--seed")) l.seed = t.seed;
  if (given("--log_every")) l.log_every = t.log_every;
  run_lora_demo(l, mesh);
}

void run_demo_command(DemoCliArgs& a, const CLI::App& cmd) {
  MAGIX_CHECK(a.model == "tiny" || a.model == "smollm2",
              "--model must be tiny or smollm2, got '{}'", a.model);
  MAGIX_CHECK(a.threads >= 0, "--threads must be 0 (OpenMP's default) or positive, got {}",
              a.threads);
  // smollm2's matrices are large enough for every core: OpenMP's default unless given.
  const int threads = a.model == "smollm2" && cmd.count("--threads") == 0 ? 0 : a.threads;
  if (threads > 0) omp_set_num_threads(threads);
  Mesh mesh = create_device_mesh(a.options.mesh_shape);
  if (a.model == "smollm2") {
    run_smollm2(a, cmd, mesh);
    return;
  }
  for (const char* smollm2_only :
       {"--gguf", "--lora_rank", "--lora_alpha", "--outtype", "--max_new_tokens"}) {
    MAGIX_CHECK(cmd.count(smollm2_only) == 0, "{} belongs to --model smollm2, not --model tiny",
                smollm2_only);
  }
  a.options.work_dir = a.work_dir.empty() ? "magix_demo" : a.work_dir;
  a.options.model_config = a.model_config;
  const DemoReport rep = run_demo(a.options, mesh);
  if (mesh.world_rank() == 0) print_tiny_result(rep);
}

}  // namespace

void add_demo_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "demo",
      "Offline end-to-end examples. --model tiny: make a tokenizer and a synthetic addition chat "
      "dataset, train a small Llama from scratch, answer held-out prompts, report exact-match "
      "accuracy. --model smollm2: LoRA-fine-tune SmolLM2-135M-Instruct (a GGUF file, "
      "scripts/fetch_smollm2.sh) to write dates in ISO 8601 form, held-out accuracy before and "
      "after, a short chat, exports as GGUF and HF. Where the defaults differ, the help shows "
      "tiny's and names smollm2's");
  auto args = std::make_shared<DemoCliArgs>();
  DemoOptions& o = args->options;
  const LoraDemoOptions l;
  cmd->add_option(flag("model"), args->model,
                  "tiny (a small Llama trained from scratch) or smollm2 (LoRA on a pretrained "
                  "SmolLM2-135M-Instruct GGUF file)")
      ->capture_default_str();
  cmd->add_option(flag("work_dir"), args->work_dir,
                  "folder for everything the demo writes (default: magix_demo; smollm2: "
                  "magix_demo_smollm2)");
  cmd->add_flag(flag("overwrite"), o.overwrite,
                "replace a previous demo run in --work_dir (only the entries a demo writes)");
  cmd->add_option(flag("mesh_shape"), o.mesh_shape,
                  "data and model axis sizes, one may be -1 (run under mpirun for more than one)")
      ->expected(2)
      ->capture_default_str();
  cmd->add_option(flag("gguf"), args->gguf,
                  fmt::format("smollm2: the GGUF model file (default: {})",
                              "$MAGIX_CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf, "
                              "MAGIX_CACHE defaulting to $XDG_CACHE_HOME/magix or "
                              "~/.cache/magix, where scripts/fetch_smollm2.sh puts it"));
  cmd->add_option(flag("digits"), o.task.digits, "tiny: digits of each operand (1 to 9)")
      ->capture_default_str();
  cmd->add_option(flag("train_examples"), o.task.train_examples,
                  fmt::format("distinct training problems (smollm2: {})", l.task.train_examples))
      ->capture_default_str();
  cmd->add_option(flag("test_examples"), o.task.test_examples,
                  fmt::format("distinct held-out problems, never in the training set (smollm2: "
                              "{})",
                              l.task.test_examples))
      ->capture_default_str();
  cmd->add_option(flag("data_seed"), o.task.seed, "seed of the problems")->capture_default_str();
  cmd->add_option(flag("model_config"), args->model_config,
                  "tiny: config.json of the model to train (default: the demo's small Llama, "
                  "examples/configs/demo_llama.json)");
  cmd->add_option(flag("steps"), o.steps, fmt::format("optimizer steps (smollm2: {})", l.steps))
      ->capture_default_str();
  cmd->add_option(flag("batch_size"), o.batch_size,
                  fmt::format("global batch (rows per step) (smollm2: {})", l.batch_size))
      ->capture_default_str();
  cmd->add_option(flag("learning_rate"), o.learning_rate,
                  fmt::format("peak learning rate (smollm2: {})", l.learning_rate))
      ->capture_default_str();
  cmd->add_option(flag("warmup_steps"), o.warmup_steps,
                  fmt::format("linear warmup steps, then cosine decay to 0 at the last step "
                              "(smollm2: {})",
                              l.warmup_steps))
      ->capture_default_str();
  cmd->add_option(flag("weight_decay"), o.weight_decay, "tiny: AdamW weight decay")
      ->capture_default_str();
  cmd->add_option(flag("seed"), o.seed,
                  "seed of the model init (smollm2: of the adapters) and the data order")
      ->capture_default_str();
  cmd->add_option(flag("log_every"), o.log_every,
                  fmt::format("print the loss every N steps (smollm2: {}, when stderr is not a "
                              "terminal; on a terminal it draws a one-line progress bar)",
                              l.log_every))
      ->capture_default_str();
  cmd->add_option(flag("lora_rank"), args->lora.lora_rank, "smollm2: adapter rank r")
      ->capture_default_str();
  cmd->add_option(flag("lora_alpha"), args->lora.lora_alpha,
                  "smollm2: adapter scale alpha (scale = alpha / r)")
      ->capture_default_str();
  cmd->add_option(flag("max_new_tokens"), args->lora.max_new_tokens,
                  "smollm2: tokens generated per held-out answer")
      ->capture_default_str();
  cmd->add_option(flag("outtype"), args->lora.outtype,
                  "smollm2: weight type of the GGUF export's matrices: f32, f16, bf16 or q8_0")
      ->capture_default_str();
  cmd->add_option(flag("threads"), args->threads,
                  "OpenMP threads per process (0: OpenMP's default, OMP_NUM_THREADS); the "
                  "tiny demo's matrices are small: 2 threads train ~1.3x faster than 1 on an "
                  "idle 2-core machine, and several times slower on a busy one (smollm2: 0)")
      ->capture_default_str();
  cmd->add_flag(flag("bf16"), o.bf16,
                "bf16 mixed precision for training and generation (as magix train --bf16)");
  cmd->add_flag(flag("quiet"), o.quiet,
                "no step log: print the result (the trainer's summary lines stay on stderr)");
  cmd->callback([args, cmd] { run_demo_command(*args, *cmd); });
}

}  // namespace magix::cli
