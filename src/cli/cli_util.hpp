// Helpers shared by the subcommands: flag spelling, errors, output files.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace magix::cli {

// "--name_with_underscores,--name-with-underscores": both spellings are accepted.
std::string flag(const std::string& name);

}  // namespace magix::cli
