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
#include "magix/model.hpp"
#include "model/layout.hpp"
#include "shard/param_stream.hpp"
#include "shard/shard_ops.hpp"

namespace magix {
namespace {

using model::kNoParam;

void check_compute_dtype(const DecoderOptions& o) {
  MAGIX_CHECK(o.compute_dtype == DType::kF32 || o.compute_dtype == DType::kBF16,
              "the decoder computes in F32 or BF16, not {}", dtype_name(o.compute_dtype));
}

void all_reduce(Communicator& comm, Tensor& x, ReduceOp op) {
  if (comm.size() > 1) comm.all_reduce(x.span<float>(), op);
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

}  // namespace

struct Decoder::State {
  const Backend* ops = nullptr;
  model::ModelLayout layout;
  ParamStream stream;
  Tensor inv_freq;  // (D/2)
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
  Tensor ids, targets, positions, key_valid, segments, rope;
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
  s.stream = ParamStream(mesh, *s.ops, s.layout.kv_rows, s.layout.kv);
  s.inv_freq = upload(*s.ops, s.layout.inv_freq, DType::kF32);
}

void Decoder::set_options(const DecoderOptions& options) {
  check_compute_dtype(options);
  MAGIX_CHECK(options.device == options_.device,
              "set_options cannot move a decoder to another device");
  if (options.weight_dtype != options_.weight_dtype) params_.convert(options.weight_dtype);
  options_ = options;
}

Decoder::~Decoder() = default;
Decoder::Decoder(Decoder&&) noexcept = default;
Decoder& Decoder::operator=(Decoder&&) noexcept = default;

// The pieces of a step, shared by loss, loss_and_grad and logits.
class DecoderStep {
 public:
  DecoderStep(const ModelConfig& c, const Mesh& mesh, ParameterSet& params,
              const DecoderOptions& opt, Decoder::State& s, const TokenBatch& b, bool grad)
      : c_(c),
        mesh_(mesh),
        params_(params),
        opt_(opt),
        s_(s),
        L_(s.layout),
        ops_(*s.ops),
        b_(b),
        grad_(grad) {
    check_batch(b, c.vocab_size);
    prepare_workspace();
  }
  DecoderStep(const DecoderStep&) = delete;
  DecoderStep& operator=(const DecoderStep&) = delete;

  // x[L] <- blocks(embedding(ids)); keeps what the backward pass needs.
  void forward() {
    {
      const Tensor table = materialize(L_.embed, DType::kF32);
      ops_.embedding_forward(s_.x[0], s_.ids, table, L_.v0, c_.embed_scale);
    }
    all_reduce(mesh_.model(), s_.x[0], ReduceOp::kSum);  // vocab-parallel rows
    const model::BlockContext ctx = context();
    for (int l = 0; l < c_.num_layers; ++l) {
      const model::BlockWeights w = layer_weights(l);
      model::block_forward(s_.x[l + 1], s_.x[l], w, acts(l), dims(l), ctx);
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
    const float dl = static_cast<float>(1.0 / token_count);
    const Tensor w = materialize(L_.head, s_.compute);
    if (grad_) {
      ops_.fill_zero(s_.dxf);
      head_grad_ = s_.stream.open_grad(*grads_, static_cast<size_t>(L_.head));
    }
    for (int64_t r0 = 0; r0 < N; r0 += R) {
      const int64_t rows = std::min(R, N - r0);
      const Tensor tgt = s_.targets.rows(r0, rows);
      const Tensor xf = s_.xf.rows(r0, rows);
      Tensor lg = logits.rows(0, rows), mx = row_max.rows(0, rows), st = stats.rows(0, 2 * rows);
      Tensor sumexp = st.rows(0, rows), tlogit = st.rows(rows, rows), loss = losses.rows(0, rows);
      ops_.matmul_forward(lg, xf, w, nullptr);
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
      ops_.cross_entropy_backward(lg, lg, mx, sumexp, tgt, dl, L_.v0);
      Tensor dxf = s_.dxf.rows(r0, rows);
      ops_.matmul_backward(&dxf, &head_grad_, nullptr, lg, xf, w);
    }
    if (grad_ && L_.head != L_.embed) close_grad(L_.head, head_grad_);
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
      Tensor g = s_.stream.open_grad(*grads_, static_cast<size_t>(L_.norm));
      ops_.rmsnorm_backward(s_.dx, &g, s_.dxf, s_.x[c_.num_layers], norm, s_.rstd_f,
                            c_.norm_offset);
      close_grad(L_.norm, g);
    }
    const model::BlockContext ctx = context();
    for (int l = static_cast<int>(c_.num_layers) - 1; l >= 0; --l) {
      const model::BlockDims d = dims(l);
      // The layer's weights again (gathered anew: ZeRO-3 keeps none between its uses).
      const model::BlockWeights w = layer_weights(l);
      model::BlockGrads g = open_layer_grads(l);
      if (!s_.acts_per_layer) {  // recompute this block's activations from its input
        model::block_forward(s_.tmp, s_.x[l], w, acts(l), d, ctx);
      }
      model::block_backward(s_.dx, s_.x[l], w, g, acts(l), s_.scratch, d, ctx);
      close_layer_grads(l, g);
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
  }

  // Full-vocabulary logits (N, V_global) from xf.
  Tensor logits() {
    const int64_t N = b_.batch * b_.seq, V = L_.V;
    const int64_t M = mesh_.model_size();
    Tensor local = ops_.empty({N, V}, DType::kF32);
    ops_.matmul_forward(local, s_.xf, materialize(L_.head, s_.compute), nullptr);
    if (M == 1) return local.reshape({b_.batch, b_.seq, V});
    Tensor full({N, V * M});
    model::gather_along_dim(mesh_.model(), local, 1, full);
    return full.reshape({b_.batch, b_.seq, V * M});
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
    s_.rope = ops_.empty({N, L_.D}, DType::kF32);
    ops_.rope_table(s_.rope, s_.positions, s_.inv_freq);
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
    return w;
  }

  model::BlockGrads open_layer_grads(int l) {
    model::BlockGrads g;
    const auto& idx = L_.layers[static_cast<size_t>(l)];
    for (int p = 0; p < model::kNumLayerParams; ++p) {
      if (idx[p] != kNoParam) g[p] = s_.stream.open_grad(*grads_, static_cast<size_t>(idx[p]));
    }
    return g;
  }

  void close_layer_grads(int l, const model::BlockGrads& g) {
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
  const DecoderOptions& opt_;
  Decoder::State& s_;
  const model::ModelLayout& L_;
  const Backend& ops_;
  const TokenBatch& b_;
  bool grad_;
  ParameterSet* grads_ = nullptr;  // bound by bind_grads
  Tensor head_grad_;               // the LM head's gradient buffer while open
  Tensor host_;                    // host copy of row losses (non-host backends)
};

LossResult Decoder::loss(const TokenBatch& batch, double token_count) {
  MAGIX_CHECK(token_count > 0, "token_count must be positive, got {}", token_count);
  DecoderStep step(config_, *mesh_, params_, options_, *state_, batch, /*grad=*/false);
  step.forward();
  return step.head(token_count);
}

LossResult Decoder::loss_and_grad(const TokenBatch& batch, double token_count,
                                  ParameterSet& grads) {
  MAGIX_CHECK(token_count > 0, "token_count must be positive, got {}", token_count);
  MAGIX_CHECK(grads.size() == params_.size(), "gradient set has {} tensors, the model {}",
              grads.size(), params_.size());
  DecoderStep step(config_, *mesh_, params_, options_, *state_, batch, /*grad=*/true);
  step.bind_grads(grads);
  step.forward();
  LossResult res = step.head(token_count);
  step.backward();
  return res;
}

Tensor Decoder::logits(const TokenBatch& batch) {
  DecoderStep step(config_, *mesh_, params_, options_, *state_, batch, /*grad=*/false);
  step.forward();
  return step.logits();
}

}  // namespace magix
