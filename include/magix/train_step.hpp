// One training step over the mesh: loss and gradients on each rank's shards, the global
// gradient norm (every element counted once, whatever is replicated), AdamW on the shards.
#pragma once

#include "magix/batch.hpp"
#include "magix/model.hpp"
#include "magix/optimizer.hpp"

namespace magix {

// The L2 norm of the full gradient over the mesh. A parameter replicated over an axis (its
// spec does not use it) is counted on that axis's rank 0 only. Collective over the world.
double global_grad_norm(const ParameterSet& grads, const Mesh& mesh);

// AdamW state shaped like this rank's parameter shards (optimizer state is sharded exactly as
// the parameters are). `rules` must be the rules the parameters were placed by: a parameter
// whose spec differs is an error naming it.
AdamW initialize_opt_state(const AdamWOptions& options, const ParameterSet& params,
                           const PartitionRules& rules, const Mesh& mesh);

struct TrainStepResult {
  double loss = 0.0;       // mean NLL over the global batch's counted targets
  double grad_norm = 0.0;  // before clipping
  int64_t tokens = 0;      // counted targets in the global batch
  bool applied = false;    // false: a non-finite step, skipped
};

// `batch` holds this data rank's rows of the global batch (the same rows on every model rank).
TrainStepResult train_step(Decoder& model, AdamW& optimizer, const TokenBatch& batch, double lr);

}  // namespace magix
