// Each subcommand registers itself on the top-level app; its callback does the work.
#pragma once

#include <CLI/CLI.hpp>

#include "magix/trainer.hpp"

namespace magix::cli {

void add_init_command(CLI::App& app);
void add_score_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_chat_template_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_train_lora_command(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_plot_command(CLI::App& app);

// The flags of `magix train`, shared by the commands that train (train-lora, demo).
void add_train_options(CLI::App& cmd, TrainArgs& args);
// Refuses a --metrics_file or --checkpoint_dir that would overwrite an input (cli_util.hpp).
void check_train_paths(const TrainArgs& args);
// Rank 0, before the model loads: the WARNING line of a run without --checkpoint_dir.
void warn_unsaved_run(const TrainArgs& args);
// What a finished run prints on stdout (world rank 0).
void print_train_summary(const TrainSummary& summary);

}  // namespace magix::cli
