// libFuzzer target over the chat template (Jinja) lexer, parser and renderer. See
// docs/formats.md for how to build and run it. The input is a template's source; a parsed
// template is rendered against a fixed conversation (system, user, assistant with a tool call,
// tool, user) with a small resource budget, so that no input can take more than a few MB or
// loop for long: a budget error is a refusal like any other magix::Error.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "magix/chat_template.hpp"
#include "magix/error.hpp"

namespace {

const nlohmann::ordered_json& context() {
  static const nlohmann::ordered_json c = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "You are terse."},
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": "", "reasoning_content": "Call the tool.",
       "tool_calls": [{"type": "function", "function": {"name": "weather",
                       "arguments": {"city": "Paris", "days": [1, 2]}}}]},
      {"role": "tool", "content": "{\"temp\": 21.5}"},
      {"role": "user", "content": [{"type": "text", "text": "Thanks!"}]}
    ],
    "tools": [{"type": "function", "function": {"name": "weather", "description": "w",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    "bos_token": "<s>", "eos_token": "</s>", "add_generation_prompt": true,
    "enable_thinking": false, "n": 3, "x": null
  })");
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string source(reinterpret_cast<const char*>(data), size);
  magix::ChatTemplateOptions options;
  options.now = [] { return std::chrono::system_clock::time_point(std::chrono::hours(480000)); };
  options.limits.max_loop_iterations = 20'000;
  options.limits.max_output_bytes = 1 << 20;
  options.limits.max_value_size = 1 << 20;
  options.limits.max_total_size = 16 << 20;
  options.limits.max_depth = 64;
  try {
    magix::ChatTemplate t(std::move(source), "fuzz.jinja");
    const std::string out = t.render(context(), options);
    if (out.size() > options.limits.max_output_bytes) {
      std::fprintf(stderr, "fuzz_jinja: output of %zu bytes passed the budget\n", out.size());
      __builtin_trap();
    }
  } catch (const magix::Error&) {
  }
  return 0;
}
