// generation_config.json: the generation defaults a Hugging Face model folder carries
// (transformers' GenerationConfig), read by `magix generate` and written by `magix export`
// (docs/generation.md).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace magix {

// The keys magix uses; a key absent (or null) in the file is nullopt / empty.
struct GenerationConfig {
  std::vector<int32_t> eos_token_ids;  // eos_token_id: an int or a list (each one stops)
  std::optional<int32_t> pad_token_id, bos_token_id;
  std::optional<bool> do_sample;
  std::optional<double> temperature, top_p, repetition_penalty;
  std::optional<int64_t> top_k, max_new_tokens, max_length;
  nlohmann::json raw = nlohmann::json::object();  // the whole file
};

// Parses the JSON of a generation_config.json; `source` names it in errors (a key of the wrong
// type, a negative id or length).
GenerationConfig parse_generation_config(const nlohmann::json& j, const std::string& source);

// `dir`/generation_config.json, or nullopt when the folder has none.
std::optional<GenerationConfig> load_generation_config(const std::filesystem::path& dir);

// What transformers writes for a model without one (GenerationConfig.from_model_config, then
// save_pretrained): {"_from_model_config": true, bos/eos/pad ids of config.json where present,
// "output_attentions": false, "output_hidden_states": false, "transformers_version" (that of
// config.json, when it has one), "use_cache": true}, keys sorted as transformers sorts them.
nlohmann::json generation_config_from_model_config(const nlohmann::json& model_config);

}  // namespace magix
