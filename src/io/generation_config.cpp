// generation_config.json: reading (generate's defaults) and the form export writes.
#include "magix/generation_config.hpp"

#include <limits>

#include "io/checkpoint_format.hpp"
#include "io/safetensors_util.hpp"
#include "magix/error.hpp"
#include "magix/json_parse.hpp"

namespace magix {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A token id: an integer in [0, 2^31); `what` names it (`FILE: "eos_token_id"[1]`).
int32_t token_id(const json& v, const std::string& what) {
  const int32_t id = json_as<int32_t>(v, what);
  MAGIX_CHECK(id >= 0, "{} must be a token id (an integer >= 0), found {}", what, id);
  return id;
}

}  // namespace

GenerationConfig parse_generation_config(const json& j, const std::string& source) {
  MAGIX_CHECK(j.is_object(), "{}: expected a JSON object, found {}", source, json_found(j));
  GenerationConfig g;
  g.raw = j;
  const auto id_of = [&](const char* key) {
    return token_id(j.at(key), json_key_name(source, key));
  };
  if (const json* v = json_find(j, "eos_token_id")) {
    if (v->is_array()) {
      for (size_t i = 0; i < v->size(); ++i) {
        g.eos_token_ids.push_back(
            token_id((*v)[i], fmt::format("{}[{}]", json_key_name(source, "eos_token_id"), i)));
      }
    } else {
      g.eos_token_ids.push_back(id_of("eos_token_id"));
    }
  }
  if (json_find(j, "pad_token_id")) g.pad_token_id = id_of("pad_token_id");
  if (json_find(j, "bos_token_id")) g.bos_token_id = id_of("bos_token_id");
  if (json_find(j, "do_sample")) g.do_sample = json_get<bool>(j, "do_sample", source);
  const auto number = [&](const char* key, std::optional<double>& out) {
    if (json_find(j, key)) out = json_get<double>(j, key, source);
  };
  number("temperature", g.temperature);
  number("top_p", g.top_p);
  number("repetition_penalty", g.repetition_penalty);
  const auto count = [&](const char* key, std::optional<int64_t>& out) {
    if (!json_find(j, key)) return;
    out = json_get<int64_t>(j, key, source);
    MAGIX_CHECK(*out >= 0, "{}: \"{}\" must be an integer >= 0, found {}", source, key, *out);
  };
  count("top_k", g.top_k);
  count("max_new_tokens", g.max_new_tokens);
  count("max_length", g.max_length);
  return g;
}

std::optional<GenerationConfig> load_generation_config(const fs::path& dir) {
  const fs::path path = dir / "generation_config.json";
  if (!fs::is_regular_file(path)) return std::nullopt;
  constexpr uintmax_t kMaxBytes = 1 << 20;  // real files are a few hundred bytes
  MAGIX_CHECK(fs::file_size(path) <= kMaxBytes, "{}: larger than {} bytes", path.string(),
              kMaxBytes);
  json j;
  try {
    j = io::parse_json_strict(ckpt::read_text_file(path), 64);
  } catch (const Error& e) {
    MAGIX_FAIL("{}: {}", path.string(), e.what());
  }
  return parse_generation_config(j, path.string());
}

json generation_config_from_model_config(const json& model_config) {
  // nlohmann::json keeps keys sorted, as transformers' to_json_string(sort_keys=True) does.
  json g = json::object();
  g["_from_model_config"] = true;
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
    if (const json* v = json_find(model_config, key)) g[key] = *v;
  }
  g["output_attentions"] = false;
  g["output_hidden_states"] = false;
  if (const json* v = json_find(model_config, "transformers_version")) {
    g["transformers_version"] = *v;
  }
  g["use_cache"] = true;
  return g;
}

}  // namespace magix
