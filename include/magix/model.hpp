// The decoder of the llama / mistral / gemma / qwen2 families: parameters by their HF names,
// sharded over the mesh by partition specs (DESIGN.md §3), a hand-written forward and backward
// pass per block, and a chunked LM head + cross-entropy that never keeps full (B·T, V) logits.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "magix/batch.hpp"
#include "magix/mesh.hpp"
#include "magix/model_config.hpp"
#include "magix/sharding.hpp"
#include "magix/tensor.hpp"

namespace magix {

// ---------------------------------------------------------------------------------------------
// Parameters and their shards

struct ParamInfo {
  std::string name;    // HF name, e.g. "model.layers.0.self_attn.q_proj.weight"
  Shape global_shape;  // torch layout [out, in] for linear weights
  PartitionSpec spec;  // from the partition rules (magix/sharding.hpp)
  Shape box_start;     // this rank's shard: [box_start, box_start + box_extent) per dim
  Shape box_extent;    // equals global_shape on the 1x1 mesh
  // Fused tensors (spec.parts, e.g. phi3's qkv_proj): the rows of each part (resolve_parts), and
  // this rank's boxes (shard_pieces) where it holds more than one: the local tensor stacks them
  // along dim 0, box_start is the first one's start and box_extent the local shape.
  std::vector<int64_t> part_rows;
  std::vector<ShardBox> pieces;
};

// This rank's boxes of `p` in the order its local tensor stacks them along dim 0: p.pieces, or
// the one box (box_start, box_extent).
std::vector<ShardBox> local_boxes(const ParamInfo& p);

// The config fields a partition rule's part sizes may name (kPartSizeFields) and their values.
std::map<std::string, int64_t, std::less<>> part_size_fields(const ModelConfig& config);

// Every parameter a model of `config` has, in HF order (embed_tokens, per layer: input_layernorm,
// q/k/v/o (+ biases), post_attention_layernorm, gate/up/down (+ biases); norm; lm_head unless
// tied), with global shapes and the specs of default_partition_rules(family); boxes cover the
// whole tensor.
std::vector<ParamInfo> expected_parameters(const ModelConfig& config);

// Replaces the specs by those of user rules (--partition_rules), resolving their parts' sizes
// with `config`. The decoder accepts any use of the data axis (FSDP over one dim; not dim 0 of a
// fused tensor) but only the model-axis layout of the default rules (the tensor-parallel layers
// it implements, fused tensors split part by part); Decoder's constructor checks that.
void apply_partition_rules(std::vector<ParamInfo>& infos, const PartitionRules& rules,
                           const ModelConfig& config);

// Sets each info's box for this rank of `mesh` (shard_box; shard_pieces for fused tensors); a
// dim (or part) that does not divide by its axis size is an error naming the parameter and the
// dim.
void shard_parameters(std::vector<ParamInfo>& infos, const Mesh& mesh);

// An ordered set of tensors, one per parameter, each holding this rank's box. Parameters are
// stored as F32 or BF16 (DecoderOptions::weight_dtype); gradients are always F32 and use a
// ParameterSet of the same layout (zeros_like). The tensors live on one device: made on the host
// (loaded, initialised), uploaded once (to_device) by the decoder, read back (to_device(kCpu))
// by whatever writes them to files.
class ParameterSet {
 public:
  ParameterSet() = default;
  explicit ParameterSet(std::vector<ParamInfo> infos);      // zero-filled local F32 tensors
  ParameterSet(std::vector<ParamInfo> infos, DType dtype);  // zero-filled, F32 or BF16

  size_t size() const { return infos_.size(); }
  const ParamInfo& info(size_t i) const { return infos_.at(i); }
  const std::vector<ParamInfo>& infos() const { return infos_; }
  Tensor& tensor(size_t i) { return tensors_.at(i); }
  const Tensor& tensor(size_t i) const { return tensors_.at(i); }
  std::optional<size_t> find(std::string_view name) const;
  Tensor& at(std::string_view name);  // throws naming the parameter
  const Tensor& at(std::string_view name) const;

  // Same infos, zero F32 tensors on the same device whatever the dtype of this set (the
  // gradient buffers of loss_and_grad and the optimizer are always fp32).
  ParameterSet zeros_like() const;
  void fill_zero();
  // Converts every tensor to `dtype` (F32 or BF16) in place, on its device: widening is exact,
  // narrowing rounds to nearest even (Tensor::to, Backend::copy). Tensors already of that dtype
  // are kept as they are (no copy; other holders of their storage still share it).
  void convert(DType dtype);
  // The device of the tensors (kCpu for an empty set).
  Device device() const;
  // A copy of the set on `device` (Backend::copy of every tensor, same dtypes; new storage even
  // where the device is the same): uploads a host set, reads a device set back to the host.
  ParameterSet to_device(Device device) const;
  size_t nbytes() const;  // bytes of all local tensors

 private:
  std::vector<ParamInfo> infos_;
  std::vector<Tensor> tensors_;
};

// Checks a folder's tensor names and shapes against `expected`: every expected tensor present
// with its global shape, nothing unexpected (tolerated: lm_head.weight of a tied model and
// rotary inv_freq buffers, which transformers ignores too). The error lists every missing,
// unexpected and mis-shaped tensor. `shape_of` returns the stored shape of a name.
class HfWeights;
void validate_weight_names(const std::vector<ParamInfo>& expected, const HfWeights& weights);

// Reads this rank's box of every parameter, stored as `dtype` (F32 or BF16; the file's
// bf16/f16/f32 values are converted through fp32, one tensor at a time).
ParameterSet load_parameters(const std::vector<ParamInfo>& infos, const HfWeights& weights,
                             DType dtype = DType::kF32);

// Random init as transformers' _init_weights: Linear and Embedding weights ~ normal(0,
// initializer_range), biases 0, RMSNorm weights 1 (gemma: 0, it scales by 1 + w), the
// pad_token_id row of embed_tokens 0. Element e of parameter `name` is a pure function of
// (seed, name, e) (see docs/model.md), so every rank can draw its own box. Drawn in fp32 and
// stored as `dtype` (F32 or BF16, rounded one tensor at a time).
ParameterSet init_parameters(const ModelConfig& config, const std::vector<ParamInfo>& infos,
                             uint64_t seed, DType dtype = DType::kF32);

// ---------------------------------------------------------------------------------------------
// The decoder

struct DecoderOptions {
  bool recompute = false;         // keep only each block's input; recompute the rest in backward
  int64_t head_chunk_rows = 256;  // rows of logits computed at a time in the LM head
  // How parameters are stored (F32 or BF16; --bf16_model_weights). Each layer's weights are
  // converted to the compute dtype (and gathered over data) just before use and released after;
  // gradients are fp32. With fp32 compute a bf16 decoder computes exactly what an fp32 decoder
  // does whose weights were rounded to bf16.
  DType weight_dtype = DType::kF32;
  // The dtype of the linear layers' inputs (--bf16): F32, or BF16 for bf16 GEMMs with fp32
  // accumulation (mixed precision: norms, softmax, cross-entropy, RoPE, the residual stream,
  // gradients and the optimizer stay fp32; docs/model.md).
  DType compute_dtype = DType::kF32;
  // The backend that runs the ops and holds the parameters, activations and gradients (--device;
  // docs/kernels.md "Devices").
  Device device = Device::kCpu;
  // Run FSDP gathers and gradient reduce-scatters over the data axis on a communication thread,
  // behind the layers' compute (--overlap_comm; docs/multihost.md). The same numbers either way.
  bool overlap_comm = true;
};

struct LossResult {
  double nll_sum = 0;  // sum of NLL over counted targets, all ranks (all-reduced over data)
  double loss = 0;     // nll_sum / token_count
  std::vector<double> nll_per_row;      // (B) this rank's rows: sum of NLL of counted targets
  std::vector<int64_t> tokens_per_row;  // (B) counted targets per row
};

class Decoder {
 public:
  // `mesh` must outlive the decoder. `params` must have the layout of
  // shard_parameters(expected_parameters(config), mesh); they are converted to
  // options.weight_dtype (ParameterSet::convert) and, when options.device is not where they
  // are, copied there once (ParameterSet::to_device): params() then lives on options.device.
  Decoder(ModelConfig config, const Mesh& mesh, ParameterSet params, DecoderOptions options = {});
  ~Decoder();
  Decoder(Decoder&&) noexcept;
  Decoder& operator=(Decoder&&) noexcept;

  const ModelConfig& config() const { return config_; }
  const DecoderOptions& options() const { return options_; }
  // A different weight_dtype converts the stored parameters (ParameterSet::convert).
  void set_options(const DecoderOptions& options);
  ParameterSet& params() { return params_; }
  const ParameterSet& params() const { return params_; }
  const Mesh& mesh() const { return *mesh_; }

  // Loss = (sum of NLL over targets != TokenBatch::kIgnore) / token_count. token_count is the
  // global number of counted targets (over data ranks and accumulation steps).
  LossResult loss(const TokenBatch& batch, double token_count);
  // Same, and grads += d loss / d params (grads has this decoder's parameter layout).
  LossResult loss_and_grad(const TokenBatch& batch, double token_count, ParameterSet& grads);
  // Full-vocabulary logits (B, T, V) of this rank's rows, on the host (for tests and scoring).
  Tensor logits(const TokenBatch& batch);

  // Low-rank adapters (LoRA, magix/lora.hpp) on some of the layers' linear weights: for the
  // weight "X.weight", "X.lora_A.weight" (r, in) and "X.lora_B.weight" (out, r), F32, sharded as
  // lora_adapter_infos gives (A's in-dim as the weight's, B's out-dim as the weight's). Every
  // call then computes y = W·x + scale · B·(A·x) for them, with W as stored (never merged).
  // Replaces the adapters set before; an empty set removes them. Errors: an adapter without its
  // weight or its pair, shapes or boxes that do not match the weight.
  void set_adapters(ParameterSet adapters, double scale);
  ParameterSet& adapters() { return adapters_; }
  const ParameterSet& adapters() const { return adapters_; }
  // Dropout on the adapters' inputs in the next loss_and_adapter_grad calls (PEFT's
  // lora_dropout; never in loss or logits): probability p, the step's key, and the global index
  // of this rank's first row in the step's batch (data ranks hold consecutive rows). The mask of
  // an input element is a pure function of (key, layer, adapted layer, global token, global
  // feature): the same on every mesh (Backend::dropout, docs/lora.md).
  void set_adapter_dropout(double p, uint64_t key, int64_t first_row);
  // The parameters frozen: adapter_grads (the adapters' layout) += d loss / d adapters, and no
  // parameter gradient is computed at all (no dW GEMM, no gradient collective, no buffer).
  LossResult loss_and_adapter_grad(const TokenBatch& batch, double token_count,
                                   ParameterSet& adapter_grads);

 private:
  friend class DecoderStep;
  struct State;
  ModelConfig config_;
  const Mesh* mesh_;
  ParameterSet params_;
  DecoderOptions options_;
  ParameterSet adapters_;
  double adapter_scale_ = 1;
  double dropout_p_ = 0;
  uint64_t dropout_key_ = 0;
  int64_t dropout_first_row_ = 0;
  std::unique_ptr<State> state_;
};

// An HF folder or hub name (resolve_model_dir) -> config + this rank's parameter shards, placed
// by `rules` (null: default_partition_rules of the family), stored as options.weight_dtype.
Decoder load_decoder(const std::string& name_or_path, const Mesh& mesh, DecoderOptions options = {},
                     const PartitionRules* rules = nullptr);

// The HF-format inputs of a batch of token rows: right-padded rows of `ids` (each at least one
// token), key_valid 1 on real tokens, positions 0..T-1, targets[t] = ids[t + 1] on real tokens
// (kIgnore at the last real token and on padding) — the labels = input_ids convention of
// transformers' causal LM loss.
TokenBatch make_causal_batch(const std::vector<std::vector<int32_t>>& ids, int32_t pad_id = 0);

// A reproducible global batch of `rows` random sequences of `len` tokens in [0, vocab) (a 64-bit
// LCG started at `seed`), as make_causal_batch makes it, of which this returns data rank
// `data_rank`'s contiguous slice of rows (rows must divide by data_size). For examples and
// benchmarks.
TokenBatch random_causal_batch(int64_t vocab, int64_t rows, int64_t len, uint64_t seed,
                               int data_rank, int data_size);

}  // namespace magix
