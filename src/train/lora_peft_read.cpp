// Reading a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) onto a mesh,
// and the adapters that `generate --lora` and `train-lora --lora_init` accept (a train-lora
// checkpoint step or a PEFT folder).
#include <cstring>
#include <nlohmann/json.hpp>

#include "magix/error.hpp"
#include "magix/json_parse.hpp"
#include "magix/lora.hpp"
#include "magix/safetensors.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;

std::string escape_regex(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string_view(".^$|()[]{}*+?\\").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

// PEFT's target_modules (of the adapter config `c`) as a regex over magix's weight names: a list
// matches a module whose name equals an entry or ends with "." + the entry; a string is a regex
// the whole module name must match.
std::string targets_regex(const nlohmann::json& c, const fs::path& file) {
  const std::string where = file.string();
  if (c.contains("target_modules") && c.at("target_modules").is_string()) {
    std::string out = "^(?:";
    out += c.at("target_modules").get<std::string>();
    out += ")\\.weight$";
    return out;
  }
  const auto names = json_get<std::vector<std::string>>(c, "target_modules", where);
  MAGIX_CHECK(!names.empty(), "{}: \"target_modules\" is an empty list", where);
  std::string alt;
  for (const std::string& m : names) {
    if (!alt.empty()) alt += '|';
    alt += escape_regex(m);
  }
  std::string out = "(^|\\.)(";
  out += alt;
  out += ")\\.weight$";
  return out;
}

// A PEFT setting magix does not implement is an error rather than a silently different model.
void check_supported(const nlohmann::json& c, const fs::path& file) {
  const auto is_set = [&](const char* key) {
    if (!c.contains(key) || c.at(key).is_null()) return false;
    const nlohmann::json& v = c.at(key);
    if (v.is_boolean()) return v.get<bool>();
    if (v.is_object() || v.is_array() || v.is_string()) return !v.empty();
    return true;
  };
  const std::string where = file.string();
  const std::string peft_type = json_value<std::string>(c, "peft_type", "LORA", where);
  MAGIX_CHECK(peft_type == "LORA", "{}: peft_type {} (magix reads LORA adapters)", where,
              peft_type);
  for (const char* key :
       {"use_dora", "fan_in_fan_out", "modules_to_save", "rank_pattern", "alpha_pattern",
        "layers_to_transform", "exclude_modules", "lora_bias", "layer_replication",
        "target_parameters", "trainable_token_indices", "use_qalora"}) {
    MAGIX_CHECK(!is_set(key), "{}: {} = {} is not supported by magix's LoRA", file.string(), key,
                c.at(key).dump());
  }
  const std::string bias = json_value<std::string>(c, "bias", "none", where);
  MAGIX_CHECK(bias == "none", "{}: bias = {} is not supported (magix adapters have no bias)", where,
              bias);
}

}  // namespace

bool is_peft_adapter_dir(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / "adapter_config.json", ec) &&
         fs::is_regular_file(dir / "adapter_model.safetensors", ec);
}

LoadedLora read_peft_adapter(const fs::path& dir, const std::vector<ParamInfo>& base,
                             const Mesh& mesh) {
  const fs::path cfg_path = dir / "adapter_config.json";
  constexpr int64_t kMaxAdapterConfigBytes = 4 << 20;  // PEFT writes about 1 KB
  const std::string text =
      read_text_file_bounded(cfg_path, kMaxAdapterConfigBytes, "PEFT adapter config");
  const std::string where = cfg_path.string();
  const nlohmann::json c = parse_json(text, where);
  json_expect_object(c, where);
  check_supported(c, cfg_path);
  LoadedLora out;
  out.config.rank = json_get<int64_t>(c, "r", where);
  out.config.alpha = json_get<double>(c, "lora_alpha", where);
  out.config.dropout = json_value<double>(c, "lora_dropout", 0.0, where);
  out.config.rslora = json_value<bool>(c, "use_rslora", false, where);
  out.config.targets = targets_regex(c, cfg_path);
  const std::vector<ParamInfo> infos = lora_adapter_infos(base, out.config, mesh);
  const SafetensorsReader st(dir / "adapter_model.safetensors");
  out.adapters = ParameterSet(infos);
  for (size_t i = 0; i < infos.size(); ++i) {
    const ParamInfo& p = infos[i];
    const std::string name = "base_model.model." + p.name;
    const SafetensorsEntry* e = st.find(name);
    MAGIX_CHECK(e != nullptr,
                "{}: no tensor '{}' (target_modules select '{}' of this model); is it an adapter "
                "of another base model?",
                (dir / "adapter_model.safetensors").string(), name, p.name);
    MAGIX_CHECK(e->shape == p.global_shape,
                "{}: '{}' is {}, this model needs {} (r {}): is it an adapter of another base "
                "model?",
                (dir / "adapter_model.safetensors").string(), name, shape_str(e->shape),
                shape_str(p.global_shape), out.config.rank);
    if (p.pieces.empty()) {
      out.adapters.tensor(i) = st.read_box_f32(name, p.box_start, p.box_extent);
      continue;
    }
    int64_t row = 0;  // a fused weight's B: its part boxes stacked along dim 0
    for (const ShardBox& box : p.pieces) {
      const Tensor piece = st.read_box_f32(name, box.start, box.extent);
      Tensor dst = out.adapters.tensor(i).rows(row, box.extent[0]);
      std::memcpy(dst.bytes(), piece.bytes(), piece.nbytes());
      row += box.extent[0];
    }
  }
  return out;
}

LoadedLora read_lora_adapters(const fs::path& path, const std::vector<ParamInfo>& base,
                              std::optional<double> alpha, const Mesh& mesh) {
  if (is_peft_adapter_dir(path)) {
    LoadedLora lora = read_peft_adapter(path, base, mesh);
    if (alpha) lora.config.alpha = *alpha;
    return lora;
  }
  const fs::path step = resolve_lora_step(path);
  const LoraRunInfo run = read_lora_run_info(step);
  LoadedLora lora = read_lora_checkpoint(step, base, alpha.value_or(run.config.alpha), mesh);
  MAGIX_CHECK(lora.config.rank == run.config.rank,
              "{}: adapters of rank {} but the run recorded --lora_rank {}", step.string(),
              lora.config.rank, run.config.rank);
  lora.config.targets = run.config.targets;
  lora.config.dropout = run.config.dropout;
  return lora;
}

LoraConfig merge_lora_adapters(const fs::path& path, Decoder& model, std::optional<double> alpha) {
  LoadedLora lora = read_lora_adapters(path, model.params().infos(), alpha, model.mesh());
  merge_lora(model.params(), lora.adapters, lora.config.scale());
  return lora.config;
}

}  // namespace magix
