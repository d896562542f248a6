// magix export: a checkpoint step (saved on any mesh) -> a Hugging Face folder that
// transformers loads (config, safetensors shards <= --max_shard_size + index, tokenizer files).
#include <fmt/format.h>

#include <cctype>
#include <filesystem>

#include "cli_util.hpp"
#include "commands.hpp"
#include "magix/checkpoint.hpp"
#include "magix/distributed.hpp"
#include "magix/error.hpp"
#include "magix/gguf_export.hpp"
#include "magix/lora.hpp"

namespace magix::cli {
namespace {

namespace fs = std::filesystem;

struct ExportArgs {
  std::string checkpoint;
  std::string output_dir;
  std::string dtype = "float32";
  std::string max_shard_size = "5GB";
  bool overwrite = false;
  std::string lora_format = "merged";  // train-lora steps: merged | peft (docs/lora.md)
  std::string base_model;              // train-lora steps: overrides the run's base model
  std::string format = "hf";           // hf | gguf
  std::string outtype = "f16";         // --format gguf: f32 | f16 | bf16 | q8_0
};

// The model to write: the whole parameters of the step's item "model" and its config.json.
// A train-lora step (item "lora") gives the base model with its adapters merged in.
struct ExportModel {
  ModelConfig config;
  ParameterSet params;
  fs::path config_json;
  std::vector<fs::path> files;  // tokenizer files and other extra files of the step
};

ExportModel load_model_for_export(const ExportArgs& a) {
  ExportModel m;
  m.params = is_lora_checkpoint(a.checkpoint)
                 ? load_lora_merged_parameters(a.checkpoint, a.base_model, std::nullopt, &m.config)
                 : load_checkpoint_parameters(a.checkpoint, &m.config);
  CheckpointReader reader(a.checkpoint);
  m.config_json = reader.checked_file("config.json");
  for (const std::string& name : reader.extra_files()) {
    if (name != "config.json") m.files.push_back(reader.checked_file(name));
  }
  return m;
}

void run_export(const ExportArgs& a) {
  Mesh world = create_device_mesh({-1, 1});
  MAGIX_CHECK(world.world_size() == 1, "magix export runs as one process (not under mpirun)");
  MAGIX_CHECK(is_checkpoint_step(a.checkpoint),
              "--checkpoint {} is not a committed checkpoint step (a folder such as "
              "CHECKPOINT_DIR/000200 holding index.json)",
              a.checkpoint);
  // The checkpoint dir holding the step (its real parent: symlinks resolved) counts as an input
  // folder: an export into it (or into any step) could break a step or be taken for one.
  const fs::path step_dir = fs::canonical(a.checkpoint);
  check_outputs_spare_inputs(
      {{"--checkpoint", a.checkpoint},
       {"the checkpoint dir of --checkpoint", step_dir.parent_path().string()},
       {"--base_model", a.base_model}},
      {{"--output_dir", a.output_dir}});
  HfExportOptions options;
  MAGIX_CHECK(a.dtype == "float32" || a.dtype == "bfloat16",
              "--dtype must be float32 or bfloat16, got '{}'", a.dtype);
  options.dtype = a.dtype == "float32" ? DType::kF32 : DType::kBF16;
  options.max_shard_bytes = parse_max_shard_size(a.max_shard_size);
  options.overwrite = a.overwrite;
  MAGIX_CHECK(a.lora_format == "merged" || a.lora_format == "peft",
              "--lora_format must be merged or peft, got '{}'", a.lora_format);
  if (a.lora_format == "peft") {  // the adapters alone, as a PEFT folder
    MAGIX_CHECK(is_lora_checkpoint(a.checkpoint), "--lora_format peft: {} holds no LoRA adapters",
                a.checkpoint);
    export_lora_peft(a.checkpoint, a.output_dir, a.base_model, options.dtype);
    fmt::print("exported the LoRA adapters of {} ({}) as a PEFT folder to {}\n", a.checkpoint,
               a.dtype, a.output_dir);
    return;
  }
  MAGIX_CHECK(a.format == "hf" || a.format == "gguf", "--format must be hf or gguf, got '{}'",
              a.format);
  if (a.format == "gguf") {
    const fs::path out =
        export_checkpoint_gguf(a.checkpoint, a.output_dir, a.outtype, a.base_model, a.overwrite);
    fmt::print("exported {} ({}) as GGUF to {}\n", a.checkpoint, a.outtype, out.string());
    return;
  }
  const ExportModel m = load_model_for_export(a);
  write_hf_folder(a.output_dir, m.config_json, m.files, m.params, options);
  uint64_t numel = 0;
  for (size_t i = 0; i < m.params.size(); ++i) numel += m.params.tensor(i).numel();
  fmt::print("exported {} ({} tensors, {} parameters, {}) to {}\n", a.checkpoint, m.params.size(),
             numel, a.dtype, a.output_dir);
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "export", "Write a checkpoint step as a Hugging Face model folder (safetensors + config)");
  auto args = std::make_shared<ExportArgs>();
  cmd->add_option(flag("checkpoint"), args->checkpoint,
                  "committed checkpoint step folder, e.g. CHECKPOINT_DIR/000200 (any mesh)")
      ->required();
  cmd->add_option(flag("output_dir"), args->output_dir, "HF folder to write")->required();
  cmd->add_option(flag("dtype"), args->dtype, "weights dtype: float32 or bfloat16")
      ->capture_default_str();
  cmd->add_option(flag("max_shard_size"), args->max_shard_size,
                  "largest safetensors file (e.g. 5GB, 500MB, 2GiB); larger models are sharded "
                  "with model.safetensors.index.json")
      ->capture_default_str();
  cmd->add_flag(flag("overwrite"), args->overwrite,
                "replace the model in a non-empty --output_dir");
  cmd->add_option(flag("lora_format"), args->lora_format,
                  "train-lora steps: merged (the base model with the adapters merged in) or peft "
                  "(adapter_config.json + adapter_model.safetensors for PEFT)")
      ->capture_default_str();
  cmd->add_option(flag("base_model"), args->base_model,
                  "train-lora steps: the base model (default: the run's --model_name)");
  cmd->add_option(flag("format"), args->format,
                  "hf (a Hugging Face folder) or gguf (one GGUF file for llama.cpp, Ollama, LM "
                  "Studio: --output_dir is the .gguf path, or a folder that gets "
                  "model-<outtype>.gguf)")
      ->capture_default_str();
  cmd->add_option(flag("outtype"), args->outtype,
                  "--format gguf: weight type of the matrices: f32, f16, bf16 or q8_0")
      ->capture_default_str();
  cmd->callback([args] { run_export(*args); });
}

}  // namespace magix::cli
