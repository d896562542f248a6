// A PEFT adapter folder (adapter_config.json + adapter_model.safetensors) from whole adapters.
#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <random>

#include "magix/error.hpp"
#include "magix/lora.hpp"
#include "magix/safetensors.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;

void fsync_path(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  MAGIX_CHECK(fd >= 0, "cannot open '{}' to sync it", path.string());
  const int rc = ::fsync(fd);
  ::close(fd);
  MAGIX_CHECK(rc == 0, "cannot sync '{}'", path.string());
}

// "model.layers.3.self_attn.q_proj.lora_A.weight" -> "model.layers.3.self_attn.q_proj"
std::string module_of(const std::string& adapter_name) {
  const std::string suffix = ".lora_A.weight";
  return adapter_name.substr(0, adapter_name.size() - suffix.size());
}

// PEFT's target_modules: the full names of the adapted modules (PEFT matches a name exactly,
// so no other module of the base model gets an adapter).
nlohmann::json target_modules(const ParameterSet& adapters) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t k = 0; k < adapters.size(); k += 2) out.push_back(module_of(adapters.info(k).name));
  return out;
}

}  // namespace

void write_peft_adapter(const fs::path& dir, const ParameterSet& adapters, const LoraConfig& config,
                        const std::string& base_model, DType dtype) {
  MAGIX_CHECK(dtype == DType::kF32 || dtype == DType::kBF16,
              "PEFT adapters are written as F32 or BF16, not {}", dtype_name(dtype));
  MAGIX_CHECK(adapters.size() > 0 && adapters.size() % 2 == 0,
              "PEFT export: {} adapter tensors, expected (A, B) pairs", adapters.size());
  for (size_t i = 0; i < adapters.size(); ++i) {
    const ParamInfo& p = adapters.info(i);
    MAGIX_CHECK(p.box_extent == p.global_shape && adapters.tensor(i).shape() == p.global_shape,
                "PEFT export needs whole adapters; '{}' holds a box {} of {}", p.name,
                shape_str(p.box_extent), shape_str(p.global_shape));
  }
  const int64_t r = adapters.info(0).global_shape.at(0);
  MAGIX_CHECK(r == config.rank, "PEFT export: lora_A has rank {} but the config says {}", r,
              config.rank);
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    MAGIX_CHECK(fs::is_directory(dir, ec) && fs::is_empty(dir, ec),
                "output folder '{}' exists and is not empty: choose a new folder", dir.string());
  }
  const fs::path parent = dir.parent_path().empty() ? fs::path(".") : dir.parent_path();
  fs::create_directories(parent, ec);
  MAGIX_CHECK(!ec, "cannot create '{}': {}", parent.string(), ec.message());
  std::random_device rd;
  const fs::path tmp = parent / fmt::format(".tmp-{}-{:08x}", dir.filename().string(), rd());
  fs::create_directory(tmp, ec);
  MAGIX_CHECK(!ec, "cannot create '{}': {}", tmp.string(), ec.message());
  try {
    nlohmann::json cfg = {
        {"peft_type", "LORA"},
        {"task_type", "CAUSAL_LM"},
        {"r", config.rank},
        {"target_modules", target_modules(adapters)},
        {"base_model_name_or_path", base_model},
        {"lora_dropout", 0.0},
        {"bias", "none"},
        {"fan_in_fan_out", false},
        {"inference_mode", true},
        {"init_lora_weights", true},
        {"use_rslora", config.rslora},
        {"use_dora", false},
        {"modules_to_save", nullptr},
        {"layers_to_transform", nullptr},
        {"layers_pattern", nullptr},
        {"rank_pattern", nlohmann::json::object()},
        {"alpha_pattern", nlohmann::json::object()},
        {"revision", nullptr},
    };
    // An integral alpha is written as an integer, as PEFT writes it.
    if (config.alpha == std::floor(config.alpha) && std::fabs(config.alpha) < 1e15) {
      cfg["lora_alpha"] = static_cast<int64_t>(config.alpha);
    } else {
      cfg["lora_alpha"] = config.alpha;
    }
    {
      std::ofstream f(tmp / "adapter_config.json");
      f << cfg.dump(2) << "\n";
      f.close();
      MAGIX_CHECK(f.good(), "cannot write '{}'", (tmp / "adapter_config.json").string());
    }
    fsync_path(tmp / "adapter_config.json", false);
    std::vector<Tensor> converted;
    converted.reserve(adapters.size());
    std::vector<std::string> names;
    for (size_t i = 0; i < adapters.size(); ++i) {
      converted.push_back(dtype == DType::kF32 ? adapters.tensor(i) : adapters.tensor(i).to(dtype));
      names.push_back("base_model.model." + adapters.info(i).name);
    }
    std::vector<NamedTensor> tensors;
    for (size_t i = 0; i < adapters.size(); ++i) tensors.push_back({names[i], &converted[i]});
    write_safetensors(tmp / "adapter_model.safetensors", tensors, {{"format", "pt"}});
    fsync_path(tmp, true);
    if (fs::exists(dir, ec)) fs::remove(dir, ec);  // an empty folder (checked above)
    fs::rename(tmp, dir, ec);
    MAGIX_CHECK(!ec, "cannot rename '{}' to '{}': {}", tmp.string(), dir.string(), ec.message());
    fsync_path(parent, true);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace magix
