// Hostile templates end in magix::Error, never in a crash: deep nesting, runaway recursion,
// and random mutations of real-looking templates.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "magix/chat_template.hpp"

namespace {

using nlohmann::ordered_json;

TEST(JinjaRobustness, DeepNestingIsAnError) {
  std::string parens = "{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}";
  EXPECT_THROW(magix::ChatTemplate{parens}, magix::Error);
  std::string negs = "{{ " + std::string(100000, '-') + "1 }}";
  EXPECT_THROW(magix::ChatTemplate{negs}, magix::Error);
  std::string nots;
  for (int k = 0; k < 50000; ++k) nots += "not ";
  EXPECT_THROW(magix::ChatTemplate{"{{ " + nots + "1 }}"}, magix::Error);
  std::string ifs;
  for (int k = 0; k < 50000; ++k) ifs += "{% if true %}";
  EXPECT_THROW(magix::ChatTemplate{ifs}, magix::Error);
  // moderate nesting is fine
  EXPECT_EQ(magix::ChatTemplate("{{ " + std::string(50, '(') + "1" + std::string(50, ')') + " }}")
                .render(ordered_json::object()),
            "1");
}

// Found by fuzz_jinja: a 0x / 0o / 0b literal beyond 64 bits escaped as std::out_of_range.
TEST(JinjaRobustness, HugePrefixedIntegerLiteralsAreAnError) {
  for (const char* lit : {"0x1ffffffffffffffff", "0o7777777777777777777777777",
                          "0b1"
                          "0000000000000000000000000000000000000000000000000000000000000000",
                          "99999999999999999999"}) {
    try {
      magix::ChatTemplate t(std::string("{{ ") + lit + " }}");
      ADD_FAILURE() << lit << " was accepted";
    } catch (const magix::Error& e) {
      EXPECT_NE(std::string(e.what()).find("integer literal out of range"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(magix::ChatTemplate("{{ 0x7fffffffffffffff }} {{ 0o17 }} {{ 0b101 }}")
                .render(ordered_json::object()),
            "9223372036854775807 15 5");
}

TEST(JinjaRobustness, RunawayMacroRecursionIsAnError) {
  magix::ChatTemplate t("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_THROW(t.render(ordered_json::object()), magix::Error);
  magix::ChatTemplate ok(
      "{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(5) }}");
  EXPECT_EQ(ok.render(ordered_json::object()), "54321");
}

TEST(JinjaRobustness, RandomMutationsNeverCrash) {
  const auto dir = std::filesystem::path(MAGIX_FIXTURES_DIR) / "chat_templates" / "templates";
  std::vector<std::string> sources;
  for (const char* name :
       {"llama31_tools.jinja", "mistral_inst.jinja", "zephyr.jinja", "chatml.jinja"}) {
    std::ifstream in(dir / name);
    ASSERT_TRUE(in) << name;
    sources.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ordered_json ctx = ordered_json::parse(R"({"messages": [{"role": "system", "content": "s"},
      {"role": "user", "content": "u"}, {"role": "assistant", "content": "a", "tool_calls":
      [{"function": {"name": "f", "arguments": {"x": 1}}}]}, {"role": "tool", "content": "r"}],
      "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>", "tools": [{"a": 1}]})");
  const std::string alphabet = "{}%#-+()[]'\".|,:=~*/ \nxa0ifnotendforsetloop";
  std::mt19937 rng(1234);
  int rendered = 0, rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s = sources[static_cast<size_t>(iter) % sources.size()];
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      size_t at = rng() % s.size();
      switch (rng() % 3) {
        case 0:
          s.erase(at, 1 + rng() % 3);
          break;
        case 1:
          s.insert(at, 1, alphabet[rng() % alphabet.size()]);
          break;
        default:
          s[at] = alphabet[rng() % alphabet.size()];
      }
    }
    try {
      magix::ChatTemplate t(s);
      t.render(ctx);
      ++rendered;
    } catch (const magix::Error&) {
      ++rejected;
    }
  }
  EXPECT_EQ(rendered + rejected, 3000);
  EXPECT_GT(rendered, 100);  // the mutations are not all fatal, so evaluation is exercised too
  EXPECT_GT(rejected, 100);
}

}  // namespace
