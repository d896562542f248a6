// Error positions, the injected clock, template selection and the built-in format.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "magix/chat_template.hpp"

namespace {

using nlohmann::ordered_json;

std::string error_of(const std::string& src, const ordered_json& ctx = ordered_json::object()) {
  try {
    magix::ChatTemplate(src).render(ctx);
  } catch (const magix::Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(ChatTemplateErrors, SyntaxErrorsNameLineAndColumn) {
  EXPECT_TRUE(contains(error_of("ok\n  {{ 1 + }}"), "line 2, column 10"))
      << error_of("ok\n  {{ 1 + }}");
  EXPECT_TRUE(contains(error_of("{% if x %}\nno end"), "line 2")) << error_of("{% if x %}\nno end");
  EXPECT_TRUE(contains(error_of("a\n\n {{ 'unterminated }}"), "line 3, column 5"))
      << error_of("a\n\n {{ 'unterminated }}");
  EXPECT_TRUE(contains(error_of("{{ x | nosuch }}"), "No filter named 'nosuch'"));
  EXPECT_TRUE(contains(error_of("é {{ (1 }}"), "line 1, column 9")) << error_of("é {{ (1 }}");
  EXPECT_TRUE(contains(error_of("{% break %}"), "outside of a loop"));
}

TEST(ChatTemplateErrors, EvaluationErrorsNameLineAndColumn) {
  std::string e = error_of("line1\n{% for x in l %}\n  {{ x + 'a' }}\n{% endfor %}", {{"l", {1}}});
  EXPECT_TRUE(contains(e, "line 3, column 8")) << e;
  EXPECT_TRUE(contains(e, "unsupported operand")) << e;
  e = error_of("\n{{ missing.attr }}");
  EXPECT_TRUE(contains(e, "line 2") && contains(e, "'missing' is undefined")) << e;
}

TEST(ChatTemplateErrors, RaiseExceptionIsVerbatim) {
  try {
    magix::ChatTemplate("{{ raise_exception('Roles must alternate: ' ~ n) }}").render({{"n", 3}});
    FAIL() << "no exception";
  } catch (const magix::ChatTemplateRaised& e) {
    EXPECT_EQ(e.message(), "Roles must alternate: 3");
    EXPECT_EQ(std::string(e.what()), "chat template error: Roles must alternate: 3");
  }
}

TEST(ChatTemplate, StrftimeNowUsesTheInjectedClock) {
  magix::ChatTemplateOptions options;
  // 2024-07-26 12:00:00 UTC; formatted in local time, so compare only the date at noon UTC
  options.now = [] {
    return std::chrono::system_clock::time_point(std::chrono::seconds(1721995200));
  };
  setenv("TZ", "UTC", 1);
  tzset();
  std::string out = magix::ChatTemplate("{{ strftime_now('%d %b %Y %H:%M') }}")
                        .render(ordered_json::object(), options);
  EXPECT_EQ(out, "26 Jul 2024 12:00");
}

TEST(ApplyChatTemplate, BuiltinFormatWithoutTemplate) {
  magix::TokenizerConfig config;
  config.eos_token = "</s>";
  ordered_json msgs = ordered_json::parse(
      R"([{"role":"system","content":"S"},{"role":"user","content":"U"},{"role":"assistant","content":"A"}])");
  EXPECT_EQ(magix::apply_chat_template(config, msgs, false),
            "<|system|>\nS</s>\n<|user|>\nU</s>\n<|assistant|>\nA</s>");
  ordered_json one = ordered_json::parse(R"([{"role":"user","content":"P"}])");
  // generate's prompt: no newline between eos and <|assistant|>
  EXPECT_EQ(magix::apply_chat_template(config, one, true), "<|user|>\nP</s><|assistant|>\n");
  ordered_json bad = ordered_json::parse(R"([{"role":"tool","content":"x"}])");
  EXPECT_THROW(magix::apply_chat_template(config, bad, false), magix::Error);
  EXPECT_THROW(magix::apply_chat_template(config, ordered_json::array(), false), magix::Error);
}

TEST(ApplyChatTemplate, TemplateSelectionAndContext) {
  magix::TokenizerConfig config;
  config.bos_token = "<s>";
  config.chat_templates["default"] =
      "D{{ bos_token }}{{ messages[0].content }}{{ messages[0].name is defined }}";
  config.chat_templates["tool_use"] = "T{{ tools|length }}{{ documents is none }}";
  config.chat_templates["other"] = "O{{ add_generation_prompt }}{{ flavor }}";
  ordered_json msgs = ordered_json::parse(R"([{"role":"user","content":"c","name":null}])");
  EXPECT_EQ(magix::apply_chat_template(config, msgs, false), "D<s>cFalse");
  EXPECT_EQ(
      magix::apply_chat_template(config, msgs, false, {{"tools", ordered_json::array({1, 2})}}),
      "T2True");
  EXPECT_EQ(magix::apply_chat_template(config, msgs, true, {{"flavor", "x"}}, "other"), "OTruex");
  EXPECT_THROW(magix::apply_chat_template(config, msgs, true, ordered_json::object(), "missing"),
               magix::Error);
}

}  // namespace
