#include "demo/demo_files.hpp"

#include <fstream>

#include <nlohmann/json.hpp>

#include "magix/error.hpp"
#include "magix/json_parse.hpp"

namespace magix::demo {

std::vector<std::string> read_generations(const std::filesystem::path& path, size_t expected) {
  std::ifstream in(path);
  MAGIX_CHECK(in.good(), "cannot read the generations '{}'", path.string());
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    const std::string where = fmt::format("{}:{}", path.string(), out.size() + 1);
    const nlohmann::json j = parse_json(line, where);
    MAGIX_CHECK(j.is_object() && j.contains("generated"), "{}: not a generation line", where);
    out.push_back(json_get<std::string>(j, "generated", where));
  }
  MAGIX_CHECK(out.size() == expected, "'{}' holds {} generations, expected {}", path.string(),
              out.size(), expected);
  return out;
}

}  // namespace magix::demo
