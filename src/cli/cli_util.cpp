#include "cli_util.hpp"

#include <algorithm>

#include "io/safetensors_util.hpp"

namespace magix::cli {

std::string flag(const std::string& name) {
  std::string dashed = name;
  std::replace(dashed.begin(), dashed.end(), '_', '-');
  if (dashed == name) return "--" + name;
  return "--" + name + ",--" + dashed;
}

void write_output_file(const std::string& path, const std::string& text) {
  io::write_file_atomically(path, [&](int fd, const std::filesystem::path& tmp) {
    io::write_all(fd, text.data(), text.size(), tmp);
  });
}

}  // namespace magix::cli
