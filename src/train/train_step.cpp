#include "magix/train_step.hpp"

#include <cmath>

#include "magix/error.hpp"
#include "magix/sharding.hpp"

namespace magix {

double global_grad_norm(const ParameterSet& grads, const Mesh& mesh) {
  std::vector<double> sum = {0.0};
  for (size_t i = 0; i < grads.size(); ++i) {
    const PartitionSpec& spec = grads.info(i).spec;
    const bool owner = (spec.uses("data") || mesh.data_rank() == 0) &&
                       (spec.uses("model") || mesh.model_rank() == 0);
    if (owner) sum[0] += sum_of_squares(grads.tensor(i).span<float>());
  }
  mesh.world().all_reduce(sum, ReduceOp::kSum);
  return std::sqrt(sum[0]);
}

AdamW initialize_opt_state(const AdamWOptions& options, const ParameterSet& params,
                           const PartitionRules& rules, const Mesh& mesh) {
  std::vector<std::string> names;
  std::vector<Shape> shapes;
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
    names.push_back(info.name);
    shapes.push_back(info.box_extent);
  }
  return AdamW(options, std::move(names), shapes);
}

TrainStepResult train_step(Decoder& model, AdamW& optimizer, const TokenBatch& batch, double lr) {
  const Mesh& mesh = model.mesh();
  std::vector<double> count = {static_cast<double>(batch.count_targets())};
  mesh.data().all_reduce(count, ReduceOp::kSum);
  MAGIX_CHECK(count[0] > 0, "the global batch has no target to learn from");
  ParameterSet grads = model.params().zeros_like();
  const LossResult loss = model.loss_and_grad(batch, count[0], grads);
  TrainStepResult result;
  result.loss = loss.loss;
  result.tokens = static_cast<int64_t>(count[0]);
  result.grad_norm = global_grad_norm(grads, mesh);
  ParameterSet& params = model.params();
  std::vector<Tensor> p, g;
  for (size_t i = 0; i < params.size(); ++i) {
    p.push_back(params.tensor(i));  // shares storage: the update lands in the model
    g.push_back(grads.tensor(i));
  }
  result.applied = optimizer.step(p, g, lr, result.grad_norm).applied;
  return result;
}

}  // namespace magix
