// magix plot: a metrics file (--metrics_file of train / train-lora) -> an SVG of its loss curves.
#include <fmt/format.h>

#include <filesystem>
#include <memory>
#include <string>

#include "cli_util.hpp"
#include "commands.hpp"
#include "magix/error.hpp"
#include "magix/plot.hpp"

namespace magix::cli {

void add_plot_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "plot",
      "Draw a training run's loss curves (train loss, its trend, eval loss, learning "
      "rate) from its --metrics_file as an SVG picture");
  struct Args {
    std::string metrics;
    std::string output;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("metrics", a->metrics, "the JSONL --metrics_file of a training run")->required();
  cmd->add_option(flag("output"), a->output, "the SVG to write (default: METRICS with .svg)");
  cmd->callback([a] {
    namespace fs = std::filesystem;
    const fs::path out = a->output.empty() ? default_plot_path(a->metrics) : fs::path(a->output);
    std::error_code ec;
    MAGIX_CHECK(!fs::equivalent(out, a->metrics, ec), "--output '{}' is the metrics file itself",
                out.string());
    write_loss_plot(a->metrics, out);
    fmt::print("wrote {}\n", out.string());
  });
}

}  // namespace magix::cli
