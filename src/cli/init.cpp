// magix init: a randomly initialised HF-format model folder from a config.json.
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli_util.hpp"
#include "commands.hpp"
#include "magix/error.hpp"
#include "magix/hf_files.hpp"
#include "magix/memory_check.hpp"
#include "magix/model.hpp"

namespace magix::cli {
namespace {

namespace fs = std::filesystem;

struct InitArgs {
  std::string config;
  std::string output_dir;
  uint64_t seed = 42;
  std::string dtype = "float32";
  bool overwrite = false;
};

// Files of an HF model folder that `init` would replace.
bool holds_model_files(const fs::path& dir) {
  if (!fs::exists(dir)) return false;
  MAGIX_CHECK(fs::is_directory(dir), "--output_dir '{}' exists and is not a folder", dir.string());
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name == "config.json" || name.ends_with(".safetensors") ||
        name == "model.safetensors.index.json") {
      return true;
    }
  }
  return false;
}

void run_init(const InitArgs& a) {
  const ModelConfig config = load_model_config(a.config);
  MAGIX_CHECK(a.dtype == "float32" || a.dtype == "bfloat16",
              "--dtype must be float32 or bfloat16, got '{}'", a.dtype);
  check_model_fits_in_memory(config, a.config, 4);  // drawn in fp32
  const fs::path dir = a.output_dir;
  check_outputs_spare_inputs({{"--config", a.config}},
                             {{"--output_dir", a.output_dir},
                              {"--output_dir's config.json", (dir / "config.json").string()}});
  MAGIX_CHECK(a.overwrite || !holds_model_files(dir),
              "--output_dir '{}' already holds model files (config.json / *.safetensors); "
              "choose an empty folder or pass --overwrite",
              dir.string());
  fs::create_directories(dir);

  Mesh mesh;
  std::vector<ParamInfo> infos = expected_parameters(config);
  shard_parameters(infos, mesh);
  const ParameterSet params = init_parameters(config, infos, a.seed);
  std::vector<NamedTensor> named;
  for (size_t i = 0; i < params.size(); ++i) named.push_back({infos[i].name, &params.tensor(i)});
  // Weights first, config.json last: a folder without config.json is never taken for a model.
  fs::remove(dir / "config.json");
  write_hf_weights(dir, named, a.dtype == "bfloat16" ? DType::kBF16 : DType::kF32);

  nlohmann::json out = config.raw;
  out["dtype"] = a.dtype;
  out["torch_dtype"] = a.dtype;
  const std::string text = out.dump(2) + "\n";
  write_output_file((dir / "config.json").string(), text);
  int64_t count = 0;
  for (size_t i = 0; i < params.size(); ++i) count += params.tensor(i).numel();
  fmt::print("initialised {} model ({} parameters, seed {}, {}) in {}\n",
             family_name(config.family), count, a.seed, a.dtype, dir.string());
}

}  // namespace

void add_init_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "init", "Write a randomly initialised HF-format model folder (config.json + safetensors)");
  auto args = std::make_shared<InitArgs>();
  cmd->add_option(flag("config"), args->config,
                  "config.json of the model (llama, mistral, "
                  "gemma, qwen2, qwen3, gemma2, gemma3_text, phi3)")
      ->required();
  cmd->add_option(flag("output_dir"), args->output_dir, "folder to write")->required();
  cmd->add_option(flag("seed"), args->seed, "random seed (init is a pure function of the seed)")
      ->capture_default_str();
  cmd->add_option(flag("dtype"), args->dtype, "weight dtype: float32 or bfloat16")
      ->capture_default_str();
  cmd->add_flag(flag("overwrite"), args->overwrite, "replace model files already in --output_dir");
  cmd->callback([args] { run_init(*args); });
}

}  // namespace magix::cli
