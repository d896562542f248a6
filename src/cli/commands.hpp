// Each subcommand registers itself on the top-level app; its callback does the work.
#pragma once

#include <CLI/CLI.hpp>

namespace magix::cli {

void add_init_command(CLI::App& app);
void add_score_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_chat_template_command(CLI::App& app);
void add_export_command(CLI::App& app);

}  // namespace magix::cli
