// Helpers shared by the subcommands: flag spelling, errors, output files.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace magix::cli {

// "--name_with_underscores,--name-with-underscores": both spellings are accepted.
std::string flag(const std::string& name);

// Writes `text` to `path` atomically (a temporary file in the same folder, fsynced, renamed into
// place): a run that fails leaves no half-written output looking valid.
void write_output_file(const std::string& path, const std::string& text);

}  // namespace magix::cli
