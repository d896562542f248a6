#include "magix/error.hpp"
#include "magix/hf_files.hpp"
#include "magix/magix.hpp"

namespace magix {

Decoder load_model_hub(const std::string& family, const std::string& name_or_path,
                       const PartitionRules& rules, const Mesh& mesh, DecoderOptions options) {
  const ModelConfig config = load_model_config(resolve_model_dir(name_or_path) / "config.json");
  MAGIX_CHECK(family_name(config.family) == family,
              "{} is a '{}' model, not '{}' (set the model type to match config.json)",
              name_or_path, family_name(config.family), family);
  return load_decoder(name_or_path, mesh, options, &rules);
}

}  // namespace magix
