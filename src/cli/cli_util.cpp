#include "cli_util.hpp"

#include <algorithm>

namespace magix::cli {

std::string flag(const std::string& name) {
  std::string dashed = name;
  std::replace(dashed.begin(), dashed.end(), '_', '-');
  if (dashed == name) return "--" + name;
  return "--" + name + ",--" + dashed;
}

}  // namespace magix::cli
