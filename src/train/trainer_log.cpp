#include "trainer_log.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "magix/error.hpp"
#include "magix/plot.hpp"

namespace magix::detail {

namespace fs = std::filesystem;

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600) return fmt::format("{}h{:02}m{:02}s", s / 3600, (s / 60) % 60, s % 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

namespace {

// The lines of an existing metrics file whose step is at most `keep_through` (a resume drops
// steps it is going to redo). Unparseable lines end the kept part: they can only be a torn
// last line.
std::string kept_metrics(const fs::path& path, int64_t keep_through) {
  std::ifstream in(path);
  if (!in.good()) return {};
  std::string kept, line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") ||
        !j["step"].is_number_integer()) {
      break;
    }
    if (j["step"].get<int64_t>() <= keep_through) kept += line + "\n";
  }
  return kept;
}

}  // namespace

TrainLogger::TrainLogger(const TrainArgs& args, bool is_rank0, int64_t start_step,
                         int64_t total_steps)
    : active_(is_rank0),
      log_steps_(args.log_steps),
      start_step_(start_step),
      total_steps_(total_steps) {
  if (!active_) return;
  bar_ = args.progress == "bar" || (args.progress == "auto" && isatty(fileno(stderr)) == 1);
  if (args.progress == "none") log_steps_ = 0;
  if (args.report_to == "tensorboard") {
    const fs::path dir = !args.logging_dir.empty()      ? fs::path(args.logging_dir)
                         : !args.checkpoint_dir.empty() ? fs::path(args.checkpoint_dir) / "runs"
                                                        : fs::path("runs");
    tensorboard_ = std::make_unique<TensorBoardWriter>(dir, start_step);
  }
  if (args.metrics_file.empty()) return;
  const fs::path path = args.metrics_file;
  const std::string kept = start_step > 0 ? kept_metrics(path, start_step) : std::string();
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  metrics_ = std::fopen(path.c_str(), "w");
  MAGIX_CHECK(metrics_ != nullptr, "cannot write --metrics_file '{}'", path.string());
  metrics_path_ = path.string();
  std::fputs(kept.c_str(), metrics_);
  std::fflush(metrics_);
}

TrainLogger::~TrainLogger() {
  if (metrics_ != nullptr) std::fclose(metrics_);
}

void TrainLogger::step(const StepMetrics& m) {
  if (!active_) return;
  if (metrics_ != nullptr) {
    const nlohmann::json line{{"step", m.step},
                              {"epoch", m.epoch},
                              {"loss", m.loss},
                              {"lr", m.lr},
                              {"grad_norm", m.grad_norm},
                              {"tokens", m.tokens},
                              {"tokens_per_s", m.tokens_per_s},
                              {"input_tokens", m.input_tokens},
                              {"input_tokens_per_s", m.input_tokens_per_s},
                              {"elapsed_s", m.elapsed_s},
                              {"skipped", m.skipped},
                              {"skipped_total", m.skipped_total}};
    const std::string text = line.dump() + "\n";
    MAGIX_CHECK(std::fputs(text.c_str(), metrics_) >= 0 && std::fflush(metrics_) == 0,
                "writing the metrics file failed (disk full?)");
  }
  if (tensorboard_) {
    // Skipped (non-finite) steps are left out: TensorBoard would draw NaN as a gap anyway.
    std::vector<std::pair<std::string, float>> v = {
        {"train/learning_rate", static_cast<float>(m.lr)},
        {"train/counted_targets_per_s", static_cast<float>(m.tokens_per_s)},
        {"train/input_tokens_per_s", static_cast<float>(m.input_tokens_per_s)},
        {"train/epoch", static_cast<float>(m.epoch)}};
    if (std::isfinite(m.loss)) v.emplace_back("train/loss", static_cast<float>(m.loss));
    if (std::isfinite(m.grad_norm)) {
      v.emplace_back("train/grad_norm", static_cast<float>(m.grad_norm));
    }
    tensorboard_->scalars(m.step, v);
  }
  interval_loss_ += m.loss;
  interval_tokens_ += m.tokens;
  interval_input_tokens_ += m.input_tokens;
  run_tokens_ += m.tokens;
  run_input_tokens_ += m.input_tokens;
  ++interval_steps_;
  if (bar_) {
    draw_bar(m);
  } else if (log_steps_ > 0 && (m.step % log_steps_ == 0 || m.step == m.total_steps)) {
    const double done = static_cast<double>(m.step - start_step_);
    const double eta =
        m.elapsed_s / std::max(1.0, done) * static_cast<double>(m.total_steps - m.step);
    // Everything over the steps since the last line: the loss averaged, the rates as totals
    // over the time.
    const double dt = m.elapsed_s - interval_start_s_;
    auto rate = [&](int64_t n) { return dt > 0 ? static_cast<double>(n) / dt : 0.0; };
    fmt::print(stderr,
               "step {}/{} | epoch {} | loss {:.4f} (mean of {} step{}) | lr {:.3e} | grad_norm "
               "{:.4f} | {:.0f} input tokens/s, {:.0f} counted targets/s | skipped {} | elapsed "
               "{} | eta {}\n",
               m.step, m.total_steps, m.epoch,
               interval_loss_ / static_cast<double>(interval_steps_), interval_steps_,
               interval_steps_ == 1 ? "" : "s", m.lr, m.grad_norm, rate(interval_input_tokens_),
               rate(interval_tokens_), m.skipped_total, format_duration(m.elapsed_s),
               format_duration(eta));
    std::fflush(stderr);
    interval_loss_ = 0.0;
    interval_steps_ = 0;
    interval_tokens_ = 0;
    interval_input_tokens_ = 0;
    interval_start_s_ = m.elapsed_s;
  }
}

void TrainLogger::eval(const EvalMetrics& e) {
  if (!active_) return;
  if (metrics_ != nullptr) {
    const nlohmann::json line{{"step", e.step},
                              {"epoch", e.epoch},
                              {"eval_loss", e.loss},
                              {"eval_perplexity", e.perplexity},
                              {"eval_tokens", e.tokens},
                              {"eval_examples", e.examples},
                              {"eval_runtime_s", e.seconds}};
    const std::string text = line.dump() + "\n";
    MAGIX_CHECK(std::fputs(text.c_str(), metrics_) >= 0 && std::fflush(metrics_) == 0,
                "writing the metrics file failed (disk full?)");
  }
  if (tensorboard_ && std::isfinite(e.loss)) {
    tensorboard_->scalars(e.step, {{"eval/loss", static_cast<float>(e.loss)},
                                   {"eval/perplexity", static_cast<float>(e.perplexity)}});
  }
  last_eval_loss_ = e.loss;
  has_eval_ = true;
  if (log_steps_ > 0 || bar_) {
    message(
        fmt::format("eval step {}/{} | eval loss {:.4f} | eval perplexity {:.4f} | {} "
                    "examples, {} counted targets | {:.2f}s",
                    e.step, e.total_steps, e.loss, e.perplexity, e.examples, e.tokens, e.seconds));
  }
}

void TrainLogger::draw_bar(const StepMetrics& m) {
  constexpr int kWidth = 24;
  const double frac =
      total_steps_ > 0 ? static_cast<double>(m.step) / static_cast<double>(total_steps_) : 1.0;
  const int filled = static_cast<int>(frac * kWidth);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  const double done = static_cast<double>(m.step - start_step_);
  const double eta =
      m.elapsed_s / std::max(1.0, done) * static_cast<double>(m.total_steps - m.step);
  // Rates over the run so far: steady, unlike one step's.
  auto rate = [&](int64_t n) {
    return m.elapsed_s > 0 ? static_cast<double>(n) / m.elapsed_s : 0.0;
  };
  fmt::print(stderr,
             "\r[{}] {}/{} | step loss {:.4f}{} | lr {:.2e} | {:.0f} input tok/s, {:.0f} "
             "targets/s | eta {}\x1b[K",
             bar, m.step, m.total_steps, m.loss,
             has_eval_ ? fmt::format(" | eval loss {:.4f}", last_eval_loss_) : std::string(), m.lr,
             rate(run_input_tokens_), rate(run_tokens_), format_duration(eta));
  std::fflush(stderr);
  bar_drawn_ = true;
}

void TrainLogger::message(const std::string& line) {
  if (!active_) return;
  if (bar_drawn_) fmt::print(stderr, "\r\x1b[K");
  fmt::print(stderr, "{}\n", line);
  std::fflush(stderr);
  bar_drawn_ = false;
}

void TrainLogger::finish() {
  if (!active_) return;
  if (bar_drawn_) fmt::print(stderr, "\n");
  bar_drawn_ = false;
  if (metrics_path_.empty()) return;
  std::fflush(metrics_);
  const fs::path svg = default_plot_path(metrics_path_);
  try {
    write_loss_plot(metrics_path_, svg);
    message(fmt::format("loss curves: {}", svg.string()));
  } catch (const Error& e) {  // the picture is a convenience: a run never fails over it
    message(fmt::format("no loss curve picture: {}", e.what()));
  }
}

}  // namespace magix::detail
