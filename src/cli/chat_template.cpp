// magix chat-template: renders conversations (JSONL) with a tokenizer's chat template.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "cli_util.hpp"
#include "commands.hpp"
#include "magix/chat_template.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"
#include "magix/hf_files.hpp"
#include "magix/json_parse.hpp"
#include "magix/tokenizer_config.hpp"

namespace magix::cli {

namespace {

struct ChatTemplateArgs {
  std::string tokenizer;
  std::string input;
  std::string output;
  std::string template_name;
};

// Each input line: {"messages": [...], "add_generation_prompt": bool, ...extra variables}.
// Each output line: {"text": ...}, or {"error": ...} when the template rejects the conversation
// (raise_exception). Anything else wrong with a line stops the command, naming file and line.
void run_chat_template(const ChatTemplateArgs& a) {
  namespace fs = std::filesystem;
  check_outputs_spare_inputs({{"--input", a.input}, {"--tokenizer_name_or_path", a.tokenizer}},
                             {{"--output_file", a.output}});
  verify_if_checkpoint_step(a.tokenizer);  // a step's tokenizer files match its index
  fs::path dir = resolve_model_dir(a.tokenizer);
  MAGIX_CHECK(fs::exists(dir / "tokenizer_config.json") || fs::exists(dir / "chat_template.jinja"),
              "{} has no tokenizer_config.json", dir.string());
  std::optional<std::string> name;
  if (!a.template_name.empty()) name = a.template_name;
  const ChatFormatter formatter(load_tokenizer_config(dir), name);  // templates parsed once
  // No silent fallback: the built-in format only when asked for by name.
  MAGIX_CHECK(formatter.has_template() || name == kBuiltinChatFormat,
              "{} has no chat template (no chat_template in tokenizer_config.json, no "
              "chat_template.jinja); pass --chat_template_name {} for the reference scripts' "
              "built-in format (<|role|>\\n{{content}}{{eos}} per turn)",
              dir.string(), kBuiltinChatFormat);

  std::ifstream in(a.input);
  MAGIX_CHECK(in, "cannot open {}", a.input);
  std::string text, line;
  size_t lineno = 0, rendered = 0, rejected = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto j = parse_ordered_json(line, fmt::format("{}:{}", a.input, lineno));  // depth-limited
    MAGIX_CHECK(j.is_object() && j.contains("messages") && j["messages"].is_array(),
                "{}:{}: expected an object with a 'messages' array", a.input, lineno);
    bool agp = false;
    nlohmann::ordered_json extra = nlohmann::ordered_json::object();
    for (const auto& [k, v] : j.items()) {
      if (k == "messages") continue;
      if (k == "add_generation_prompt") {
        MAGIX_CHECK(v.is_boolean(), "{}:{}: 'add_generation_prompt' must be true or false", a.input,
                    lineno);
        agp = v.get<bool>();
      } else {
        extra[k] = v;
      }
    }
    nlohmann::ordered_json result = nlohmann::ordered_json::object();
    try {
      result["text"] = formatter.render(j["messages"], agp, extra);
      ++rendered;
    } catch (const ChatTemplateRaised& e) {
      result["error"] = e.message();
      ++rejected;
    } catch (const Error& e) {
      MAGIX_FAIL("{}:{}: {}", a.input, lineno, e.what());
    }
    text += result.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    text += '\n';
  }
  MAGIX_CHECK(!in.bad(), "error reading {}", a.input);
  write_output_file(a.output, text);
  std::fprintf(stderr, "chat-template: %zu rendered, %zu rejected by the template -> %s\n",
               rendered, rejected, a.output.c_str());
}

}  // namespace

void add_chat_template_command(CLI::App& app) {
  auto args = std::make_shared<ChatTemplateArgs>();
  auto* cmd = app.add_subcommand("chat-template",
                                 "Render conversations (JSONL) with a tokenizer's chat template");
  cmd->add_option(flag("tokenizer_name_or_path"), args->tokenizer,
                  "Folder with tokenizer_config.json, or a hub name in the local HF cache")
      ->required();
  cmd->add_option(flag("input"), args->input,
                  "JSONL: {\"messages\": [...], \"add_generation_prompt\": bool, ...extra template "
                  "variables}")
      ->required();
  cmd->add_option(flag("output_file"), args->output,
                  "JSONL written atomically: {\"text\": ...} or {\"error\": ...}")
      ->required();
  cmd->add_option(flag("chat_template_name"), args->template_name,
                  "Name of the template when the tokenizer has several (default: 'default'); "
                  "builtin: the reference scripts' built-in <|role|> format");
  cmd->callback([args] { run_chat_template(*args); });
}

}  // namespace magix::cli
