// LoraModel: a decoder whose adapted weights hold W_eff = W + scale · B · A, the frozen base
// copies W, and the adapters; training steps that update the adapters only.
#include <algorithm>
#include <cstring>

#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"
#include "magix/lora.hpp"
#include "magix/train_step.hpp"

namespace magix {

LoraModel::LoraModel(Decoder model, LoraConfig config, ParameterSet adapters,
                     LoraModelOptions options)
    : model_(std::move(model)), config_(std::move(config)), adapters_(std::move(adapters)) {
  ParameterSet& params = model_.params();
  MAGIX_CHECK(model_.options().weight_dtype == DType::kF32,
              "LoRA needs the decoder's weights in F32 (they hold the merged weights); keep the "
              "frozen base in bf16 with LoraModelOptions::bf16_base instead");
  targets_ = lora_target_indices(params.infos(), config_);
  const std::vector<ParamInfo> want = lora_adapter_infos(params.infos(), config_, model_.mesh());
  MAGIX_CHECK(want.size() == adapters_.size(),
              "LoRA: {} adapter tensors given, the targets '{}' "
              "need {}",
              adapters_.size(), config_.targets, want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const ParamInfo& got = adapters_.info(i);
    MAGIX_CHECK(got.name == want[i].name && got.global_shape == want[i].global_shape &&
                    got.box_start == want[i].box_start && got.box_extent == want[i].box_extent &&
                    adapters_.tensor(i).dtype() == DType::kF32,
                "LoRA adapter {} ('{}' {}) does not match the layout the model needs ('{}' {})", i,
                got.name, shape_str(got.global_shape), want[i].name,
                shape_str(want[i].global_shape));
  }
  for (size_t t : targets_) {
    const Tensor& w = params.tensor(t);
    base_.push_back(options.bf16_base ? w.to(DType::kBF16) : w.clone());
  }
  refresh_weights();
}

// refresh_weights() is in lora.cpp, beside the merge loop it shares.

void LoraModel::sync_weights() {
  bool same = applied_.size() == adapters_.size();
  for (size_t i = 0; same && i < adapters_.size(); ++i) {
    const Tensor& t = adapters_.tensor(i);
    same = t.nbytes() == applied_[i].nbytes() &&
           std::memcmp(t.bytes(), applied_[i].bytes(), t.nbytes()) == 0;
  }
  if (!same) refresh_weights();
}

LossResult LoraModel::loss(const TokenBatch& batch, double token_count) {
  sync_weights();
  return model_.loss(batch, token_count);
}

LossResult LoraModel::loss_and_grad(const TokenBatch& batch, double token_count,
                                    ParameterSet& adapter_grads) {
  sync_weights();
  if (dense_grads_.size() == 0) {
    dense_grads_ = model_.params().zeros_like();
  } else {
    dense_grads_.fill_zero();
  }
  LossResult result = model_.loss_and_grad(batch, token_count, dense_grads_);
  lora_project_grads(dense_grads_, adapters_, config_.scale(), model_.mesh(), adapter_grads);
  return result;
}

int64_t LoraModel::bytes_held() const {
  int64_t n = 0;
  for (size_t i = 0; i < model_.params().size(); ++i) {
    n += static_cast<int64_t>(model_.params().tensor(i).nbytes());
  }
  for (const Tensor& t : base_) n += static_cast<int64_t>(t.nbytes());
  for (const Tensor& t : applied_) n += static_cast<int64_t>(t.nbytes());
  for (size_t i = 0; i < dense_grads_.size(); ++i) {
    n += static_cast<int64_t>(dense_grads_.tensor(i).nbytes());
  }
  for (size_t i = 0; i < adapters_.size(); ++i) {
    n += static_cast<int64_t>(adapters_.tensor(i).nbytes());
  }
  return n;
}

TrainStepResult lora_train_step(LoraModel& model, AdamW& optimizer, const TokenBatch& batch,
                                double lr) {
  const Mesh& mesh = model.mesh();
  std::vector<double> count = {static_cast<double>(batch.count_targets())};
  mesh.data().all_reduce(count, ReduceOp::kSum);
  MAGIX_CHECK(count[0] > 0, "the global batch has no target to learn from");
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
  if (result.applied) model.refresh_weights();
  return result;
}

}  // namespace magix
