// Files the demos share: the generations run_generation writes, read back for scoring.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

namespace magix::demo {

// The "generated" field of each line of `path` (a run_generation output file); an error unless
// there are exactly `expected` lines.
std::vector<std::string> read_generations(const std::filesystem::path& path, size_t expected);

}  // namespace magix::demo
