// One training step over the mesh: loss and gradients on each rank's shards (optionally
// accumulated over micro-batches), the global gradient norm (every element counted once, whatever
// is replicated), AdamW on the shards.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "magix/batch.hpp"
#include "magix/model.hpp"
#include "magix/optimizer.hpp"

namespace magix {

// What a training run optimises: the full model, or adapters over a frozen model (LoRA). The
// trainer (trainer.hpp) only sees this interface.
//
// Invariants: trainable() is fixed for the object's life (same infos, same tensors, updated in
// place); its infos carry specs and boxes (shard_parameters) so that gradient norms and
// checkpoints know what is replicated; gradients have exactly its layout, in fp32.
class Trainable {
 public:
  virtual ~Trainable() = default;

  // The model the loss runs through (its mesh is the run's mesh).
  virtual Decoder& decoder() = 0;
  // What AdamW updates: this rank's shards, F32 or BF16 (--bf16_model_weights).
  virtual ParameterSet& trainable() = 0;
  // The checkpoint item that holds trainable(): "model" (full) or "lora".
  virtual std::string checkpoint_item() const = 0;
  // grads += d loss / d trainable() for this rank's rows; loss = NLL sum / token_count
  // (token_count: the global count of counted targets of the whole optimizer step).
  virtual LossResult loss_and_grad(const TokenBatch& batch, double token_count,
                                   ParameterSet& grads) = 0;
  // Called after every applied update (e.g. to refresh cached merged weights).
  virtual void after_update() {}
  // Called by run_training before each optimizer step (`step` updates done before it) with its
  // number of micro-batches (e.g. to key LoRA's dropout masks).
  virtual void begin_step(int64_t /*step*/, int64_t /*micro_batches*/) {}
  // Saved in the trainer state under "trainable" and compared on resume (e.g. LoRA rank and
  // alpha); a mismatch is reported with both values.
  virtual nlohmann::json describe() const { return nlohmann::json::object(); }
  // Files copied into every checkpoint step besides the trainer's config.json and tokenizer
  // files (e.g. adapter_config.json).
  virtual std::vector<std::filesystem::path> extra_files() const { return {}; }
};

// The whole decoder is trained: trainable() is decoder().params(), item "model".
class FullTrainable final : public Trainable {
 public:
  explicit FullTrainable(Decoder decoder) : decoder_(std::move(decoder)) {}
  Decoder& decoder() override { return decoder_; }
  ParameterSet& trainable() override { return decoder_.params(); }
  std::string checkpoint_item() const override { return "model"; }
  LossResult loss_and_grad(const TokenBatch& batch, double token_count,
                           ParameterSet& grads) override {
    return decoder_.loss_and_grad(batch, token_count, grads);
  }

 private:
  Decoder decoder_;
};

// The L2 norm of the full gradient over the mesh. A parameter replicated over an axis (its
// spec does not use it) is counted on that axis's rank 0 only. Collective over the world.
double global_grad_norm(const ParameterSet& grads, const Mesh& mesh);

// AdamW state shaped like this rank's parameter shards (optimizer state is sharded exactly as
// the parameters are). `rules` must be the rules the parameters were placed by: a parameter
// whose spec differs is an error naming it.
AdamW initialize_opt_state(const AdamWOptions& options, const ParameterSet& params,
                           const PartitionRules& rules, const Mesh& mesh);
// The same for any parameter set whose infos already carry specs and boxes (e.g. adapters).
AdamW make_opt_state(const AdamWOptions& options, const ParameterSet& params);

struct TrainStepResult {
  double loss = 0.0;       // mean NLL over the global batch's counted targets
  double grad_norm = 0.0;  // before clipping
  int64_t tokens = 0;      // counted targets in the global batch (all micro-batches)
  bool applied = false;    // false: a non-finite step, skipped
};

// `batch` holds this data rank's rows of the global batch (the same rows on every model rank).
TrainStepResult train_step(Decoder& model, AdamW& optimizer, const TokenBatch& batch, double lr);

// One optimizer step over micro-batches (gradient accumulation): `micro_batches` hold this data
// rank's rows of the step, every data rank passing the same number. The loss of each is
// normalised by the TOTAL count of counted targets of all micro-batches over all data ranks, so
// the gradient equals that of one batch holding all their rows. `grads` is scratch with the
// layout of model.trainable() (zeroed here). Collective over the mesh.
TrainStepResult train_step(Trainable& model, AdamW& optimizer,
                           std::span<const TokenBatch> micro_batches, double lr,
                           ParameterSet& grads);

// The rows [first, first + count) of a batch (for splitting a step into micro-batches).
TokenBatch slice_rows(const TokenBatch& batch, int64_t first, int64_t count);

}  // namespace magix
