// LoRA (low-rank adapters) on the decoder's linear weights, sharded like their base weights
// (docs/lora.md).
//
// Per adapted weight W (torch layout [out, in]) there are two adapters in PEFT's layout:
//   lora_A [r, in]   He-uniform (bound sqrt(6 / in)), a pure function of (seed, name, element)
//   lora_B [out, r]  zeros, so that step 0 equals the base model
// and the effective weight is W_eff = W + scale · B · A, scale = alpha / r (the reference's
// W + (alpha / r) · A_ref · B_ref with A_ref = A^T, B_ref = B^T).
//
// Sharding follows the base weight's spec: A's dim 1 takes the axis of W's in-dim (dim 0
// unsharded), B's dim 0 the axis of W's out-dim (dim 1 unsharded). Training runs the low-rank
// path inside the decoder's blocks (y = W·x + scale · B·(A·x); dA = scale · (Bᵀ·dy)ᵀ·x,
// dB = scale · dyᵀ·(A·x); Decoder::set_adapters, docs/lora.md): the same numbers on every mesh.
// A rank's box of the merged weight, W[o, i] + scale · B[o, :] · A[:, i], is a product of its
// local A and B shards alone (merge_lora, for generation and export).
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "magix/batch.hpp"
#include "magix/mesh.hpp"
#include "magix/model.hpp"
#include "magix/optimizer.hpp"
#include "magix/tensor.hpp"
#include "magix/train_step.hpp"
#include "magix/trainer.hpp"

namespace magix {

// Every linear weight inside the decoder layers (the reference's `layers/.*/kernel` rule):
// q, k, v, o, gate, up, down projections (phi3: the fused qkv_proj and gate_up_proj, as PEFT
// adapts them).
inline constexpr const char* kDefaultLoraTargets =
    R"(layers\.[0-9]+\.(self_attn\.(q|k|v|o|qkv)_proj|mlp\.(gate|up|down|gate_up)_proj)\.weight$)";

struct LoraConfig {
  int64_t rank = 8;
  double alpha = 32.0;
  // ECMAScript regex, searched (Python re.search) in each parameter name; only 2-D parameters
  // (linear weights) can be adapted.
  std::string targets = kDefaultLoraTargets;
  // PEFT's lora_dropout: during training each adapter's input x is dropped (p) and rescaled
  // (1 / (1 - p)) before A; never at evaluation or generation.
  double dropout = 0.0;
  // PEFT's use_rslora (rank-stabilised LoRA): the adapters' scale is alpha / sqrt(r), not
  // alpha / r.
  bool rslora = false;

  double scale() const {
    return rslora ? alpha / std::sqrt(static_cast<double>(rank))
                  : alpha / static_cast<double>(rank);
  }
};

// "model.layers.0.self_attn.q_proj.weight" -> "model.layers.0.self_attn.q_proj.lora_A.weight"
// (which = 'A' or 'B').
std::string lora_adapter_name(const std::string& weight_name, char which);

// Indices into `base` of the weights `config.targets` selects. Errors: an invalid regex, a
// rank < 1, a matched parameter that is not 2-D, no match at all (each names the regex).
std::vector<size_t> lora_target_indices(const std::vector<ParamInfo>& base,
                                        const LoraConfig& config);

// The adapters of the targeted weights, in order: A then B per weight, with global shapes, the
// specs derived from the base weight's spec and this rank's boxes (base infos must already be
// sharded for `mesh`).
std::vector<ParamInfo> lora_adapter_infos(const std::vector<ParamInfo>& base,
                                          const LoraConfig& config, const Mesh& mesh);

// The adapter `which` ('A' (r, in) or 'B' (out, r)) of the sharded weight `w`, sharded for `mesh`:
// A's in-dim as the weight's in-dim, B's out-dim as the weight's out-dim (a fused weight's B
// split part by part as the weight: B's rows are fused the same way).
ParamInfo lora_adapter_info(const ParamInfo& w, char which, int64_t rank, const Mesh& mesh);

// Adapters as initialised for training: A He-uniform in [-sqrt(6 / in), sqrt(6 / in)), element e
// of the global A a pure function of (seed, name, e) so that every rank draws its own box; B 0.
ParameterSet init_lora_adapters(const std::vector<ParamInfo>& adapter_infos, uint64_t seed);

// W[box] += scale · B[out-box, :] · A[:, in-box] for every adapted weight, on this rank's boxes
// (purely local). `params` may hold F32 or BF16 tensors (BF16: added in fp32, rounded once).
// `adapters` must have lora_adapter_infos' layout for the targets of `params`.
void merge_lora(ParameterSet& params, const ParameterSet& adapters, double scale);

// dW (this rank's boxes of the dense gradient of the merged weights, as Decoder::loss_and_grad
// gives them) -> adapter gradients: adapter_grads += (dA, dB) with dA = scale · Bᵀ·dW (summed
// over W's out-dim axis), dB = scale · dW·Aᵀ (over W's in-dim axis). Collective over `mesh`.
// Training does not use it (it never forms dW); tests use it as an independent reference.
void lora_project_grads(const ParameterSet& dense_grads, const ParameterSet& adapters, double scale,
                        const Mesh& mesh, ParameterSet& adapter_grads);

// ---------------------------------------------------------------------------------------------
// Training: a decoder with the adapters set on its frozen weights (Decoder::set_adapters): every
// adapted layer computes y = W·x + scale · B·(A·x) with W as stored, and the backward pass gives
// the adapters' gradients only (no dense weight gradient, no gradient buffer for the base).

struct LoraModelOptions {
  bool bf16_base = false;  // store the frozen base in bf16 (an F32 model is converted in place)
  uint64_t seed = 0;       // of the dropout masks (lora_dropout_key)
};

// The key of a training step's dropout masks: splitmix64(splitmix64(seed) ^ step). A mask
// element is then a pure function of (key, layer, adapted layer, global token, global feature)
// (Decoder::set_adapter_dropout, Backend::dropout).
uint64_t lora_dropout_key(uint64_t seed, int64_t step);

class LoraModel {
 public:
  // `model`'s parameters are the frozen base, used as stored (F32 or BF16: its weight_dtype, or
  // BF16 with bf16_base). `adapters` must have lora_adapter_infos(model's infos, config, mesh)'s
  // layout.
  LoraModel(Decoder model, LoraConfig config, ParameterSet adapters, LoraModelOptions options = {});

  const LoraConfig& config() const { return config_; }
  // The decoder with the adapters set: its loss and logits are those of the adapted model.
  Decoder& decoder() { return model_; }
  const Decoder& decoder() const { return model_; }
  // The adapters (held by the decoder; they may be changed in place at any time).
  ParameterSet& adapters() { return model_.adapters(); }
  const ParameterSet& adapters() const { return model_.adapters(); }
  const Mesh& mesh() const { return model_.mesh(); }

  LossResult loss(const TokenBatch& batch, double token_count);
  // The optimizer step the next loss_and_grad calls belong to and its number of micro-batches:
  // with dropout, call k of the step takes the rows of micro-batch k of every data rank's rows
  // (as train_step splits them) for its masks.
  void set_step(int64_t step, int64_t micro_batches);
  // adapter_grads (adapters' layout) += d loss / d adapters. Collective over the mesh.
  LossResult loss_and_grad(const TokenBatch& batch, double token_count,
                           ParameterSet& adapter_grads);

  // Bytes held: the base parameters and the adapters.
  int64_t bytes_held() const;

 private:
  Decoder model_;
  LoraConfig config_;
  uint64_t seed_ = 0;
  int64_t step_ = 0, micro_batches_ = 1, micro_ = 0;
};

// The AdamW state of the adapters (moments shaped like the local adapter shards).
AdamW initialize_lora_opt_state(const AdamWOptions& options, const ParameterSet& adapters);

// One step: loss and adapter gradients, the global gradient norm (each element counted once),
// AdamW on the adapters. `batch` is this data rank's rows of the global batch.
TrainStepResult lora_train_step(LoraModel& model, AdamW& optimizer, const TokenBatch& batch,
                                double lr);

// The LoRA Trainable of `magix train-lora` (trainer.hpp's run_training): trainable() are the
// adapters, checkpoint item "lora", describe() {lora_rank, lora_alpha, lora_targets}.
class LoraTrainable final : public Trainable {
 public:
  explicit LoraTrainable(LoraModel model) : model_(std::move(model)) {}
  LoraModel& lora() { return model_; }
  Decoder& decoder() override { return model_.decoder(); }  // with the adapters set
  ParameterSet& trainable() override { return model_.adapters(); }
  std::string checkpoint_item() const override { return "lora"; }
  LossResult loss_and_grad(const TokenBatch& batch, double token_count,
                           ParameterSet& grads) override;
  void begin_step(int64_t step, int64_t micro_batches) override {
    model_.set_step(step, micro_batches);
  }
  nlohmann::json describe() const override;

 private:
  LoraModel model_;
};

// The model of `args` (load_train_decoder: stored in bf16 with --bf16_model_weights, never
// widened) with fresh adapters (init_lora_adapters, seed args.seed), or with `init`'s adapters
// (--lora_init: a PEFT folder or a train-lora step, read_lora_adapters) when given, whose rank,
// targets and dropout must be those of `lora`.
std::unique_ptr<LoraTrainable> make_lora_trainable(const TrainArgs& args, const LoraConfig& lora,
                                                   const Mesh& mesh,
                                                   const std::filesystem::path& init = {});

// ---------------------------------------------------------------------------------------------
// Checkpoints and export (item "lora" of a checkpoint step holds the adapters by the names
// lora_adapter_name gives).

// The adapters stored in item "lora" of a committed checkpoint step, for the parameters of
// `base` (sharded for `mesh`): this rank's boxes. The targets and the rank are read from the
// checkpoint (which weights have adapters there, the shape of lora_A), rslora from its trainer
// state (`trainable.lora_use_rslora`); alpha is the caller's.
// Errors: no item "lora", no adapter for any parameter, an A without its B, a rank mismatch.
struct LoadedLora {
  LoraConfig config;  // rank, alpha, rslora; targets: the adapted names, as an anchored alternation
  ParameterSet adapters;
};
LoadedLora read_lora_checkpoint(const std::filesystem::path& step_dir,
                                const std::vector<ParamInfo>& base, double alpha, const Mesh& mesh);

// Merges the adapters of a checkpoint step into a decoder's weights at load (generate --lora,
// export of a merged model). Returns the config used.
LoraConfig merge_lora_checkpoint(const std::filesystem::path& step_dir, Decoder& model,
                                 double alpha);

// A checkpoint step written by train-lora (it has item "lora").
bool is_lora_checkpoint(const std::filesystem::path& step_dir);
// `path` itself when it is a committed step, else the latest committed step inside it (a
// --checkpoint_dir); an error naming the path otherwise.
std::filesystem::path resolve_lora_step(const std::filesystem::path& path);

// What a train-lora step records about its run (trainer_state.json): the base model and the
// adapters' settings.
struct LoraRunInfo {
  std::string model_name;    // --model_name of the run (HF folder / hub name), or empty
  std::string model_config;  // --model_config of the run (random base, re-drawn from seed)
  uint64_t seed = 0;
  bool bf16_base = false;  // --bf16_model_weights: the base was rounded to bf16
  LoraConfig config;       // rank, alpha, targets as trained
};
LoraRunInfo read_lora_run_info(const std::filesystem::path& step_dir);

// The whole merged parameters W + (alpha / r) · B · A of a train-lora step (1x1 layout, F32),
// for export: the base as the run had it (`base_model` overrides the recorded one), rounded to
// bf16 first when the run kept it in bf16; `alpha` overrides the trained alpha when given.
ParameterSet load_lora_merged_parameters(const std::filesystem::path& step_dir,
                                         const std::string& base_model, std::optional<double> alpha,
                                         ModelConfig* config);

// A PEFT adapter folder: adapter_config.json and adapter_model.safetensors.
bool is_peft_adapter_dir(const std::filesystem::path& dir);

// The adapters of a PEFT folder for the parameters of `base` (sharded for `mesh`): this rank's
// boxes, names base_model.model.<weight>.lora_{A,B}.weight, r, lora_alpha, lora_dropout and
// target_modules from adapter_config.json (a list: a module whose name is an entry or ends with
// "." + an entry; a string: a regex the whole module name matches, as PEFT does). Settings magix
// does not implement (use_rslora, use_dora, fan_in_fan_out, bias, modules_to_save, rank or alpha
// patterns, layers_to_transform) are errors, as are missing or mis-shaped tensors.
LoadedLora read_peft_adapter(const std::filesystem::path& dir, const std::vector<ParamInfo>& base,
                             const Mesh& mesh);

// The adapters of `path`: a PEFT folder, or a train-lora checkpoint step (or checkpoint dir: its
// latest step), with the settings saved with them (rank, alpha, targets, dropout); `alpha`, when
// given, overrides the saved alpha (generate --lora_alpha).
LoadedLora read_lora_adapters(const std::filesystem::path& path, const std::vector<ParamInfo>& base,
                              std::optional<double> alpha, const Mesh& mesh);

// read_lora_adapters merged into a decoder's weights at load (generate --lora). Returns the
// config used.
LoraConfig merge_lora_adapters(const std::filesystem::path& path, Decoder& model,
                               std::optional<double> alpha = std::nullopt);

// A train-lora step as a PEFT adapter folder (write_peft_adapter), base_model_name_or_path the
// run's --model_name unless `base_model` is given.
void export_lora_peft(const std::filesystem::path& step_dir, const std::filesystem::path& out_dir,
                      const std::string& base_model, DType dtype = DType::kF32);

// Writes a PEFT adapter folder: adapter_config.json (peft_type LORA, task_type CAUSAL_LM, r,
// lora_alpha, target_modules, base_model_name_or_path) and adapter_model.safetensors with the
// names base_model.model.<module>.lora_A.weight / lora_B.weight, in `dtype` (F32 or BF16).
// `adapters` must hold whole tensors (a 1x1 layout). Written atomically (a temporary folder
// renamed into place); an existing non-empty `dir` is an error.
void write_peft_adapter(const std::filesystem::path& dir, const ParameterSet& adapters,
                        const LoraConfig& config, const std::string& base_model,
                        DType dtype = DType::kF32);

}  // namespace magix
