// Loss curves as a picture: an SVG of a training run's metrics (train loss, its smoothed trend,
// eval loss, learning rate), written next to --metrics_file at the end of training and by
// `magix plot METRICS.jsonl --output FILE.svg`.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace magix {

// The series of a metrics file. Lines with "loss" (and "lr") are training steps; lines with
// "eval_loss" are evaluations. Non-finite values are kept out of the series (counted in
// `skipped`).
struct MetricsSeries {
  std::vector<double> step, loss;   // training loss per step
  std::vector<double> lr_step, lr;  // learning rate per step
  std::vector<double> eval_step, eval_loss;
  int64_t skipped = 0;  // steps whose loss was not finite
};

// Reads a --metrics_file (JSONL). Errors name the file and line: an unreadable file, a line that
// is not a JSON object with an integer "step", no step at all. A torn last line (a run killed
// while writing) is ignored.
MetricsSeries read_metrics_file(const std::filesystem::path& path);

// The picture: the loss panel (raw loss, a moving average over ~2% of the steps, eval loss)
// above the learning-rate panel, with axes, ticks, a legend and `title`. Self-contained SVG 1.1.
std::string loss_curve_svg(const MetricsSeries& series, const std::string& title);

// read_metrics_file + loss_curve_svg written atomically to `svg` (titled with the metrics
// file's name).
void write_loss_plot(const std::filesystem::path& metrics, const std::filesystem::path& svg);

// Where training writes its picture: the metrics file with the extension .svg
// (run/metrics.jsonl -> run/metrics.svg).
std::filesystem::path default_plot_path(const std::filesystem::path& metrics);

}  // namespace magix
