// generation_config.json: reading (generate's defaults) and the form export writes.
#include "magix/generation_config.hpp"

#include <limits>

#include "io/checkpoint_format.hpp"
#include "io/safetensors_util.hpp"
#include "magix/error.hpp"

namespace magix {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const json* present(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

int32_t token_id(const json& v, const char* key, const std::string& source) {
  MAGIX_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 &&
                  v.get<int64_t>() <= std::numeric_limits<int32_t>::max(),
              "{}: '{}' must hold token ids (integers >= 0), got {}", source, key, v.dump());
  return static_cast<int32_t>(v.get<int64_t>());
}

}  // namespace

GenerationConfig parse_generation_config(const json& j, const std::string& source) {
  MAGIX_CHECK(j.is_object(), "{}: expected a JSON object", source);
  GenerationConfig g;
  g.raw = j;
  if (const json* v = present(j, "eos_token_id")) {
    if (v->is_array()) {
      for (const json& e : *v) g.eos_token_ids.push_back(token_id(e, "eos_token_id", source));
    } else {
      g.eos_token_ids.push_back(token_id(*v, "eos_token_id", source));
    }
  }
  if (const json* v = present(j, "pad_token_id"))
    g.pad_token_id = token_id(*v, "pad_token_id", source);
  if (const json* v = present(j, "bos_token_id"))
    g.bos_token_id = token_id(*v, "bos_token_id", source);
  if (const json* v = present(j, "do_sample")) {
    MAGIX_CHECK(v->is_boolean(), "{}: 'do_sample' must be true or false", source);
    g.do_sample = v->get<bool>();
  }
  const auto number = [&](const char* key, std::optional<double>& out) {
    if (const json* v = present(j, key)) {
      MAGIX_CHECK(v->is_number(), "{}: '{}' must be a number, got {}", source, key, v->dump());
      out = v->get<double>();
    }
  };
  number("temperature", g.temperature);
  number("top_p", g.top_p);
  number("repetition_penalty", g.repetition_penalty);
  const auto count = [&](const char* key, std::optional<int64_t>& out) {
    if (const json* v = present(j, key)) {
      MAGIX_CHECK(v->is_number_integer() && v->get<int64_t>() >= 0,
                  "{}: '{}' must be an integer >= 0, got {}", source, key, v->dump());
      out = v->get<int64_t>();
    }
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
    if (const json* v = present(model_config, key)) g[key] = *v;
  }
  g["output_attentions"] = false;
  g["output_hidden_states"] = false;
  if (const json* v = present(model_config, "transformers_version")) {
    g["transformers_version"] = *v;
  }
  g["use_cache"] = true;
  return g;
}

}  // namespace magix
