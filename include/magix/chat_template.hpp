// Chat templates: a Jinja interpreter that renders HF chat templates exactly as Python jinja2
// does under transformers' settings (trim_blocks, lstrip_blocks, loopcontrols, raise_exception,
// strftime_now, transformers' tojson), and apply_chat_template on top of it.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "magix/error.hpp"
#include "magix/tokenizer_config.hpp"

namespace magix {

namespace jinja {
struct Template;  // the parsed program (src/chat_template/jinja_ast.hpp)
}

// Thrown by render() when the template calls raise_exception(message) (a conversation the
// template rejects): what() is "chat template error: " + message; message() is the text verbatim.
class ChatTemplateRaised : public Error {
 public:
  explicit ChatTemplateRaised(std::string message)
      : Error("chat template error: " + message, "raise_exception"), message_(std::move(message)) {}
  const std::string& message() const { return message_; }

 private:
  std::string message_;
};

// The resource budget of one render (templates come from downloaded files: untrusted). Sizes
// are checked before anything is allocated; exceeding one is a magix::Error that names the
// template's file and the limit (docs/chat_templates.md). The defaults are far above what real
// templates use.
struct ChatTemplateLimits {
  uint64_t max_loop_iterations = 1'000'000;  // all iterations of all loops of one render
  uint64_t max_output_bytes = 64ull << 20;   // the rendered text
  uint64_t max_value_size = 64ull << 20;     // bytes of one string, items of one list
  uint64_t max_total_size = 1ull << 30;      // bytes + items of all strings and lists built
  int max_depth = 512;  // nested values when printed or compared (macro calls: at most 100)
};

// Options of a render that are not template variables.
struct ChatTemplateOptions {
  // The clock behind strftime_now(); empty: std::chrono::system_clock::now (local time).
  std::function<std::chrono::system_clock::time_point()> now;
  ChatTemplateLimits limits;
};

// A parsed template; render() evaluates it against a JSON context (objects keep key order).
class ChatTemplate {
 public:
  // Throws magix::Error on syntax errors, with line:column. `origin` names the file the template
  // came from in every error message ("chat template (ORIGIN): ...").
  explicit ChatTemplate(std::string source, std::string origin = {});
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // throws magix::Error (raise_exception message, or evaluation error with position)
  std::string render(const nlohmann::ordered_json& context) const;
  std::string render(const nlohmann::ordered_json& context,
                     const ChatTemplateOptions& options) const;

  const std::string& source() const;

 private:
  std::shared_ptr<const jinja::Template> impl_;
  std::string origin_;
};

// Renders `messages` (a JSON array of {role, content, ...}) as transformers'
// apply_chat_template(tokenize=False) does with this tokenizer config: its template (named
// `template_name` if given), the special token strings, add_generation_prompt, and `extra`
// variables merged into the context. Without a template, the reference scripts' built-in
// format (docs/chat_templates.md).
std::string apply_chat_template(
    const TokenizerConfig& config, const nlohmann::ordered_json& messages,
    bool add_generation_prompt,
    const nlohmann::ordered_json& extra = nlohmann::ordered_json::object(),
    const std::optional<std::string>& template_name = std::nullopt);

// apply_chat_template for many conversations: the tokenizer's templates are parsed once, at
// construction (throws on syntax errors); render() is then what apply_chat_template returns.
// Immutable after construction, so one ChatFormatter may be shared by threads.
class ChatFormatter {
 public:
  explicit ChatFormatter(TokenizerConfig config,
                         const std::optional<std::string>& template_name = std::nullopt);
  std::string render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                     const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;
  bool has_template() const { return static_cast<bool>(main_); }

 private:
  TokenizerConfig config_;
  std::optional<ChatTemplate> main_;      // the chosen (or default) template; none: built-in format
  std::optional<ChatTemplate> tool_use_;  // "tool_use", used when tools are given and no name was
};

}  // namespace magix
