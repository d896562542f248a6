// LoRA adapters from item "lora" of a committed checkpoint step, and merging them at load.
#include <algorithm>

#include "magix/checkpoint.hpp"
#include "magix/error.hpp"
#include "magix/json_parse.hpp"
#include "magix/lora.hpp"

namespace magix {
namespace {

// "model.layers.0.self_attn.q_proj.weight" -> "model\.layers\.0\.self_attn\.q_proj\.weight"
std::string escape_regex(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string_view(".^$|()[]{}*+?\\").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

LoadedLora read_lora_checkpoint(const std::filesystem::path& step_dir,
                                const std::vector<ParamInfo>& base, double alpha,
                                const Mesh& mesh) {
  const CheckpointReader reader(step_dir);
  const std::vector<std::string> items = reader.items();
  MAGIX_CHECK(std::find(items.begin(), items.end(), "lora") != items.end(),
              "checkpoint '{}' has no LoRA adapters (item \"lora\"); it was not written by "
              "`magix train-lora`",
              step_dir.string());
  LoadedLora out;
  out.config.alpha = alpha;
  out.config.rank = 0;
  // The scaling the adapters were trained with: train-lora records --use_rslora in the step's
  // trainer state (absent, or a state without train-lora's settings: plain LoRA). Read leniently,
  // unlike read_lora_run_info: this reads adapters of any step that has them.
  const nlohmann::json state = reader.trainer_state();
  if (const nlohmann::json* t = json_find(state, "trainable"); t != nullptr && t->is_object()) {
    out.config.rslora = json_value<bool>(*t, "lora_use_rslora", false,
                                         json_key_name(step_dir.string(), "trainable"));
  }
  std::vector<ParamInfo> infos;
  std::vector<std::string> names;
  for (const ParamInfo& w : base) {
    if (w.global_shape.size() != 2) continue;
    if (w.name.size() < 7 || w.name.compare(w.name.size() - 7, 7, ".weight") != 0) continue;
    const std::string a = lora_adapter_name(w.name, 'A');
    const std::string b = lora_adapter_name(w.name, 'B');
    const bool has_a = reader.has_tensor("lora", a), has_b = reader.has_tensor("lora", b);
    if (!has_a && !has_b) continue;
    MAGIX_CHECK(has_a && has_b, "checkpoint '{}': '{}' has {} but not {}", step_dir.string(),
                w.name, has_a ? a : b, has_a ? b : a);
    const Shape sa = reader.global_shape("lora", a), sb = reader.global_shape("lora", b);
    const int64_t r = sa.size() == 2 ? sa[0] : -1;
    MAGIX_CHECK(sa.size() == 2 && sb.size() == 2 && sa[1] == w.global_shape[1] &&
                    sb[0] == w.global_shape[0] && sb[1] == r && r >= 1,
                "checkpoint '{}': adapters of '{}' {} have shapes {} and {}, expected [r, {}] and "
                "[{}, r]: is this the checkpoint of another base model?",
                step_dir.string(), w.name, shape_str(w.global_shape), shape_str(sa), shape_str(sb),
                w.global_shape[1], w.global_shape[0]);
    MAGIX_CHECK(out.config.rank == 0 || out.config.rank == r,
                "checkpoint '{}': adapters of rank {} and {} (one rank per checkpoint)",
                step_dir.string(), out.config.rank, r);
    out.config.rank = r;
    names.push_back(escape_regex(w.name));
    infos.push_back(lora_adapter_info(w, 'A', r, mesh));
    infos.push_back(lora_adapter_info(w, 'B', r, mesh));
  }
  MAGIX_CHECK(!infos.empty(),
              "checkpoint '{}' has no adapter for any weight of this model (e.g. '{}'): is it "
              "the checkpoint of another base model?",
              step_dir.string(), "model.layers.0.self_attn.q_proj.lora_A.weight");
  std::string targets = "^(";
  for (size_t i = 0; i < names.size(); ++i) targets += (i ? "|" : "") + names[i];
  out.config.targets = targets + ")$";
  out.adapters = ParameterSet(std::move(infos));
  std::vector<ShardedTensor> shards = sharded_tensors(out.adapters);
  reader.read("lora", shards);
  return out;
}

LoraConfig merge_lora_checkpoint(const std::filesystem::path& step_dir, Decoder& model,
                                 double alpha) {
  LoadedLora lora = read_lora_checkpoint(step_dir, model.params().infos(), alpha, model.mesh());
  merge_lora(model.params(), lora.adapters, lora.config.scale());
  return lora.config;
}

}  // namespace magix
