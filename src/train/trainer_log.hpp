// What a training run tells its user: a progress bar on a terminal or plain log lines, and the
// --metrics_file JSONL. Only world rank 0 prints or writes; other ranks' loggers do nothing.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "magix/trainer.hpp"
#include "tensorboard.hpp"

namespace magix::detail {

class TrainLogger {
 public:
  // `start_step`: steps already done (a resumed run keeps the metrics lines up to it and drops
  // later ones, which a crashed run may have written after its last checkpoint).
  TrainLogger(const TrainArgs& args, bool is_rank0, int64_t start_step, int64_t total_steps);
  ~TrainLogger();
  TrainLogger(const TrainLogger&) = delete;
  TrainLogger& operator=(const TrainLogger&) = delete;

  void step(const StepMetrics& m);
  // An evaluation: a line of its own in the metrics file ({"step", "epoch", "eval_loss",
  // "eval_perplexity", ...}), eval/loss and eval/perplexity in TensorBoard, a log line, and the
  // eval loss kept on the progress bar.
  void eval(const EvalMetrics& e);
  // A line for the user (clears the bar first).
  void message(const std::string& line);
  // Ends the bar line; with a metrics file, draws its loss curves next to it
  // (default_plot_path: metrics.jsonl -> metrics.svg) and says where.
  void finish();

 private:
  void draw_bar(const StepMetrics& m);

  bool active_ = false;
  bool bar_ = false;
  bool bar_drawn_ = false;
  int64_t log_steps_ = 1;
  int64_t start_step_ = 0;
  int64_t total_steps_ = 0;
  double interval_loss_ = 0.0;  // sum of losses since the last log line
  int64_t interval_steps_ = 0;
  int64_t interval_tokens_ = 0;        // counted targets since the last log line
  int64_t interval_input_tokens_ = 0;  // input tokens since the last log line
  double interval_start_s_ = 0.0;      // elapsed_s at the last log line
  int64_t run_tokens_ = 0;             // counted targets since this process started training
  int64_t run_input_tokens_ = 0;       // input tokens since this process started training
  double last_eval_loss_ = 0.0;
  bool has_eval_ = false;
  std::FILE* metrics_ = nullptr;
  std::string metrics_path_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
};

// "1h02m03s" / "4m05s" / "7s".
std::string format_duration(double seconds);

}  // namespace magix::detail
