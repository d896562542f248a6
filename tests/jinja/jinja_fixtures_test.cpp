// Byte-for-byte comparison with jinja2 under transformers' settings, from the fixtures written
// by tools/reference/make_chat_template_fixtures.py.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "magix/chat_template.hpp"
#include "magix/tokenizer_config.hpp"

namespace {

using nlohmann::ordered_json;
namespace fs = std::filesystem;

const fs::path kDir = fs::path(MAGIX_FIXTURES_DIR) / "chat_templates";

std::vector<ordered_json> read_jsonl(const fs::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot open " << path;
  std::vector<ordered_json> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) rows.push_back(ordered_json::parse(line));
  }
  return rows;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(JinjaFeatures, MatchJinja2) {
  auto rows = read_jsonl(kDir / "features.jsonl");
  ASSERT_GT(rows.size(), 50u);
  int failures = 0;
  for (const auto& r : rows) {
    const std::string src = r["template"];
    std::string got, error;
    bool raised = false;
    try {
      magix::ChatTemplate t(src);
      got = t.render(r["context"]);
    } catch (const magix::ChatTemplateRaised& e) {
      raised = true;
      error = e.message();
    } catch (const magix::Error& e) {
      error = e.what();
    }
    if (r.contains("output")) {
      if (!error.empty() || got != r["output"].get<std::string>()) {
        ++failures;
        ADD_FAILURE() << "template: " << src << "\nexpected: " << r["output"].get<std::string>()
                      << "\n     got: " << got << "\n   error: " << error;
      }
    } else {
      // raise_exception's message must come through verbatim; other errors only have to be errors
      bool ok = !error.empty();
      if (r["kind"] == "TemplateError") ok = raised && error == r["error"].get<std::string>();
      if (!ok) {
        ++failures;
        ADD_FAILURE() << "template: " << src
                      << "\nexpected error: " << r["error"].get<std::string>()
                      << "\n got: " << (error.empty() ? "output " + got : error);
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(JinjaConversations, MatchTransformers) {
  auto rows = read_jsonl(kDir / "conversations.jsonl");
  ASSERT_GT(rows.size(), 50u);
  const fs::path shared = fs::path(MAGIX_SHARED_DIR) / "tokenizers";
  magix::TokenizerConfig base;
  bool have_shared = fs::exists(shared / "llama3_1" / "tokenizer_config.json");
  if (!have_shared) GTEST_SKIP() << "no " << shared << " (real tokenizer configs)";
  base = magix::load_tokenizer_config(shared / "llama3_1");
  int checked = 0;
  std::map<std::string, magix::TokenizerConfig> configs;
  std::map<std::string, magix::ChatFormatter> formatters;
  for (const auto& r : rows) {
    magix::TokenizerConfig config;
    std::string name;
    if (r.contains("tokenizer")) {
      name = r["tokenizer"];
      if (!configs.count(name)) configs[name] = magix::load_tokenizer_config(shared / name);
      config = configs[name];
    } else {
      name = r["template"];
      config = base;
      config.chat_templates = {{"default", read_file(kDir / "templates" / (name + ".jinja"))}};
    }
    // both entry points: apply_chat_template, and a ChatFormatter (templates parsed once)
    if (!formatters.count(name)) formatters.emplace(name, magix::ChatFormatter(config));
    for (int way = 0; way < 2; ++way) {
      std::string got, error;
      try {
        got = way == 0 ? magix::apply_chat_template(config, r["messages"],
                                                    r["add_generation_prompt"], r["extra"])
                       : formatters.at(name).render(r["messages"], r["add_generation_prompt"],
                                                    r["extra"]);
      } catch (const magix::ChatTemplateRaised& e) {
        error = e.message();
      } catch (const magix::Error& e) {
        error = std::string("(not raised by the template) ") + e.what();
      }
      if (r.contains("output")) {
        EXPECT_EQ(error, "") << name << " way " << way << ": " << r["messages"].dump();
        EXPECT_EQ(got, r["output"].get<std::string>())
            << name << " way " << way << ": " << r["messages"].dump();
      } else {
        EXPECT_EQ(error, r["error"].get<std::string>())
            << name << " way " << way << ": " << r["messages"].dump();
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(rows.size()));
}

}  // namespace
