// tokenizer_config.json: special token strings, bos/eos flags and chat templates.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <optional>
#include <string>

namespace magix {

// The template name that selects the reference scripts' built-in chat format
// (`<|role|>\n{content}{eos}` per turn, docs/chat_templates.md) instead of the tokenizer's own
// template (unless the tokenizer has a template of that name).
inline constexpr const char* kBuiltinChatFormat = "builtin";

struct TokenizerConfig {
  std::optional<std::string> bos_token, eos_token, pad_token, unk_token;
  std::optional<bool> add_bos_token,
      add_eos_token;  // absent: the tokenizer.json post-processor decides
  // Chat templates by name; a plain string template is stored under "default".
  std::map<std::string, std::string> chat_templates;
  // The file each template was read from (by name), for error messages.
  std::map<std::string, std::string> chat_template_files;
  nlohmann::json raw = nlohmann::json::object();  // the whole file, for extra variables

  // The template to use: `name` if given (error if absent, except kBuiltinChatFormat: none),
  // else "default", else none.
  std::optional<std::string> chat_template(const std::optional<std::string>& name = {}) const;
};

// Parses the JSON of tokenizer_config.json; `source` names the file in error messages.
TokenizerConfig parse_tokenizer_config(const nlohmann::json& j, const std::string& source);

// Reads `dir/tokenizer_config.json` (an empty config if absent) and, if present,
// `dir/chat_template.jinja` (HF's separate-file form, stored as "default").
TokenizerConfig load_tokenizer_config(const std::filesystem::path& dir);

}  // namespace magix
