// A committed checkpoint step -> a Hugging Face folder (magix export; docs/checkpoints.md).
#include <algorithm>
#include <cctype>
#include <exception>
#include <string>

#include "io/checkpoint_format.hpp"
#include "io/safetensors_util.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"
#include "magix/generation_config.hpp"
#include "magix/hf_files.hpp"
#include "magix/memory_check.hpp"

namespace magix {

namespace fs = std::filesystem;
using nlohmann::json;

ParameterSet load_checkpoint_parameters(const fs::path& step_dir, ModelConfig* config) {
  MAGIX_CHECK(config != nullptr, "load_checkpoint_parameters: config must not be null");
  CheckpointReader reader(step_dir);
  const fs::path config_json = reader.checked_file("config.json");
  *config = load_model_config(config_json);
  check_model_fits_in_memory(*config, config_json.string(), 4);  // whole fp32 tensors
  std::vector<ParamInfo> infos = expected_parameters(*config);   // whole boxes (1x1)
  ParameterSet params(std::move(infos));
  std::vector<ShardedTensor> targets = sharded_tensors(params);
  reader.read("model", targets);
  return params;
}

void write_hf_folder(const fs::path& out_dir, const fs::path& config_json,
                     const std::vector<fs::path>& files, const ParameterSet& params,
                     const HfExportOptions& options) {
  MAGIX_CHECK(options.dtype == DType::kF32 || options.dtype == DType::kBF16,
              "export dtype must be float32 or bfloat16, got {}", dtype_name(options.dtype));
  MAGIX_CHECK(options.max_shard_bytes > 0, "the maximum shard size must be positive");
  json config;
  try {
    config = io::parse_json_strict(ckpt::read_text_file(config_json), 64);
  } catch (const Error& e) {
    MAGIX_FAIL("{}: {}", config_json.string(), e.what());
  }
  MAGIX_CHECK(config.is_object(), "{}: not a JSON object", config_json.string());
  const char* dtype = options.dtype == DType::kF32 ? "float32" : "bfloat16";
  config["torch_dtype"] = dtype;
  if (config.contains("dtype")) config["dtype"] = dtype;
  for (const fs::path& f : files) {
    const std::string name = f.filename().string();
    MAGIX_CHECK(name != "config.json" && !name.starts_with("model.safetensors") &&
                    !(name.starts_with("model-") && name.ends_with(".safetensors")),
                "export: extra file '{}' would clash with the weights or config", f.string());
  }

  std::error_code ec;
  if (fs::exists(out_dir, ec)) {
    MAGIX_CHECK(fs::is_directory(out_dir), "output {} exists and is not a folder",
                out_dir.string());
    const bool empty = fs::directory_iterator(out_dir) == fs::directory_iterator();
    MAGIX_CHECK(empty || options.overwrite,
                "output folder {} is not empty (use --overwrite to replace its model)",
                out_dir.string());
    // Until the new config.json is written last, the folder must not look like a model.
    if (fs::exists(out_dir / "config.json")) {
      fs::remove(out_dir / "config.json");
      io::fsync_dir(out_dir);
    }
  }
  fs::create_directories(out_dir);

  std::vector<NamedTensor> tensors;
  tensors.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamInfo& p = params.info(i);
    MAGIX_CHECK(p.box_extent == p.global_shape && params.tensor(i).shape() == p.global_shape,
                "export: parameter {} is a shard {} of {}, not the whole tensor", p.name,
                shape_str(params.tensor(i).shape()), shape_str(p.global_shape));
    tensors.push_back(NamedTensor{p.name, &params.tensor(i)});
  }
  write_hf_weights(out_dir, tensors, options.dtype, options.max_shard_bytes);
  for (const fs::path& f : files) {
    const std::string text = ckpt::read_text_file(f);
    io::write_file_atomically(out_dir / f.filename(), [&](int fd, const fs::path& tmp) {
      io::write_all(fd, text.data(), text.size(), tmp);
    });
  }
  // generation_config.json: the source model's (among `files`), else transformers' form made
  // from config.json's bos/eos/pad ids, so that generate() stops where the model's ids say.
  const bool has_generation_config = std::any_of(files.begin(), files.end(), [](const fs::path& f) {
    return f.filename() == "generation_config.json";
  });
  if (!has_generation_config) {
    const std::string g = generation_config_from_model_config(config).dump(2) + "\n";
    io::write_file_atomically(out_dir / "generation_config.json", [&](int fd, const fs::path& tmp) {
      io::write_all(fd, g.data(), g.size(), tmp);
    });
  }
  const std::string text = config.dump(2) + "\n";
  io::write_file_atomically(out_dir / "config.json", [&](int fd, const fs::path& tmp) {
    io::write_all(fd, text.data(), text.size(), tmp);
  });
}

uint64_t parse_max_shard_size(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) {
    ++i;
  }
  MAGIX_CHECK(i > 0, "max_shard_size '{}': expected a number and a unit such as 5GB", text);
  double value = 0;
  try {
    value = std::stod(text.substr(0, i));
  } catch (const std::exception&) {
    MAGIX_FAIL("max_shard_size '{}': not a number", text);
  }
  std::string unit = text.substr(i);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  if (unit == "KB") scale = 1e3;
  if (unit == "MB") scale = 1e6;
  if (unit == "GB") scale = 1e9;
  if (unit == "KIB") scale = 1024.0;
  if (unit == "MIB") scale = 1024.0 * 1024;
  if (unit == "GIB") scale = 1024.0 * 1024 * 1024;
  MAGIX_CHECK(scale > 0, "max_shard_size '{}': unknown unit (B, KB, MB, GB, KiB, MiB, GiB)", text);
  const double bytes = value * scale;
  MAGIX_CHECK(bytes >= 1 && bytes < 1.8e19, "max_shard_size '{}' is out of range", text);
  return static_cast<uint64_t>(bytes);
}

void export_checkpoint(const fs::path& step_dir, const fs::path& out_dir,
                       const HfExportOptions& options) {
  ModelConfig config;
  ParameterSet params = load_checkpoint_parameters(step_dir, &config);
  CheckpointReader reader(step_dir);
  std::vector<fs::path> files;
  for (const std::string& name : reader.extra_files()) {
    if (name != "config.json") files.push_back(reader.checked_file(name));
  }
  write_hf_folder(out_dir, reader.checked_file("config.json"), files, params, options);
}

}  // namespace magix
