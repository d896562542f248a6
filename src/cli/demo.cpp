// magix demo: the offline end-to-end example (include/magix/demo.hpp, docs/cli.md).
#include <fmt/format.h>
#include <omp.h>

#include "cli_util.hpp"
#include "commands.hpp"
#include "magix/demo.hpp"
#include "magix/distributed.hpp"
#include "magix/error.hpp"

namespace magix::cli {
namespace {

struct DemoCliArgs {
  DemoOptions options;
  std::string work_dir = "magix_demo";
  std::string model_config;
  int threads = 1;
};

void run_demo_command(DemoCliArgs& a) {
  a.options.work_dir = a.work_dir;
  a.options.model_config = a.model_config;
  MAGIX_CHECK(a.threads >= 0, "--threads must be 0 (OpenMP's default) or positive, got {}",
              a.threads);
  if (a.threads > 0) omp_set_num_threads(a.threads);
  Mesh mesh = create_device_mesh(a.options.mesh_shape);
  const DemoReport rep = run_demo(a.options, mesh);
  if (mesh.world_rank() != 0) return;
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

}  // namespace

void add_demo_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "demo",
      "Offline end-to-end example: make a tokenizer and a synthetic addition chat dataset, train "
      "a small Llama from scratch, answer held-out prompts, report exact-match accuracy");
  auto args = std::make_shared<DemoCliArgs>();
  DemoOptions& o = args->options;
  cmd->add_option(flag("work_dir"), args->work_dir, "folder for everything the demo writes")
      ->capture_default_str();
  cmd->add_flag(flag("overwrite"), o.overwrite,
                "replace a previous demo run in --work_dir (only the entries a demo writes)");
  cmd->add_option(flag("mesh_shape"), o.mesh_shape,
                  "data and model axis sizes, one may be -1 (run under mpirun for more than one)")
      ->expected(2)
      ->capture_default_str();
  cmd->add_option(flag("digits"), o.task.digits, "digits of each operand (1 to 9)")
      ->capture_default_str();
  cmd->add_option(flag("train_examples"), o.task.train_examples, "distinct training problems")
      ->capture_default_str();
  cmd->add_option(flag("test_examples"), o.task.test_examples,
                  "distinct held-out problems (never in the training set)")
      ->capture_default_str();
  cmd->add_option(flag("data_seed"), o.task.seed, "seed of the problems")->capture_default_str();
  cmd->add_option(flag("model_config"), args->model_config,
                  "config.json of the model to train (default: the demo's small Llama, "
                  "examples/configs/demo_llama.json)");
  cmd->add_option(flag("steps"), o.steps, "optimizer steps")->capture_default_str();
  cmd->add_option(flag("batch_size"), o.batch_size, "global batch (rows per step)")
      ->capture_default_str();
  cmd->add_option(flag("learning_rate"), o.learning_rate, "peak learning rate")
      ->capture_default_str();
  cmd->add_option(flag("warmup_steps"), o.warmup_steps,
                  "linear warmup steps, then cosine decay to 0 at the last step")
      ->capture_default_str();
  cmd->add_option(flag("weight_decay"), o.weight_decay, "AdamW weight decay")
      ->capture_default_str();
  cmd->add_option(flag("seed"), o.seed, "seed of the model init and the data order")
      ->capture_default_str();
  cmd->add_option(flag("log_every"), o.log_every, "print the loss every N steps")
      ->capture_default_str();
  cmd->add_option(flag("threads"), args->threads,
                  "OpenMP threads per process (0: OpenMP's default, OMP_NUM_THREADS); the "
                  "demo's matrices are small: 2 threads train ~1.3x faster than 1 on an idle "
                  "2-core machine, and several times slower on a busy one")
      ->capture_default_str();
  cmd->add_flag(flag("bf16"), o.bf16,
                "bf16 mixed precision for training and generation (as magix train --bf16)");
  cmd->add_flag(flag("quiet"), o.quiet,
                "no step log: print the result (the trainer's summary lines stay on stderr)");
  cmd->callback([args] { run_demo_command(*args); });
}

}  // namespace magix::cli
