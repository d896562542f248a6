// A checkpoint step as one GGUF file: `magix export --format gguf` and magix.export(format="gguf").
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"
#include "magix/gguf_export.hpp"
#include "magix/lora.hpp"

namespace magix {

namespace fs = std::filesystem;

fs::path export_checkpoint_gguf(const fs::path& step, const fs::path& out_arg,
                                const std::string& outtype_name, const std::string& base_model,
                                bool overwrite) {
  const GgufOutType outtype = parse_gguf_outtype(outtype_name);
  MAGIX_CHECK(is_checkpoint_step(step),
              "{} is not a committed checkpoint step (a folder such as CHECKPOINT_DIR/000200 "
              "holding index.json)", step.string());
  fs::path out = out_arg;
  if (out.extension() != ".gguf") out /= "model-" + outtype_name + ".gguf";
  std::error_code ec;
  MAGIX_CHECK(overwrite || !fs::exists(out, ec), "{} exists: pass --overwrite to replace it",
              out.string());
  ModelConfig config;
  const ParameterSet params =
      is_lora_checkpoint(step)
          ? load_lora_merged_parameters(step, base_model, std::nullopt, &config)
          : load_checkpoint_parameters(step, &config);
  const CheckpointReader reader(step);
  fs::path tokenizer_json;
  for (const std::string& name : reader.extra_files()) {
    if (name == "tokenizer.json") tokenizer_json = reader.checked_file(name);
  }
  MAGIX_CHECK(!tokenizer_json.empty(),
              "GGUF export: the step {} holds no tokenizer.json (a GGUF file carries its "
              "tokenizer)", step.string());
  write_gguf_model(out, config, fs::canonical(step).parent_path().filename().string(),
                   tokenizer_json, params, outtype);
  return out;
}

}  // namespace magix
