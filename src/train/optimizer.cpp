#include <cmath>
#include <numbers>

#include "backends/backend.hpp"
#include "magix/error.hpp"
#include "magix/optimizer.hpp"

namespace magix {
double LrSchedule::operator()(int64_t step) const {
  if (step < warmup_steps) {
    return peak * static_cast<double>(step) / static_cast<double>(warmup_steps);
  }
  if (kind == ScheduleKind::kConstant) return peak;
  int64_t span = decay_end - warmup_steps;
  if (span <= 0) return end_value;
  double t = std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(span));
  if (kind == ScheduleKind::kLinear) return peak + (end_value - peak) * t;
  return end_value + (peak - end_value) * 0.5 * (1.0 + std::cos(std::numbers::pi * t));
}

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "warmup_cosine") return ScheduleKind::kWarmupCosine;
  if (name == "linear") return ScheduleKind::kLinear;
  if (name == "constant") return ScheduleKind::kConstant;
  MAGIX_FAIL("unknown learning-rate schedule '{}' (use warmup_cosine, linear or constant)", name);
}

bool decays(const std::string& name) {
  bool bias = name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0;
  bool norm = name.find("norm") != std::string::npos;
  return !bias && !norm;
}

AdamW::AdamW(AdamWOptions options, std::vector<std::string> names, const std::vector<Shape>& shapes,
             Device device)
    : options_(options), names_(std::move(names)) {
  const Backend& ops = backend_for(device);
  MAGIX_CHECK(names_.size() == shapes.size(), "AdamW: {} names for {} shapes", names_.size(),
              shapes.size());
  for (size_t i = 0; i < names_.size(); ++i) {
    decay_.push_back(decays(names_[i]));
    mu_.push_back(ops.zeros(shapes[i], DType::kF32));
    nu_.push_back(ops.zeros(shapes[i], DType::kF32));
  }
}

void AdamW::set_counters(int64_t updates, int64_t consecutive_skipped) {
  count_ = updates;
  skipped_ = consecutive_skipped;
}

StepReport AdamW::step(std::span<Tensor> params, std::span<const Tensor> grads, double lr,
                       double grad_norm) {
  MAGIX_CHECK(params.size() == mu_.size() && grads.size() == mu_.size(),
              "AdamW::step: {} parameters and {} gradients for {} states", params.size(),
              grads.size(), mu_.size());
  StepReport report;
  report.grad_norm = grad_norm;
  if (!std::isfinite(grad_norm)) {
    ++skipped_;
    report.consecutive_skipped = skipped_;
    MAGIX_CHECK(skipped_ <= options_.max_consecutive_nonfinite,
                "{} consecutive steps had a non-finite gradient norm; stopping rather than "
                "applying a bad update (lower the learning rate or check the data)",
                skipped_);
    return report;
  }
  skipped_ = 0;
  ++count_;
  const double scale = (options_.max_grad_norm > 0 && grad_norm > options_.max_grad_norm)
                           ? options_.max_grad_norm / grad_norm
                           : 1.0;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double c1 = 1.0 - std::pow(b1, static_cast<double>(count_));
  const double c2 = 1.0 - std::pow(b2, static_cast<double>(count_));
  for (size_t p = 0; p < params.size(); ++p) {
    MAGIX_CHECK(params[p].numel() == mu_[p].numel() && grads[p].numel() == mu_[p].numel(),
                "AdamW::step: size mismatch for {}", names_[p]);
    MAGIX_CHECK(grads[p].dtype() == DType::kF32,
                "AdamW::step: the gradient of {} is {}, must be F32", names_[p],
                dtype_name(grads[p].dtype()));
    const AdamWScalars k{
        static_cast<float>(scale), static_cast<float>(b1),
        static_cast<float>(b2),    static_cast<float>(c1),
        static_cast<float>(c2),    static_cast<float>(options_.eps),
        static_cast<float>(lr),    decay_[p] ? static_cast<float>(options_.weight_decay) : 0.0f};
    backend_for(params[p].device()).adamw_update(params[p], grads[p], mu_[p], nu_[p], k);
  }
  report.applied = true;
  return report;
}

double sum_of_squares(std::span<const float> g) {
  const Tensor t =
      Tensor::view_of(const_cast<float*>(g.data()), {static_cast<int64_t>(g.size())}, DType::kF32);
  return backend_for(Device::kCpu).sum_of_squares(t);
}

}  // namespace magix
