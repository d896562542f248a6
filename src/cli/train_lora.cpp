// magix train-lora: every `magix train` flag plus the LoRA adapter flags (docs/lora.md).
#include <fmt/format.h>
#include <stdlib.h>

#include "cli_util.hpp"
#include "commands.hpp"
#include "magix/distributed.hpp"
#include "magix/lora.hpp"
#include "magix/trainer.hpp"

namespace magix::cli {
namespace {

void run_train_lora(const TrainArgs& a, const LoraConfig& lora, const std::string& init) {
  validate_train_args(a);
  check_train_paths(a);
  if (!a.model_cache_dir.empty()) setenv("HF_HUB_CACHE", a.model_cache_dir.c_str(), 1);
  Mesh mesh = create_device_mesh(a.mesh_shape);
  if (mesh.world_rank() == 0) warn_unsaved_run(a);
  check_train_hosts(a, mesh);
  std::unique_ptr<LoraTrainable> model = make_lora_trainable(a, lora, mesh, init);
  if (mesh.world_rank() == 0) {
    int64_t n = 0;
    for (const ParamInfo& p : model->trainable().infos()) n += shape_numel(p.global_shape);
    fmt::print(stderr, "lora: {} adapted weights, {} adapter parameters (rank {}, alpha {})\n",
               model->trainable().size() / 2, n, lora.rank, lora.alpha);
  }
  const TrainSummary s = run_training(a, mesh, *model);
  if (mesh.world_rank() == 0) print_train_summary(s);
}

}  // namespace

void add_train_lora_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "train-lora", "LoRA fine-tuning: low-rank adapters on a frozen model (every train flag)");
  auto args = std::make_shared<TrainArgs>();
  auto lora = std::make_shared<LoraConfig>();
  add_train_options(*cmd, *args);
  cmd->add_option(flag("lora_rank"), lora->rank, "adapter rank r")->capture_default_str();
  cmd->add_option(flag("lora_alpha"), lora->alpha, "adapter scale alpha (scale = alpha / r)")
      ->capture_default_str();
  cmd->add_option(flag("lora_targets"), lora->targets,
                  "regex searched in parameter names: the 2-D weights that get adapters "
                  "(default: q, k, v, o, gate, up, down of every layer)")
      ->capture_default_str();
  cmd->add_option(flag("lora_dropout"), lora->dropout,
                  "dropout on the adapters' input (PEFT's lora_dropout; saved with the adapters)")
      ->capture_default_str();
  cmd->add_flag(flag("use_rslora"), lora->rslora,
                "rank-stabilised LoRA (PEFT's use_rslora): scale = alpha / sqrt(r); saved with the "
                "adapters");
  auto init = std::make_shared<std::string>();
  cmd->add_option(flag("lora_init"), *init,
                  "start from these adapters: a PEFT adapter folder or a train-lora checkpoint "
                  "step (their rank and targets must match --lora_rank and --lora_targets)");
  cmd->callback([args, lora, init] { run_train_lora(*args, *lora, *init); });
}

}  // namespace magix::cli
