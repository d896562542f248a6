#include "magix/train_step.hpp"

#include <cmath>

#include "backends/backend.hpp"
#include "magix/error.hpp"
#include "magix/sharding.hpp"

namespace magix {

double global_grad_norm(const ParameterSet& grads, const Mesh& mesh) {
  std::vector<double> sum = {0.0};
  for (size_t i = 0; i < grads.size(); ++i) {
    const PartitionSpec& spec = grads.info(i).spec;
    const bool owner = (spec.uses("data") || mesh.data_rank() == 0) &&
                       (spec.uses("model") || mesh.model_rank() == 0);
    const Tensor& g = grads.tensor(i);
    if (owner) sum[0] += backend_for(g.device()).sum_of_squares(g);  // on the gradient's device
  }
  mesh.world().all_reduce(sum, ReduceOp::kSum);
  return std::sqrt(sum[0]);
}

AdamW initialize_opt_state(const AdamWOptions& options, const ParameterSet& params,
                           const PartitionRules& rules, const Mesh& mesh) {
  for (const ParamInfo& info : params.infos()) {
    const PartitionSpec spec =
        rules.spec_for(info.name, static_cast<int>(info.global_shape.size()));
    MAGIX_CHECK(spec == info.spec,
                "parameter {} is placed as {} but the optimizer rules give {}: use the rules the "
                "model was loaded with",
                info.name, info.spec.str(), spec.str());
    const ShardBox box = shard_box(info.name, info.global_shape, spec, mesh);
    MAGIX_CHECK(box.extent == info.box_extent,
                "parameter {}: optimizer shard {} != parameter shard {}", info.name,
                shape_str(box.extent), shape_str(info.box_extent));
  }
  return make_opt_state(options, params);
}

AdamW make_opt_state(const AdamWOptions& options, const ParameterSet& params) {
  std::vector<std::string> names;
  std::vector<Shape> shapes;
  for (const ParamInfo& info : params.infos()) {
    names.push_back(info.name);
    shapes.push_back(info.box_extent);
  }
  return AdamW(options, std::move(names), shapes, params.device());
}

TrainStepResult train_step(Decoder& model, AdamW& optimizer, const TokenBatch& batch, double lr) {
  // A non-owning view of the model as a Trainable: the update lands in `model`.
  class View final : public Trainable {
   public:
    explicit View(Decoder& d) : d_(d) {}
    Decoder& decoder() override { return d_; }
    ParameterSet& trainable() override { return d_.params(); }
    std::string checkpoint_item() const override { return "model"; }
    LossResult loss_and_grad(const TokenBatch& b, double count, ParameterSet& g) override {
      return d_.loss_and_grad(b, count, g);
    }

   private:
    Decoder& d_;
  };
  View view(model);
  ParameterSet grads = model.params().zeros_like();  // fp32 zeros, whatever the weights' dtype
  return train_step(view, optimizer, std::span<const TokenBatch>(&batch, 1), lr, grads);
}

TrainStepResult train_step(Trainable& model, AdamW& optimizer,
                           std::span<const TokenBatch> micro_batches, double lr,
                           ParameterSet& grads) {
  const Mesh& mesh = model.decoder().mesh();
  MAGIX_CHECK(!micro_batches.empty(), "train_step: no micro-batch");
  ParameterSet& params = model.trainable();
  MAGIX_CHECK(grads.size() == params.size(), "train_step: {} gradients for {} parameters",
              grads.size(), params.size());
  // The normaliser of the whole step: counted targets of every micro-batch on every data rank.
  std::vector<double> count = {0.0};
  for (const TokenBatch& b : micro_batches) count[0] += static_cast<double>(b.count_targets());
  mesh.data().all_reduce(count, ReduceOp::kSum);
  MAGIX_CHECK(count[0] > 0, "the global batch has no target to learn from");
  grads.fill_zero();
  TrainStepResult result;
  for (const TokenBatch& b : micro_batches) {
    result.loss += model.loss_and_grad(b, count[0], grads).loss;
  }
  result.tokens = static_cast<int64_t>(count[0]);
  result.grad_norm = global_grad_norm(grads, mesh);
  std::vector<Tensor> p, g;
  for (size_t i = 0; i < params.size(); ++i) {
    p.push_back(params.tensor(i));  // shares storage: the update lands in the model
    g.push_back(grads.tensor(i));
  }
  result.applied = optimizer.step(p, g, lr, result.grad_norm).applied;
  if (result.applied) model.after_update();
  return result;
}

TokenBatch slice_rows(const TokenBatch& batch, int64_t first, int64_t count) {
  MAGIX_CHECK(first >= 0 && count >= 0 && first + count <= batch.batch,
              "slice_rows: rows [{}, {}) of a batch of {}", first, first + count, batch.batch);
  TokenBatch out;
  out.batch = count;
  out.seq = batch.seq;
  const auto cut = [&](const std::vector<int32_t>& v) {
    if (v.empty()) return std::vector<int32_t>{};
    return std::vector<int32_t>(v.begin() + first * batch.seq,
                                v.begin() + (first + count) * batch.seq);
  };
  out.input_ids = cut(batch.input_ids);
  out.targets = cut(batch.targets);
  out.key_valid = cut(batch.key_valid);
  out.positions = cut(batch.positions);
  out.segments = cut(batch.segments);
  return out;
}

}  // namespace magix
