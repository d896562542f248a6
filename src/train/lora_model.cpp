// LoraModel: a decoder whose frozen weights carry low-rank adapters (Decoder::set_adapters);
// training steps that update the adapters only.
#include "magix/error.hpp"
#include "magix/hash.hpp"
#include "magix/lora.hpp"
#include "magix/train_step.hpp"

namespace magix {

LoraModel::LoraModel(Decoder model, LoraConfig config, ParameterSet adapters,
                     LoraModelOptions options)
    : model_(std::move(model)), config_(std::move(config)), seed_(options.seed) {
  MAGIX_CHECK(config_.dropout >= 0 && config_.dropout < 1,
              "--lora_dropout must be in [0, 1), got {}", config_.dropout);
  const ParameterSet& params = model_.params();
  const std::vector<ParamInfo> want = lora_adapter_infos(params.infos(), config_, model_.mesh());
  MAGIX_CHECK(want.size() == adapters.size(),
              "LoRA: {} adapter tensors given, the targets '{}' need {}", adapters.size(),
              config_.targets, want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const ParamInfo& got = adapters.info(i);
    MAGIX_CHECK(got.name == want[i].name && got.global_shape == want[i].global_shape &&
                    got.box_start == want[i].box_start && got.box_extent == want[i].box_extent &&
                    adapters.tensor(i).dtype() == DType::kF32,
                "LoRA adapter {} ('{}' {}) does not match the layout the model needs ('{}' {})", i,
                got.name, shape_str(got.global_shape), want[i].name,
                shape_str(want[i].global_shape));
  }
  if (options.bf16_base && model_.options().weight_dtype != DType::kBF16) {
    DecoderOptions o = model_.options();
    o.weight_dtype = DType::kBF16;
    model_.set_options(o);
  }
  model_.set_adapters(std::move(adapters), config_.scale());
}

LossResult LoraModel::loss(const TokenBatch& batch, double token_count) {
  return model_.loss(batch, token_count);
}

uint64_t lora_dropout_key(uint64_t seed, int64_t step) {
  return splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(step));
}

void LoraModel::set_step(int64_t step, int64_t micro_batches) {
  MAGIX_CHECK(step >= 0 && micro_batches >= 1, "LoRA: step {} with {} micro-batches", step,
              micro_batches);
  step_ = step;
  micro_batches_ = micro_batches;
  micro_ = 0;
}

LossResult LoraModel::loss_and_grad(const TokenBatch& batch, double token_count,
                                    ParameterSet& adapter_grads) {
  if (config_.dropout > 0) {
    // This rank's rows of the step are [d · k · m, (d + 1) · k · m); micro-batch i their i-th m.
    const int64_t m = batch.batch;
    const int64_t first_row = (mesh().data_rank() * micro_batches_ + micro_ % micro_batches_) * m;
    model_.set_adapter_dropout(config_.dropout, lora_dropout_key(seed_, step_), first_row);
    ++micro_;
  }
  return model_.loss_and_adapter_grad(batch, token_count, adapter_grads);
}

int64_t LoraModel::bytes_held() const {
  return static_cast<int64_t>(model_.params().nbytes() + model_.adapters().nbytes());
}

TrainStepResult lora_train_step(LoraModel& model, AdamW& optimizer, const TokenBatch& batch,
                                double lr) {
  const Mesh& mesh = model.mesh();
  std::vector<double> count = {static_cast<double>(batch.count_targets())};
  mesh.data().all_reduce(count, ReduceOp::kSum);
  MAGIX_CHECK(count[0] > 0, "the global batch has no target to learn from");
  model.set_step(optimizer.updates(), 1);
  ParameterSet grads = model.adapters().zeros_like();
  const LossResult loss = model.loss_and_grad(batch, count[0], grads);
  TrainStepResult result;
  result.loss = loss.loss;
  result.tokens = static_cast<int64_t>(count[0]);
  result.grad_norm = global_grad_norm(grads, mesh);
  std::vector<Tensor> p, g;
  for (size_t i = 0; i < grads.size(); ++i) {
    p.push_back(model.adapters().tensor(i));  // shares storage: the update lands in the adapters
    g.push_back(grads.tensor(i));
  }
  result.applied = optimizer.step(p, g, lr, result.grad_norm).applied;
  return result;
}

}  // namespace magix
