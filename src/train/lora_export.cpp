// Export of train-lora checkpoints: the merged model and PEFT adapter folders, with the base
// model the run recorded in its trainer state.
#include <algorithm>

#include "magix/checkpoint.hpp"
#include "magix/error.hpp"
#include "magix/json_parse.hpp"
#include "magix/lora.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;

// The base decoder's parameters on this process alone, as the run had them.
ParameterSet load_base(const LoraRunInfo& run, const std::string& override_name, const Mesh& mesh,
                       ModelConfig* config) {
  const std::string name = override_name.empty() ? run.model_name : override_name;
  if (!name.empty()) {
    Decoder d = load_decoder(name, mesh);
    *config = d.config();
    return d.params();
  }
  MAGIX_CHECK(!run.model_config.empty(),
              "the checkpoint records neither --model_name nor --model_config: pass the base "
              "model");
  MAGIX_CHECK(fs::exists(run.model_config),
              "the run's --model_config '{}' (random base weights) is not found from here: pass "
              "the base model",
              run.model_config);
  *config = load_model_config(run.model_config);
  std::vector<ParamInfo> infos = expected_parameters(*config);
  shard_parameters(infos, mesh);
  return init_parameters(*config, infos, run.seed);
}

}  // namespace

bool is_lora_checkpoint(const fs::path& step_dir) {
  if (!is_checkpoint_step(step_dir)) return false;
  const std::vector<std::string> items = CheckpointReader(step_dir).items();
  return std::find(items.begin(), items.end(), "lora") != items.end();
}

fs::path resolve_lora_step(const fs::path& path) {
  if (is_checkpoint_step(path)) return path;
  std::error_code ec;
  MAGIX_CHECK(fs::is_directory(path, ec),
              "LoRA checkpoint '{}' is not a folder: pass a checkpoint step such as "
              "CHECKPOINT_DIR/000200 (or the checkpoint dir for its latest step)",
              path.string());
  std::optional<fs::path> best;
  for (const fs::directory_entry& e : fs::directory_iterator(path, ec)) {
    const std::string n = e.path().filename().string();
    if (n.empty() || !std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    if (!is_checkpoint_step(e.path())) continue;
    if (!best || std::stoll(n) > std::stoll(best->filename().string())) best = e.path();
  }
  MAGIX_CHECK(best.has_value(),
              "'{}' is neither a checkpoint step nor a checkpoint dir holding "
              "committed steps",
              path.string());
  return *best;
}

LoraRunInfo read_lora_run_info(const fs::path& step_dir) {
  const nlohmann::json state = CheckpointReader(step_dir).trainer_state();
  LoraRunInfo out;
  // Fields of a train-lora run's trainer_state.json; a missing one means another kind of run.
  const std::string where = (step_dir / "trainer_state.json").string();
  for (const char* key : {"args", "trainable"}) {
    MAGIX_CHECK(state.contains(key),
                "{}: no \"{}\": trainer_state.json lacks the train-lora run's settings; was it "
                "written by `magix train-lora`?",
                where, key);
  }
  const nlohmann::json& args = json_object_at(state, "args", where);
  const std::string args_where = json_key_name(where, "args");
  out.model_name = json_value<std::string>(args, "model_name", "", args_where);
  out.model_config = json_value<std::string>(args, "model_config", "", args_where);
  out.seed = json_value<uint64_t>(args, "seed", 42, args_where);
  out.bf16_base = json_value<bool>(args, "bf16_model_weights", false, args_where);
  const nlohmann::json& t = json_object_at(state, "trainable", where);
  const std::string t_where = json_key_name(where, "trainable");
  out.config.rank = json_get<int64_t>(t, "lora_rank", t_where);
  out.config.alpha = json_get<double>(t, "lora_alpha", t_where);
  out.config.targets = json_get<std::string>(t, "lora_targets", t_where);
  out.config.dropout = json_value<double>(t, "lora_dropout", 0.0, t_where);
  out.config.rslora = json_value<bool>(t, "lora_use_rslora", false, t_where);
  return out;
}

ParameterSet load_lora_merged_parameters(const fs::path& step_dir, const std::string& base_model,
                                         std::optional<double> alpha, ModelConfig* config) {
  const LoraRunInfo run = read_lora_run_info(step_dir);
  const Mesh mesh;
  ModelConfig c;
  ParameterSet params = load_base(run, base_model, mesh, &c);
  if (run.bf16_base) {  // trained on W rounded to bf16: merge into the same base
    params.convert(DType::kBF16);
    params.convert(DType::kF32);
  }
  const LoadedLora lora =
      read_lora_checkpoint(step_dir, params.infos(), alpha.value_or(run.config.alpha), mesh);
  MAGIX_CHECK(lora.config.rank == run.config.rank,
              "{}: adapters of rank {} but the run recorded --lora_rank {}", step_dir.string(),
              lora.config.rank, run.config.rank);
  merge_lora(params, lora.adapters, lora.config.scale());
  if (config) *config = c;
  return params;
}

void export_lora_peft(const fs::path& step_dir, const fs::path& out_dir,
                      const std::string& base_model, DType dtype) {
  const LoraRunInfo run = read_lora_run_info(step_dir);
  const ModelConfig c = load_model_config(CheckpointReader(step_dir).dir() / "config.json");
  const Mesh mesh;
  std::vector<ParamInfo> infos = expected_parameters(c);
  shard_parameters(infos, mesh);
  const LoadedLora lora = read_lora_checkpoint(step_dir, infos, run.config.alpha, mesh);
  const std::string base = !base_model.empty()       ? base_model
                           : !run.model_name.empty() ? run.model_name
                                                     : run.model_config;
  write_peft_adapter(out_dir, lora.adapters, run.config, base, dtype);
}

}  // namespace magix
