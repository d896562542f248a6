// AdamW as optax's `adamw` (bias correction, eps outside the square root, decoupled weight
// decay under a mask), global-norm clipping and the skip of non-finite updates, over the local
// shards of the parameters, plus the learning-rate schedules.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "magix/tensor.hpp"

namespace magix {

enum class ScheduleKind { kWarmupCosine, kLinear, kConstant };

// The learning rate at update `step` (0 for the first update, as optax counts).
// warmup_cosine: linear from 0 to peak over warmup_steps, then cosine from peak to end_value at
// decay_end (defaults to total_steps; the reference scripts end the decay at 90% of the steps
// and train the rest at lr 0). linear: warmup, then linear to end_value at decay_end.
// constant: warmup, then peak.
struct LrSchedule {
  ScheduleKind kind = ScheduleKind::kWarmupCosine;
  double peak = 0.0;
  int64_t warmup_steps = 0;
  int64_t decay_end = 0;
  double end_value = 0.0;

  double operator()(int64_t step) const;
};

ScheduleKind parse_schedule_kind(
    const std::string& name);  // "warmup_cosine" | "linear" | "constant"

// No weight decay on biases and norm weights (the reference mask).
bool decays(const std::string& param_name);

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-4;
  double max_grad_norm = 1.0;          // <= 0: no clipping
  int max_consecutive_nonfinite = 10;  // more non-finite steps in a row than this is an error
};

struct StepReport {
  double grad_norm = 0.0;  // global norm before clipping
  bool applied = false;    // false: a non-finite step, skipped
  int64_t consecutive_skipped = 0;
};

// Moments are fp32, shaped like the local parameter shards and held on the parameters' device.
class AdamW {
 public:
  AdamW(AdamWOptions options, std::vector<std::string> names, const std::vector<Shape>& shapes,
        Device device = Device::kCpu);

  // One update: params -= lr * (m̂ / (sqrt(v̂) + eps) + wd * param) with the gradients clipped
  // to max_grad_norm. `grad_norm` is the global L2 norm of the full gradient (each element
  // counted once over the whole mesh): the caller computes it, since only the caller knows how
  // the shards are replicated. A non-finite norm skips the update (parameters, moments and the
  // update count unchanged); more than max_consecutive_nonfinite in a row throws magix::Error.
  // Parameters are F32 or BF16 (--bf16_model_weights): a BF16 element is widened, updated in
  // fp32 exactly as an F32 one, and rounded back to nearest even; gradients must be F32.
  StepReport step(std::span<Tensor> params, std::span<const Tensor> grads, double lr,
                  double grad_norm);

  int64_t updates() const { return count_; }
  int64_t consecutive_skipped() const { return skipped_; }
  const std::vector<std::string>& names() const { return names_; }
  // On the device given to the constructor (a checkpoint copies them to and from the host).
  std::vector<Tensor>& mu() { return mu_; }
  std::vector<Tensor>& nu() { return nu_; }
  const AdamWOptions& options() const { return options_; }
  // For restoring from a checkpoint.
  void set_counters(int64_t updates, int64_t consecutive_skipped);

 private:
  AdamWOptions options_;
  std::vector<std::string> names_;
  std::vector<bool> decay_;
  std::vector<Tensor> mu_, nu_;
  int64_t count_ = 0;
  int64_t skipped_ = 0;
};

// Sum of squares of the local gradient elements, in double (the caller all-reduces it).
double sum_of_squares(std::span<const float> g);

}  // namespace magix
