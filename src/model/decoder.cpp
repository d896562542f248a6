// The whole decoder: vocab-parallel embedding -> blocks -> final norm -> chunked LM head with a
// staged (vocab-parallel) cross-entropy; the backward pass in reverse. Weights are materialised
// one layer at a time (converted to the compute dtype, FSDP-gathered over data: ParamStream)
// just before use and released after; in backward a layer's gradients go to their shards right
// after its backward pass. Every numeric step is an op of the backend.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "backends/backend.hpp"
#include "block.hpp"
#include "magix/error.hpp"
#include "magix/hash.hpp"
#include "magix/model.hpp"
#include "model/layout.hpp"
#include "shard/param_stream.hpp"
#include "shard/shard_ops.hpp"

namespace magix {
namespace {

using model::all_reduce;
using model::kNoParam;

void check_compute_dtype(const DecoderOptions& o) {
  MAGIX_CHECK(o.compute_dtype == DType::kF32 || o.compute_dtype == DType::kBF16,
              "the decoder computes in F32 or BF16, not {}", dtype_name(o.compute_dtype));
}

// Checks a batch from the data loader (user data: errors, not asserts).
void check_batch(const TokenBatch& b, int64_t vocab) {
  const size_t n = static_cast<size_t>(b.batch * b.seq);
  MAGIX_CHECK(b.batch > 0 && b.seq > 0, "empty batch ({} x {})", b.batch, b.seq);
  MAGIX_CHECK(b.input_ids.size() == n && b.targets.size() == n,
              "batch arrays must hold B*T = {} entries (input_ids {}, targets {})", n,
              b.input_ids.size(), b.targets.size());
  MAGIX_CHECK(b.key_valid.empty() || b.key_valid.size() == n, "key_valid must be empty or B*T");
  MAGIX_CHECK(b.positions.empty() || b.positions.size() == n, "positions must be empty or B*T");
  MAGIX_CHECK(b.segments.empty() || b.segments.size() == n, "segments must be empty or B*T");
  for (size_t i = 0; i < n; ++i) {
    MAGIX_CHECK(b.input_ids[i] >= 0 && b.input_ids[i] < vocab,
                "token id {} at row {}, position {} is outside the vocabulary [0, {})",
                b.input_ids[i], i / b.seq, i % b.seq, vocab);
    MAGIX_CHECK(b.targets[i] == TokenBatch::kIgnore || (b.targets[i] >= 0 && b.targets[i] < vocab),
                "target {} at row {}, position {} is outside the vocabulary [0, {})", b.targets[i],
                i / b.seq, i % b.seq, vocab);
  }
}

// A host array as a backend tensor (I32 or F32).
template <class T>
Tensor upload(const Backend& ops, const std::vector<T>& v, DType dtype) {
  Tensor t = ops.empty({static_cast<int64_t>(v.size())}, dtype);
  if (!v.empty()) ops.copy(t, Tensor::view_of(const_cast<T*>(v.data()), t.shape(), dtype));
  return t;
}

// The bound on gradients in flight with overlap (ParamStream::set_overlap): two layers' whole
// fp32 gradients (layer l's reduce-scatters run while layer l - 1's backward pass computes and
// closes its own).
size_t max_pending_grad_bytes(const model::ModelLayout& layout, const ParamStream& stream,
                              const ParameterSet& params) {
  size_t layer_max = 0;
  for (const auto& idx : layout.layers) {
    size_t bytes = 0;
    for (const int k : idx) {
      if (k == kNoParam) continue;
      bytes += static_cast<size_t>(shape_numel(stream.used_shape(params, static_cast<size_t>(k)))) *
               sizeof(float);
    }
    layer_max = std::max(layer_max, bytes);
  }
  return 2 * layer_max;
}
}  // namespace

struct Decoder::State {
  const Backend* ops = nullptr;
  model::ModelLayout layout;
  ParamStream stream;
  Tensor inv_freq;        // (R/2)
  Tensor inv_freq_long;   // (R/2) longrope's past its original context, or undefined
  Tensor inv_freq_local;  // (R/2) of the sliding layers (gemma3_text), or undefined
  // Workspace for the current number of rows N and compute dtype (rebuilt when they change).
  int64_t N = -1;
  bool acts_per_layer = false;
  DType compute = DType::kF32;
  std::vector<Tensor> x;               // (L + 1) x (N, C): block inputs; x[L] = last output
  std::vector<model::BlockActs> acts;  // per layer, or one (recompute / no grad)
  model::BlockScratch scratch;
  Tensor xf, rstd_f, dx, dxf, tmp;  // (N, C) compute dtype, (N), (N, C) x3
  // The batch as backend tensors: (N) I32 each; segments undefined without packing; the rope
  // table (N, D) of its positions.
  Tensor ids, targets, positions, key_valid, segments, rope, rope_local;
  // LoRA (set_adapters): per parameter, the index of its lora_A in the adapters (its lora_B
  // follows), or kNoParam; the adapters' stream (B of a k/v weight per KV head like the weight).
  std::vector<int> lora_a;
  ParamStream lora_stream;
};

Decoder::Decoder(ModelConfig config, const Mesh& mesh, ParameterSet params, DecoderOptions options)
    : config_(std::move(config)),
      mesh_(&mesh),
      params_(std::move(params)),
      options_(options),
      state_(std::make_unique<State>()) {
  check_compute_dtype(options_);
  State& s = *state_;
  s.layout = model::make_layout(config_, mesh, params_);
  params_.convert(options_.weight_dtype);
  s.ops = &backend_for(options_.device);
  if (params_.size() > 0 && params_.device() != options_.device) {
    params_ = params_.to_device(options_.device);  // uploaded once
  }
  s.stream = ParamStream(mesh, *s.ops, s.layout.kv_rows, s.layout.kv);
  s.stream.set_overlap(options_.overlap_comm, max_pending_grad_bytes(s.layout, s.stream, params_));
  s.inv_freq = upload(*s.ops, s.layout.inv_freq, DType::kF32);
  if (!s.layout.inv_freq_long.empty()) {
    s.inv_freq_long = upload(*s.ops, s.layout.inv_freq_long, DType::kF32);
  }
  if (!s.layout.inv_freq_local.empty()) {
    s.inv_freq_local = upload(*s.ops, s.layout.inv_freq_local, DType::kF32);
  }
}

void Decoder::set_options(const DecoderOptions& options) {
  check_compute_dtype(options);
  MAGIX_CHECK(options.device == options_.device,
              "set_options cannot move a decoder to another device");
  if (options.weight_dtype != options_.weight_dtype) params_.convert(options.weight_dtype);
  options_ = options;
  state_->stream.set_overlap(options_.overlap_comm,
                             max_pending_grad_bytes(state_->layout, state_->stream, params_));
}

void Decoder::set_adapters(ParameterSet adapters, double scale) {
  State& s = *state_;
  std::vector<int> lora_a(params_.size(), kNoParam);
  std::vector<char> kv_rows(adapters.size(), 0);
  const std::string a_suffix = ".lora_A.weight";
  MAGIX_CHECK(adapters.size() % 2 == 0, "LoRA adapters: {} tensors, expected pairs (A, B)",
              adapters.size());
  for (size_t k = 0; k < adapters.size(); k += 2) {
    const ParamInfo& a = adapters.info(k);
    const ParamInfo& b = adapters.info(k + 1);
    MAGIX_CHECK(a.name.size() > a_suffix.size() && a.name.ends_with(a_suffix),
                "LoRA adapter {} ('{}') is not a lora_A", k, a.name);
    const std::string stem = a.name.substr(0, a.name.size() - a_suffix.size());
    MAGIX_CHECK(b.name == stem + ".lora_B.weight",
                "LoRA adapter '{}.lora_B.weight' must follow '{}'", stem, a.name);
    const std::optional<size_t> wi = params_.find(stem + ".weight");
    MAGIX_CHECK(wi.has_value(), "LoRA adapter '{}' has no weight '{}.weight' in the model", a.name,
                stem);
    bool linear = false;
    for (const auto& idx : s.layout.layers) {
      for (int p = 0; p < model::kNumLayerParams; ++p) {
        linear = linear || (idx[p] == static_cast<int>(*wi) &&
                            model::is_linear_weight(static_cast<model::LayerParam>(p)));
      }
    }
    MAGIX_CHECK(linear, "LoRA adapter '{}': '{}.weight' is not a linear weight of a layer", a.name,
                stem);
    const ParamInfo& w = params_.info(*wi);
    MAGIX_CHECK(
        a.global_shape.size() == 2 && b.global_shape.size() == 2 &&
            a.global_shape[1] == w.global_shape[1] && b.global_shape[0] == w.global_shape[0] &&
            a.global_shape[0] == b.global_shape[1],
        "LoRA adapters of '{}' {}: lora_A {} and lora_B {} must be [r, in] and [out, r]", w.name,
        shape_str(w.global_shape), shape_str(a.global_shape), shape_str(b.global_shape));
    MAGIX_CHECK(a.spec.axis(1) == w.spec.axis(1) && !a.spec.axis(0) &&
                    b.spec.axis(0) == w.spec.axis(0) && !b.spec.axis(1) &&
                    a.box_extent[1] == w.box_extent[1] && a.box_start[1] == w.box_start[1] &&
                    b.box_extent[0] == w.box_extent[0] && b.box_start[0] == w.box_start[0] &&
                    a.box_extent[0] == a.global_shape[0] && b.box_extent[1] == b.global_shape[1],
                "LoRA adapters of '{}' are not sharded like the weight (its box {} at {})", w.name,
                shape_str(w.box_extent), shape_str(w.box_start));
    MAGIX_CHECK(
        adapters.tensor(k).dtype() == DType::kF32 && adapters.tensor(k + 1).dtype() == DType::kF32,
        "LoRA adapters of '{}' must be F32", w.name);
    MAGIX_CHECK(lora_a[*wi] == kNoParam, "two LoRA adapters for '{}'", w.name);
    lora_a[*wi] = static_cast<int>(k);
    kv_rows[k + 1] = s.layout.kv_rows[*wi];  // B's rows are the weight's rows
  }
  MAGIX_CHECK(std::isfinite(scale), "LoRA scale must be finite (got {})", scale);
  if (adapters.size() > 0 && adapters.device() != options_.device) {
    adapters = adapters.to_device(options_.device);  // uploaded once, as the parameters
  }
  adapters_ = std::move(adapters);
  adapter_scale_ = scale;
  s.lora_a = std::move(lora_a);
  s.lora_stream = ParamStream(*mesh_, *s.ops, std::move(kv_rows), s.layout.kv);
}

void Decoder::set_adapter_dropout(double p, uint64_t key, int64_t first_row) {
  MAGIX_CHECK(p >= 0 && p < 1, "LoRA dropout must be in [0, 1), got {}", p);
  MAGIX_CHECK(first_row >= 0, "LoRA dropout: first row {} < 0", first_row);
  dropout_p_ = p;
  dropout_key_ = key;
  dropout_first_row_ = first_row;
}

Decoder::~Decoder() = default;
Decoder::Decoder(Decoder&&) noexcept = default;
Decoder& Decoder::operator=(Decoder&&) noexcept = default;

// The pieces of a step, shared by loss, loss_and_grad and logits.
class DecoderStep {
 public:
  DecoderStep(const ModelConfig& c, const Mesh& mesh, ParameterSet& params,
              const ParameterSet& adapters, float adapter_scale, const DecoderOptions& opt,
              Decoder::State& s, const TokenBatch& b, bool grad)
      : c_(c),
        mesh_(mesh),
        params_(params),
        adapters_(adapters),
        adapter_scale_(adapter_scale),
        opt_(opt),
        s_(s),
        L_(s.layout),
        ops_(*s.ops),
        b_(b),
        grad_(grad) {
    check_batch(b, c.vocab_size);
    s_.stream.finish();  // nothing left over from a step that failed
    prepare_workspace();
  }
  DecoderStep(const DecoderStep&) = delete;
  DecoderStep& operator=(const DecoderStep&) = delete;

  // x[L] <- blocks(embedding(ids)); keeps what the backward pass needs.
  void forward() {
    prefetch_layer(0);  // gathered while the embedding's own gather and lookup run
    {
      // A BF16 table is looked up as stored (rows widened by the op), never widened whole.
      const Tensor table = materialize(
          L_.embed, s_.stream.unconverted_dtype(params_, static_cast<size_t>(L_.embed)));
      ops_.embedding_forward(s_.x[0], s_.ids, table, L_.v0, c_.embed_scale);
    }
    all_reduce(mesh_.model(), s_.x[0], ReduceOp::kSum);  // vocab-parallel rows
    const model::BlockContext ctx = context();
    for (int l = 0; l < c_.num_layers; ++l) {
      const model::BlockWeights w = layer_weights(l);
      // Layer l + 1's gather (the LM head's after the last layer) runs while layer l computes.
      if (l + 1 < c_.num_layers) {
        prefetch_layer(l + 1);
      } else {
        s_.stream.prefetch(params_, static_cast<size_t>(L_.head));
      }
      const model::BlockAdapters lora = layer_adapters(l);
      model::block_forward(s_.x[l + 1], s_.x[l], w, acts(l), dims(l), ctx, nullptr,
                           lora.any() ? &lora : nullptr);
    }
    const Tensor norm = materialize(L_.norm, DType::kF32);
    ops_.rmsnorm_forward(s_.xf, s_.rstd_f, s_.x[c_.num_layers], norm, c_.rms_norm_eps,
                         c_.norm_offset);
  }

  // LM head + cross-entropy in row chunks; with grad, also d xf and d head weight (whose
  // buffer stays open until the embedding's backward when the two are tied).
  LossResult head(double token_count) {
    const int64_t N = b_.batch * b_.seq, V = L_.V;
    const int64_t R = std::max<int64_t>(1, opt_.head_chunk_rows);
    LossResult res;
    res.nll_per_row.assign(static_cast<size_t>(b_.batch), 0.0);
    res.tokens_per_row.assign(static_cast<size_t>(b_.batch), 0);
    const int64_t R0 = std::min(R, N);
    // The head's output chunk: F32, or BF16 in bf16 mixed precision (as autocast's linear layers;
    // the cross-entropy then runs in place on it, and its gradient is the backward GEMM's input).
    Tensor logits = ops_.empty({R0, V}, s_.compute);
    Tensor row_max = ops_.empty({R0}, DType::kF32), stats = ops_.empty({2 * R0}, DType::kF32);
    Tensor losses = ops_.empty({R0}, DType::kF32);
    // Soft-capped logits (final_logit_softcapping): the backward pass needs them beside their
    // gradient.
    const float cap = c_.final_softcap;
    Tensor dlogits = cap > 0 && grad_ ? ops_.empty({R0, V}, s_.compute) : logits;
    const float dl = static_cast<float>(1.0 / token_count);
    const Tensor w = materialize(L_.head, s_.compute);
    if (grad_) prefetch_layer(c_.num_layers - 1);  // the backward pass's first layer
    if (grad_) {
      ops_.fill_zero(s_.dxf);
      if (grads_) head_grad_ = s_.stream.open_grad(*grads_, static_cast<size_t>(L_.head));
    }
    for (int64_t r0 = 0; r0 < N; r0 += R) {
      const int64_t rows = std::min(R, N - r0);
      const Tensor tgt = s_.targets.rows(r0, rows);
      const Tensor xf = s_.xf.rows(r0, rows);
      Tensor lg = logits.rows(0, rows), mx = row_max.rows(0, rows), st = stats.rows(0, 2 * rows);
      Tensor sumexp = st.rows(0, rows), tlogit = st.rows(rows, rows), loss = losses.rows(0, rows);
      ops_.matmul_forward(lg, xf, w, nullptr);
      if (cap > 0) ops_.softcap_forward(lg, cap);
      ops_.cross_entropy_max(mx, lg);
      all_reduce(mesh_.model(), mx, ReduceOp::kMax);
      ops_.cross_entropy_sumexp(sumexp, tlogit, lg, mx, tgt, L_.v0);
      all_reduce(mesh_.model(), st, ReduceOp::kSum);
      ops_.cross_entropy_loss(loss, mx, sumexp, tlogit, tgt);
      const float* lv = host_floats(loss);
      for (int64_t i = 0; i < rows; ++i) {
        if (b_.targets[static_cast<size_t>(r0 + i)] == TokenBatch::kIgnore) continue;
        const size_t row = static_cast<size_t>((r0 + i) / b_.seq);
        res.nll_per_row[row] += lv[i];
        res.tokens_per_row[row] += 1;
      }
      if (!grad_) continue;
      Tensor dlg = dlogits.rows(0, rows);
      ops_.cross_entropy_backward(dlg, lg, mx, sumexp, tgt, dl, L_.v0);
      if (cap > 0) ops_.softcap_backward(dlg, lg, cap);
      Tensor dxf = s_.dxf.rows(r0, rows);
      ops_.matmul_backward(&dxf, grads_ ? &head_grad_ : nullptr, nullptr, dlg, xf, w);
    }
    if (grad_ && grads_ && L_.head != L_.embed) close_grad(L_.head, head_grad_);
    for (double v : res.nll_per_row) res.nll_sum += v;
    all_reduce_double(res.nll_sum);
    res.loss = res.nll_sum / token_count;
    return res;
  }

  // From d xf back to the parameters; then gradients go to their shards.
  void backward() {
    all_reduce(mesh_.model(), s_.dxf, ReduceOp::kSum);  // vocab-parallel
    ops_.fill_zero(s_.dx);
    {
      const Tensor norm = materialize(L_.norm, DType::kF32);
      Tensor g = grads_ ? s_.stream.open_grad(*grads_, static_cast<size_t>(L_.norm)) : Tensor();
      ops_.rmsnorm_backward(s_.dx, grads_ ? &g : nullptr, s_.dxf, s_.x[c_.num_layers], norm,
                            s_.rstd_f, c_.norm_offset);
      if (grads_) close_grad(L_.norm, g);
    }
    const model::BlockContext ctx = context();
    for (int l = static_cast<int>(c_.num_layers) - 1; l >= 0; --l) {
      const model::BlockDims d = dims(l);
      // The layer's weights again (gathered anew: ZeRO-3 keeps none between its uses).
      const model::BlockWeights w = layer_weights(l);
      if (l > 0) prefetch_layer(l - 1);  // gathered while layer l's backward runs
      model::BlockAdapters lora = layer_adapters(l);
      model::BlockAdapters* lp = lora.any() ? &lora : nullptr;
      model::BlockGrads g = open_layer_grads(l);
      open_adapter_grads(l, lora);
      if (!s_.acts_per_layer) {  // recompute this block's activations from its input
        model::block_forward(s_.tmp, s_.x[l], w, acts(l), d, ctx, nullptr, lp);
      }
      model::block_backward(s_.dx, s_.x[l], w, g, acts(l), s_.scratch, d, ctx, lp);
      close_layer_grads(l, g);  // with overlap: reduce-scattered while layer l - 1's runs
      close_adapter_grads(l, lora);
    }
    if (!grads_) {  // frozen: the embedding gets no gradient
      s_.stream.finish();
      return;
    }
    // As torch's nn.Embedding(padding_idx=pad_token_id): the pad row gets no gradient from the
    // lookup (id -1 lies outside every shard).
    std::vector<int32_t> ids = b_.input_ids;
    if (c_.pad_token_id) std::replace(ids.begin(), ids.end(), int32_t(*c_.pad_token_id), -1);
    const Tensor lookup = upload(ops_, ids, DType::kI32);
    Tensor g = L_.embed == L_.head ? head_grad_  // tied: open since the LM head
                                   : s_.stream.open_grad(*grads_, static_cast<size_t>(L_.embed));
    ops_.embedding_backward(g, s_.dx, lookup, L_.v0, c_.embed_scale);
    close_grad(L_.embed, g);
    s_.stream.finish();  // every gradient on its shard
  }

  // Full-vocabulary logits (N, V_global) from xf, on the host.
  Tensor logits() {
    const int64_t N = b_.batch * b_.seq, V = L_.V;
    const int64_t M = mesh_.model_size();
    Tensor local = ops_.empty({N, V}, DType::kF32);
    ops_.matmul_forward(local, s_.xf, materialize(L_.head, s_.compute), nullptr);
    if (c_.final_softcap > 0) ops_.softcap_forward(local, c_.final_softcap);
    if (M == 1 && local.device() == Device::kCpu) return local.reshape({b_.batch, b_.seq, V});
    Tensor full = Tensor::empty({N, V * M});
    if (M == 1) {
      ops_.copy(full, local);
      return full.reshape({b_.batch, b_.seq, V});
    }
    model::gather_along_dim(mesh_.model(), local, 1, full);
    return full.reshape({b_.batch, b_.seq, V * M});
  }

  // Dropout on the adapters' inputs (Decoder::set_adapter_dropout).
  void set_dropout(double p, uint64_t key, int64_t first_row) {
    dropout_p_ = p;
    dropout_key_ = key;
    dropout_row0_ = first_row * b_.seq;  // the global index of this call's first token
  }

  // Adapter gradients of this step go to `grads` (+=; the adapters' layout).
  void bind_adapter_grads(ParameterSet& grads) {
    MAGIX_CHECK(grads.size() == adapters_.size(),
                "adapter gradient set has {} tensors, the "
                "adapters {}",
                grads.size(), adapters_.size());
    for (size_t i = 0; i < adapters_.size(); ++i) {
      MAGIX_CHECK(grads.tensor(i).shape() == adapters_.tensor(i).shape() &&
                      grads.tensor(i).dtype() == DType::kF32,
                  "gradient of '{}' is {} {}, the adapter {} (gradients are F32)",
                  adapters_.info(i).name, dtype_name(grads.tensor(i).dtype()),
                  shape_str(grads.tensor(i).shape()), shape_str(adapters_.tensor(i).shape()));
    }
    adapter_grads_ = &grads;
  }

  // Gradients of this step go to `grads` (+=), one layer at a time during backward().
  void bind_grads(ParameterSet& grads) {
    for (size_t i = 0; i < params_.size(); ++i) {
      MAGIX_CHECK(grads.tensor(i).shape() == params_.tensor(i).shape() &&
                      grads.tensor(i).dtype() == DType::kF32,
                  "gradient of '{}' is {} {}, the parameter {} (gradients are F32)",
                  params_.info(i).name, dtype_name(grads.tensor(i).dtype()),
                  shape_str(grads.tensor(i).shape()), shape_str(params_.tensor(i).shape()));
    }
    grads_ = &grads;
  }

 private:
  model::BlockActs& acts(int l) { return s_.acts[s_.acts_per_layer ? l : 0]; }

  void all_reduce_double(double& v) {
    if (mesh_.data_size() > 1) mesh_.data().all_reduce(std::span<double>(&v, 1), ReduceOp::kSum);
  }

  // The host values of a small F32 tensor (row losses).
  const float* host_floats(const Tensor& t) {
    if (t.device() == Device::kCpu) return t.data<float>();
    host_ = Tensor({t.numel()}, DType::kF32);
    ops_.copy(host_, t);
    return host_.data<float>();
  }

  model::BlockDims dims(int l) const { return L_.dims(c_, l, b_.batch, b_.seq, s_.compute); }

  model::BlockContext context() const {
    model::BlockContext ctx;
    ctx.ops = &ops_;
    ctx.rope = &s_.rope;
    ctx.rope_local = s_.rope_local.defined() ? &s_.rope_local : nullptr;
    ctx.key_valid = &s_.key_valid;
    ctx.segment = s_.segments.defined() ? &s_.segments : nullptr;
    ctx.model_comm = &mesh_.model();
    return ctx;
  }

  void prepare_workspace() {
    const int64_t N = b_.batch * b_.seq, C = L_.C;
    const bool per_layer = grad_ && !opt_.recompute;
    const DType compute = opt_.compute_dtype;
    if (s_.N != N || s_.acts_per_layer != per_layer || s_.compute != compute) {
      s_.N = N;
      s_.acts_per_layer = per_layer;
      s_.compute = compute;
      const model::BlockDims d = dims(0);
      s_.x.assign(static_cast<size_t>(c_.num_layers + 1), Tensor());
      for (Tensor& t : s_.x) t = ops_.zeros({N, C}, DType::kF32);
      s_.acts.clear();
      const int64_t n_acts = per_layer ? c_.num_layers : 1;
      for (int64_t l = 0; l < n_acts; ++l) s_.acts.push_back(model::BlockActs::allocate(d, ops_));
      s_.scratch = model::BlockScratch::allocate(d, ops_);
      s_.xf = ops_.zeros({N, C}, compute);
      s_.rstd_f = ops_.zeros({N}, DType::kF32);
      s_.dx = ops_.zeros({N, C}, DType::kF32);
      s_.dxf = ops_.zeros({N, C}, DType::kF32);
      s_.tmp = ops_.zeros({N, C}, DType::kF32);
    }
    // Defaults of a batch without mask or positions: every key valid, positions 0..T-1.
    std::vector<int32_t> key_valid = b_.key_valid;
    if (key_valid.empty()) key_valid.assign(static_cast<size_t>(N), 1);
    std::vector<int32_t> positions = b_.positions;
    if (positions.empty()) {
      positions.resize(static_cast<size_t>(N));
      for (int64_t i = 0; i < N; ++i) positions[i] = static_cast<int32_t>(i % b_.seq);
    }
    s_.ids = upload(ops_, b_.input_ids, DType::kI32);
    s_.targets = upload(ops_, b_.targets, DType::kI32);
    s_.key_valid = upload(ops_, key_valid, DType::kI32);
    s_.positions = upload(ops_, positions, DType::kI32);
    s_.segments = b_.segments.empty() ? Tensor() : upload(ops_, b_.segments, DType::kI32);
    s_.rope = ops_.empty({N, L_.R}, DType::kF32);
    // longrope: the long factors when the batch's largest position + 1 passes the original
    // context, as transformers decides per forward (max(position_ids) + 1).
    const bool long_context =
        s_.inv_freq_long.defined() &&
        *std::max_element(positions.begin(), positions.end()) + int64_t{1} > L_.long_from;
    ops_.rope_table(s_.rope, s_.positions, long_context ? s_.inv_freq_long : s_.inv_freq);
    if (L_.rope_scale != 1.0f) ops_.scale(s_.rope, L_.rope_scale);
    if (s_.inv_freq_local.defined()) {
      s_.rope_local = ops_.empty({N, L_.R}, DType::kF32);
      ops_.rope_table(s_.rope_local, s_.positions, s_.inv_freq_local);
      if (L_.rope_scale_local != 1.0f) ops_.scale(s_.rope_local, L_.rope_scale_local);
    }
  }

  // Starts gathering layer l's parameters in the background (ParamStream::prefetch; with
  // --overlap_comm).
  void prefetch_layer(int l) const {
    for (int k : L_.layers[static_cast<size_t>(l)]) {
      if (k != kNoParam) s_.stream.prefetch(params_, static_cast<size_t>(k));
    }
  }

  // Parameter k as the layers use it (ParamStream::gather).
  Tensor materialize(int k, DType dtype) const {
    return s_.stream.gather(params_, static_cast<size_t>(k), dtype);
  }

  // Layer l's weights: linear weights in the compute dtype, norms and biases F32.
  model::BlockWeights layer_weights(int l) const {
    model::BlockWeights w;
    const auto& idx = L_.layers[static_cast<size_t>(l)];
    for (int p = 0; p < model::kNumLayerParams; ++p) {
      if (idx[p] == kNoParam) continue;
      const auto lp = static_cast<model::LayerParam>(p);
      w[p] = materialize(idx[p], model::is_linear_weight(lp) ? s_.compute : DType::kF32);
    }
    L_.split_fused(w);
    return w;
  }

  // Layer l's adapters as used (gathered over data, a KV head's rows of B), F32.
  model::BlockAdapters layer_adapters(int l) const {
    model::BlockAdapters lora;
    lora.scale = adapter_scale_;
    if (adapters_.size() == 0) return lora;
    const auto& idx = L_.layers[static_cast<size_t>(l)];
    for (int p = 0; p < model::kNumLayerParams; ++p) {
      if (idx[p] == kNoParam || s_.lora_a[static_cast<size_t>(idx[p])] == kNoParam) continue;
      const auto k = static_cast<size_t>(s_.lora_a[static_cast<size_t>(idx[p])]);
      lora.a[p] = s_.lora_stream.gather(adapters_, k, DType::kF32);
      lora.b[p] = s_.lora_stream.gather(adapters_, k + 1, DType::kF32);
      // The layer input's global columns: the rank's slice where A's in-dim is split over model
      // (row-parallel layers), else whole (gathered over data).
      const ParamInfo& ai = adapters_.info(k);
      lora.cols[p] = ai.global_shape[1];
      lora.col0[p] = ai.spec.axis(1) == "model" ? ai.box_start[1] : 0;
    }
    split_fused_adapters(lora);
    if (dropout_p_ > 0) {
      lora.dropout = static_cast<float>(dropout_p_);
      lora.dropout_key = splitmix64(dropout_key_ ^ splitmix64(static_cast<uint64_t>(l)));
      lora.dropout_row0 = dropout_row0_;
    }
    return lora;
  }

  // A fused weight's adapter (PEFT adapts the fused module): its parts share A (and dA, and one
  // dropout mask), and B (dB) splits into the parts' rows like the weight.
  void split_fused_adapters(model::BlockAdapters& lora) const {
    for (const auto& [fused, parts] :
         {std::pair{model::kWqkv, std::vector{model::kWq, model::kWk, model::kWv}},
          std::pair{model::kWgu, std::vector{model::kWg, model::kWu}}}) {
      if (!lora.a[fused].defined()) continue;
      for (model::LayerParam p : parts) {
        lora.a[p] = lora.a[fused];
        lora.da[p] = lora.da[fused];
        lora.cols[p] = lora.cols[fused];
        lora.col0[p] = lora.col0[fused];
        lora.fused_input[p] = true;
      }
    }
    L_.split_fused(lora.b);
    L_.split_fused(lora.db);
  }

  // Whether adapter k's gradient is a partial sum over the model axis: A of a weight whose
  // out-dim is split over model (each rank's rows of dy), B of one whose in-dim is (each rank's
  // columns of x in A·x).
  bool adapter_grad_sums_over_model(size_t k) const {
    if (mesh_.model_size() == 1) return false;
    const ParamInfo& w = params_.info(weight_of_adapter(k));
    return w.spec.axis(k % 2 == 0 ? 0 : 1) == "model";
  }

  size_t weight_of_adapter(size_t k) const {
    const size_t a = k - k % 2;
    for (size_t i = 0; i < s_.lora_a.size(); ++i) {
      if (s_.lora_a[i] == static_cast<int>(a)) return i;
    }
    MAGIX_FAIL("LoRA adapter {} has no weight", k);
  }

  Tensor open_adapter_grad(size_t k) const {
    if (!adapter_grad_sums_over_model(k)) return s_.lora_stream.open_grad(*adapter_grads_, k);
    return ops_.zeros(s_.lora_stream.used_shape(*adapter_grads_, k), DType::kF32);
  }

  void open_adapter_grads(int l, model::BlockAdapters& lora) {
    if (!adapter_grads_) return;
    const auto& idx = L_.layers[static_cast<size_t>(l)];
    for (int p = 0; p < model::kNumLayerParams; ++p) {
      if (!has_adapter(idx[p])) continue;
      const auto k = static_cast<size_t>(s_.lora_a[static_cast<size_t>(idx[p])]);
      lora.da[p] = open_adapter_grad(k);
      lora.db[p] = open_adapter_grad(k + 1);
    }
    split_fused_adapters(lora);
  }

  // Whether parameter k (an index of a layer's table, or kNoParam) has an adapter.
  bool has_adapter(int k) const {
    return k != kNoParam && s_.lora_a[static_cast<size_t>(k)] != kNoParam;
  }

  // Adapter gradients to their shards: summed over model where partial (see above), then as
  // any parameter's (ParamStream::close_grad: over data, KV head rows).
  void close_adapter_grad(size_t k, Tensor& g) {
    if (adapter_grad_sums_over_model(k)) {
      all_reduce(mesh_.model(), g, ReduceOp::kSum);
      if (mesh_.data_size() == 1) {  // (never a KV head's B) close_grad expects the shard
        ops_.add(adapter_grads_->tensor(k), g);
        return;
      }
    }
    s_.lora_stream.close_grad(*adapter_grads_, k, g);
  }

  void close_adapter_grads(int l, model::BlockAdapters& lora) {
    if (!adapter_grads_) return;
    const auto& idx = L_.layers[static_cast<size_t>(l)];
    for (int p = 0; p < model::kNumLayerParams; ++p) {
      if (!has_adapter(idx[p])) continue;
      const auto k = static_cast<size_t>(s_.lora_a[static_cast<size_t>(idx[p])]);
      close_adapter_grad(k, lora.da[p]);
      close_adapter_grad(k + 1, lora.db[p]);
    }
  }

  model::BlockGrads open_layer_grads(int l) {
    model::BlockGrads g;
    if (!grads_) return g;  // frozen
    const auto& idx = L_.layers[static_cast<size_t>(l)];
    for (int p = 0; p < model::kNumLayerParams; ++p) {
      if (idx[p] != kNoParam) g[p] = s_.stream.open_grad(*grads_, static_cast<size_t>(idx[p]));
    }
    L_.split_fused(g);  // the parts' gradients accumulate into the fused buffer
    return g;
  }

  void close_layer_grads(int l, const model::BlockGrads& g) {
    if (!grads_) return;
    const auto& idx = L_.layers[static_cast<size_t>(l)];
    for (int p = 0; p < model::kNumLayerParams; ++p) {
      if (idx[p] != kNoParam) close_grad(idx[p], g[p]);
    }
  }

  void close_grad(int k, const Tensor& g) {
    s_.stream.close_grad(*grads_, static_cast<size_t>(k), g);
  }

  const ModelConfig& c_;
  const Mesh& mesh_;
  ParameterSet& params_;
  const ParameterSet& adapters_;
  float adapter_scale_;
  const DecoderOptions& opt_;
  Decoder::State& s_;
  const model::ModelLayout& L_;
  const Backend& ops_;
  const TokenBatch& b_;
  bool grad_;
  ParameterSet* grads_ = nullptr;          // bound by bind_grads; null: parameters frozen
  ParameterSet* adapter_grads_ = nullptr;  // bound by bind_adapter_grads
  Tensor head_grad_;                       // the LM head's gradient buffer while open
  double dropout_p_ = 0;                   // adapter dropout (set_dropout)
  uint64_t dropout_key_ = 0;
  int64_t dropout_row0_ = 0;
  Tensor host_;  // host copy of row losses (non-host backends)
};

LossResult Decoder::loss(const TokenBatch& batch, double token_count) {
  MAGIX_CHECK(token_count > 0, "token_count must be positive, got {}", token_count);
  DecoderStep step(config_, *mesh_, params_, adapters_, static_cast<float>(adapter_scale_),
                   options_, *state_, batch, /*grad=*/false);
  step.forward();
  return step.head(token_count);
}

LossResult Decoder::loss_and_grad(const TokenBatch& batch, double token_count,
                                  ParameterSet& grads) {
  MAGIX_CHECK(token_count > 0, "token_count must be positive, got {}", token_count);
  MAGIX_CHECK(grads.size() == params_.size(), "gradient set has {} tensors, the model {}",
              grads.size(), params_.size());
  DecoderStep step(config_, *mesh_, params_, adapters_, static_cast<float>(adapter_scale_),
                   options_, *state_, batch, /*grad=*/true);
  step.bind_grads(grads);
  step.forward();
  LossResult res = step.head(token_count);
  step.backward();
  return res;
}

LossResult Decoder::loss_and_adapter_grad(const TokenBatch& batch, double token_count,
                                          ParameterSet& adapter_grads) {
  MAGIX_CHECK(token_count > 0, "token_count must be positive, got {}", token_count);
  MAGIX_CHECK(adapters_.size() > 0, "loss_and_adapter_grad: the decoder has no adapters");
  DecoderStep step(config_, *mesh_, params_, adapters_, static_cast<float>(adapter_scale_),
                   options_, *state_, batch, /*grad=*/true);
  step.bind_adapter_grads(adapter_grads);
  if (dropout_p_ > 0) step.set_dropout(dropout_p_, dropout_key_, dropout_first_row_);
  step.forward();
  LossResult res = step.head(token_count);
  step.backward();
  return res;
}

Tensor Decoder::logits(const TokenBatch& batch) {
  DecoderStep step(config_, *mesh_, params_, adapters_, static_cast<float>(adapter_scale_),
                   options_, *state_, batch, /*grad=*/false);
  step.forward();
  return step.logits();
}

}  // namespace magix
