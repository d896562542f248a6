#include "magix/tokenizer_config.hpp"

#include "magix/error.hpp"
#include "magix/json_parse.hpp"

namespace magix {

namespace {

// A special token is written either as a string or as an AddedToken object {"content": ...}.
std::optional<std::string> read_token(const nlohmann::json& j, const char* key,
                                      const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  MAGIX_FAIL("{}: \"{}\" must be a string or an object with a string \"content\", found {}", source,
             key, json_found(*it));
}

std::optional<bool> read_bool(const nlohmann::json& j, const char* key, const std::string& source) {
  if (!json_find(j, key)) return std::nullopt;
  return json_get<bool>(j, key, source);
}

}  // namespace

std::optional<std::string> TokenizerConfig::chat_template(
    const std::optional<std::string>& name) const {
  if (name) {
    auto it = chat_templates.find(*name);
    if (it == chat_templates.end() && *name == kBuiltinChatFormat) return std::nullopt;
    MAGIX_CHECK(it != chat_templates.end(), "the tokenizer has no chat template named '{}'", *name);
    return it->second;
  }
  auto it = chat_templates.find("default");
  if (it == chat_templates.end()) return std::nullopt;
  return it->second;
}

TokenizerConfig parse_tokenizer_config(const nlohmann::json& j, const std::string& source) {
  MAGIX_CHECK(j.is_object(), "{}: expected a JSON object, found {}", source, json_found(j));
  TokenizerConfig c;
  c.raw = j;
  c.bos_token = read_token(j, "bos_token", source);
  c.eos_token = read_token(j, "eos_token", source);
  c.pad_token = read_token(j, "pad_token", source);
  c.unk_token = read_token(j, "unk_token", source);
  c.add_bos_token = read_bool(j, "add_bos_token", source);
  c.add_eos_token = read_bool(j, "add_eos_token", source);
  if (auto it = j.find("chat_template"); it != j.end() && !it->is_null()) {
    if (it->is_string()) {
      c.chat_templates["default"] = it->get<std::string>();
      c.chat_template_files["default"] = source;
    } else if (it->is_array()) {
      for (size_t i = 0; i < it->size(); ++i) {
        const nlohmann::json& t = (*it)[i];
        MAGIX_CHECK(t.is_object() && t.contains("name") && t["name"].is_string() &&
                        t.contains("template") && t["template"].is_string(),
                    "{}: \"chat_template\"[{}] must be {{\"name\": string, \"template\": string}}",
                    source, i);
        c.chat_templates[t["name"].get<std::string>()] = t["template"].get<std::string>();
        c.chat_template_files[t["name"].get<std::string>()] = source;
      }
    } else {
      MAGIX_FAIL("{}: \"chat_template\" must be a string or a list of named templates, found {}",
                 source, json_found(*it));
    }
  }
  return c;
}

TokenizerConfig load_tokenizer_config(const std::filesystem::path& dir) {
  TokenizerConfig c;
  auto path = dir / "tokenizer_config.json";
  if (std::filesystem::exists(path)) {
    // Real ones are up to ~1 MB (Gemma 3's lists 6k added tokens).
    constexpr int64_t kMaxTokenizerConfigBytes = 64 << 20;
    const std::string text =
        read_text_file_bounded(path, kMaxTokenizerConfigBytes, "tokenizer config");
    c = parse_tokenizer_config(parse_json(text, path.string()), path.string());
  }
  auto jinja = dir / "chat_template.jinja";
  if (std::filesystem::exists(jinja)) {
    constexpr int64_t kMaxTemplateBytes = 4 << 20;  // real templates are 1-20 KB
    c.chat_templates["default"] = read_text_file_bounded(jinja, kMaxTemplateBytes, "chat template");
    c.chat_template_files["default"] = jinja.string();
  }
  return c;
}

}  // namespace magix
