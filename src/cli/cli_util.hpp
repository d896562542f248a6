// Helpers shared by the subcommands: flag spelling, errors, output files.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace magix::cli {

// "--name_with_underscores,--name-with-underscores": both spellings are accepted.
std::string flag(const std::string& name);

// --device cpu|cuda into `device` (the commands that run the model: train, train-lora, score,
// generate). Empty when not given: the command then takes default_device().
void add_device_option(CLI::App& cmd, std::string& device);

// Writes `text` to `path` atomically (a temporary file in the same folder, fsynced, renamed into
// place): a run that fails leaves no half-written output looking valid.
void write_output_file(const std::string& path, const std::string& text);

// A path a command reads or writes, with the flag that named it (for messages).
struct CliPath {
  std::string flag;  // "--train_file"
  std::string path;  // empty: not given (ignored)
};

// Refuses, before any work, an output that would clobber an input or a checkpoint step:
// - an output that is the same file or folder as an input (same st_dev/st_ino when both exist,
//   else the same canonical path of the parent folder + name: symlinks, "./x" vs "x" and hard
//   links are caught);
// - an output inside an input folder (a model or tokenizer folder, a checkpoint step or dir);
// - an output that is, or is inside, a committed checkpoint step (a folder holding index.json).
// Inputs may be files or folders; a hub name is resolved in the local HF cache when it is not a
// path. Throws magix::Error naming both flags and paths.
void check_outputs_spare_inputs(const std::vector<CliPath>& inputs,
                                const std::vector<CliPath>& outputs);

}  // namespace magix::cli
