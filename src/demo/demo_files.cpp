#include "demo/demo_files.hpp"

#include <fstream>

#include <nlohmann/json.hpp>

#include "magix/error.hpp"

namespace magix::demo {

std::vector<std::string> read_generations(const std::filesystem::path& path, size_t expected) {
  std::ifstream in(path);
  MAGIX_CHECK(in.good(), "cannot read the generations '{}'", path.string());
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    MAGIX_CHECK(!j.is_discarded() && j.contains("generated"), "{}:{}: not a generation line",
                path.string(), out.size() + 1);
    out.push_back(j.at("generated").get<std::string>());
  }
  MAGIX_CHECK(out.size() == expected, "'{}' holds {} generations, expected {}", path.string(),
              out.size(), expected);
  return out;
}

}  // namespace magix::demo
