#include "magix/chat_template.hpp"

#include "chat_template/jinja_ast.hpp"
#include "chat_template/jinja_eval.hpp"
#include "magix/error.hpp"

namespace magix {

namespace {

std::string with_origin(const std::string& origin, const std::string& message) {
  return origin.empty() ? message : fmt::format("chat template ({}): {}", origin, message);
}

}  // namespace

ChatTemplate::ChatTemplate(std::string source, std::string origin) : origin_(std::move(origin)) {
  try {
    impl_ = jinja::parse_template(std::move(source));
  } catch (const Error& e) {
    throw Error(with_origin(origin_, e.what()), e.where());
  }
}
ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

std::string ChatTemplate::render(const nlohmann::ordered_json& context) const {
  return render(context, ChatTemplateOptions{});
}

std::string ChatTemplate::render(const nlohmann::ordered_json& context,
                                 const ChatTemplateOptions& options) const {
  MAGIX_CHECK(context.is_object(), "the chat template context must be a JSON object");
  jinja::RenderOptions ro;
  ro.now = options.now;
  ro.limits = options.limits;
  ro.origin = origin_;
  try {
    return jinja::render_template(*impl_, jinja::from_json(context), ro);
  } catch (const jinja::RaisedByTemplate& r) {
    throw ChatTemplateRaised(r.message);
  } catch (const jinja::BudgetExceeded&) {
    throw;  // names the template already
  } catch (const Error& e) {
    throw Error(with_origin(origin_, e.what()), e.where());
  }
}

const std::string& ChatTemplate::source() const {
  return impl_->source;
}

namespace {

// transformers' _alias_reasoning_fields: a message with reasoning under any of its names gets
// {"thinking": r, **message, "reasoning_content": r}.
nlohmann::ordered_json alias_reasoning(const nlohmann::ordered_json& m) {
  static const char* const kFields[] = {"reasoning_content", "thinking", "reasoning"};
  const nlohmann::ordered_json* reasoning = nullptr;
  for (const char* f : kFields) {
    auto it = m.find(f);
    if (it != m.end() && !it->is_null()) {
      reasoning = &*it;
      break;
    }
  }
  if (!reasoning) return m;
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  out["thinking"] = *reasoning;
  for (const auto& [k, v] : m.items()) out[k] = v;
  out["reasoning_content"] = *reasoning;
  return out;
}

// The reference scripts' chat format, for tokenizers without a template (docs/chat_templates.md).
std::string builtin_format(const TokenizerConfig& config, const nlohmann::ordered_json& messages,
                           bool add_generation_prompt) {
  std::string eos = config.eos_token.value_or("");
  std::string out;
  for (size_t k = 0; k < messages.size(); ++k) {
    const auto& m = messages[k];
    MAGIX_CHECK(m.contains("role") && m["role"].is_string(), "message {} has no string 'role'", k);
    const std::string role = m["role"].get<std::string>();
    MAGIX_CHECK(
        role == "user" || role == "assistant" || role == "system",
        "message {}: the built-in chat format knows roles user, assistant and system, not '{}'", k,
        role);
    MAGIX_CHECK(m.contains("content") && m["content"].is_string(),
                "message {} has no string 'content'", k);
    if (k) out += "\n";
    out += "<|" + role + "|>\n" + m["content"].get<std::string>() + eos;
  }
  if (add_generation_prompt) out += "<|assistant|>\n";
  return out;
}

void check_conversation(const nlohmann::ordered_json& messages,
                        const nlohmann::ordered_json& extra) {
  MAGIX_CHECK(messages.is_array(),
              "'messages' must be a JSON array of {{\"role\", \"content\"}} objects");
  MAGIX_CHECK(!messages.empty(),
              "Cannot apply chat template to an empty conversation. Provide at least one message.");
  MAGIX_CHECK(extra.is_object(), "extra chat template variables must be a JSON object");
  for (size_t k = 0; k < messages.size(); ++k) {
    MAGIX_CHECK(messages[k].is_object(), "message {} must be a JSON object", k);
  }
}

bool has_tools(const nlohmann::ordered_json& extra) {
  return extra.contains("tools") && !extra["tools"].is_null();
}

// The template transformers' get_chat_template picks: the named one; else "tool_use" when tools
// are given and it exists; else "default"; none: the built-in format.
// Returns the chosen template's name; its source is config.chat_template(name).
std::optional<std::string> choose_template(const TokenizerConfig& config, bool tools,
                                           const std::optional<std::string>& template_name) {
  if (template_name) {
    // Throws for an unknown name; none: kBuiltinChatFormat, the built-in format.
    if (!config.chat_template(template_name)) return std::nullopt;
    return template_name;
  }
  if (tools && config.chat_templates.count("tool_use")) return "tool_use";
  auto source = config.chat_template();
  MAGIX_CHECK(source || config.chat_templates.empty(),
              "the tokenizer has several chat templates and no 'default': pass a template name");
  if (!source) return std::nullopt;
  return "default";
}

// The parsed template `name` of `config`, its errors naming the file it came from.
ChatTemplate parse_named(const TokenizerConfig& config, const std::string& name) {
  auto file = config.chat_template_files.find(name);
  return ChatTemplate(*config.chat_template(name),
                      file == config.chat_template_files.end() ? std::string() : file->second);
}

// The context transformers renders with (docs/chat_templates.md).
nlohmann::ordered_json make_context(const TokenizerConfig& config,
                                    const nlohmann::ordered_json& messages,
                                    bool add_generation_prompt,
                                    const nlohmann::ordered_json& extra) {
  // keys whose value is None are dropped from each message, reasoning fields aliased
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (const auto& m : messages) {
    nlohmann::ordered_json clean = nlohmann::ordered_json::object();
    for (const auto& [k, v] : m.items()) {
      if (!v.is_null()) clean[k] = v;
    }
    msgs.push_back(alias_reasoning(clean));
  }
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  ctx["messages"] = std::move(msgs);
  ctx["tools"] = nullptr;
  ctx["documents"] = nullptr;
  ctx["add_generation_prompt"] = add_generation_prompt;
  // special_tokens_map: named tokens, then extra special tokens; then the call's variables
  auto put = [&](const char* key, const std::optional<std::string>& v) {
    if (v) ctx[key] = *v;
  };
  put("bos_token", config.bos_token);
  put("eos_token", config.eos_token);
  put("unk_token", config.unk_token);
  put("pad_token", config.pad_token);
  for (const char* key : {"sep_token", "cls_token", "mask_token"}) {
    auto it = config.raw.find(key);
    if (it == config.raw.end()) continue;
    if (it->is_string()) ctx[key] = it->get<std::string>();
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
      ctx[key] = (*it)["content"].get<std::string>();
    }
  }
  if (auto it = config.raw.find("extra_special_tokens");
      it != config.raw.end() && it->is_object()) {
    for (const auto& [k, v] : it->items()) {
      if (v.is_string()) ctx[k] = v.get<std::string>();
    }
  }
  for (const auto& [k, v] : extra.items()) ctx[k] = v;
  return ctx;
}

}  // namespace

std::string apply_chat_template(const TokenizerConfig& config,
                                const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                const nlohmann::ordered_json& extra,
                                const std::optional<std::string>& template_name) {
  check_conversation(messages, extra);
  auto name = choose_template(config, has_tools(extra), template_name);
  if (!name) return builtin_format(config, messages, add_generation_prompt);
  return parse_named(config, *name)
      .render(make_context(config, messages, add_generation_prompt, extra));
}

ChatFormatter::ChatFormatter(TokenizerConfig config,
                             const std::optional<std::string>& template_name)
    : config_(std::move(config)) {
  if (auto name = choose_template(config_, false, template_name))
    main_.emplace(parse_named(config_, *name));
  if (!template_name && config_.chat_templates.count("tool_use"))
    tool_use_.emplace(parse_named(config_, "tool_use"));
}

std::string ChatFormatter::render(const nlohmann::ordered_json& messages,
                                  bool add_generation_prompt,
                                  const nlohmann::ordered_json& extra) const {
  check_conversation(messages, extra);
  const ChatTemplate* t = tool_use_ && has_tools(extra) ? &*tool_use_ : main_ ? &*main_ : nullptr;
  if (!t) return builtin_format(config_, messages, add_generation_prompt);
  return t->render(make_context(config_, messages, add_generation_prompt, extra));
}

}  // namespace magix
