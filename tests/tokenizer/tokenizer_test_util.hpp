// Shared helpers of the tokenizer tests: fixture loading and the real tokenizers of ../shared.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "magix/tokenizer.hpp"

namespace magix::test {

inline std::filesystem::path fixtures_dir() {
  return std::filesystem::path(MAGIX_FIXTURES_DIR) / "tokenizers";
}
inline std::filesystem::path shared_tokenizers_dir() {
  return std::filesystem::path(MAGIX_SHARED_DIR) / "tokenizers";
}

// One line of tests/fixtures/tokenizers/<name>.jsonl (made by make_tokenizer_fixtures.py).
struct FixtureCase {
  std::string text;
  std::vector<int32_t> ids, ids_no_special;
  std::vector<std::pair<size_t, size_t>> offsets;
  std::string decoded, decoded_with_special;
};

inline std::vector<FixtureCase> read_cases(const std::string& name) {
  std::ifstream in(fixtures_dir() / (name + ".jsonl"));
  EXPECT_TRUE(in.good()) << "missing fixture " << name;
  std::vector<FixtureCase> cases;
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    FixtureCase c;
    c.text = j.at("text").get<std::string>();
    c.ids = j.at("ids").get<std::vector<int32_t>>();
    c.ids_no_special = j.at("ids_no_special").get<std::vector<int32_t>>();
    for (const auto& o : j.at("offsets"))
      c.offsets.emplace_back(o.at(0).get<size_t>(), o.at(1).get<size_t>());
    c.decoded = j.at("decoded").get<std::string>();
    c.decoded_with_special = j.at("decoded_with_special").get<std::string>();
    cases.push_back(std::move(c));
  }
  return cases;
}

// The real tokenizer `name` of ../shared/tokenizers, decompressed (with the xz command) into a
// temporary folder once per process; nullptr when ../shared/tokenizers is absent.
inline const Tokenizer* shared_tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;  // test-process cache
  if (auto it = cache.find(name); it != cache.end()) return it->second.get();
  const auto src = shared_tokenizers_dir() / name;
  if (!std::filesystem::exists(src / "tokenizer.json.xz")) return nullptr;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("magix_test_tokenizer_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::create_directories(dir);
  const std::string cmd = "xz -dc '" + (src / "tokenizer.json.xz").string() + "' > '" +
                          (dir / "tokenizer.json").string() + "'";
  if (std::system(cmd.c_str()) != 0) return nullptr;
  if (std::filesystem::exists(src / "tokenizer_config.json")) {
    std::filesystem::copy_file(src / "tokenizer_config.json", dir / "tokenizer_config.json",
                               std::filesystem::copy_options::overwrite_existing);
  }
  auto tok = std::make_unique<Tokenizer>(Tokenizer::load(dir.string()));
  std::filesystem::remove_all(dir);
  return cache.emplace(name, std::move(tok)).first->second.get();
}

inline const Tokenizer& fixture_tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;  // test-process cache
  auto it = cache.find(name);
  if (it == cache.end()) {
    it =
        cache
            .emplace(name,
                     std::make_unique<Tokenizer>(Tokenizer::load((fixtures_dir() / name).string())))
            .first;
  }
  return *it->second;
}

}  // namespace magix::test
