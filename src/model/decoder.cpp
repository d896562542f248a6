// The whole decoder: vocab-parallel embedding -> blocks -> final norm -> chunked LM head with a
// staged (vocab-parallel) cross-entropy; the backward pass in reverse. Weights are materialised
// one layer at a time (widened from bf16, FSDP-gathered over data) just before use and released
// after; in backward a layer's gradients go to their shards right after its backward pass.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "block.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/embedding.hpp"
#include "kernels/cpu/matmul.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/cpu/rope.hpp"
#include "magix/error.hpp"
#include "magix/model.hpp"
#include "shard_ops.hpp"

namespace magix {
namespace {

constexpr int kNone = -1;

// Indices into the ParameterSet of one layer's tensors (kNone where the config has none).
struct LayerIndex {
  int ln1, wq, bq, wk, bk, wv, bv, wo, bo, ln2, wg, bg, wu, bu, wd, bd;
  std::array<int, 16> all() const {
    return {ln1, wq, bq, wk, bk, wv, bv, wo, bo, ln2, wg, bg, wu, bu, wd, bd};
  }
};

int index_of(const ParameterSet& p, const std::string& name) {
  auto i = p.find(name);
  return i ? static_cast<int>(*i) : kNone;
}

// The data-sharded dim of a spec, or -1.
int data_dim(const PartitionSpec& spec) {
  for (size_t d = 0; d < spec.dims.size(); ++d) {
    if (spec.dims[d] == "data") return static_cast<int>(d);
  }
  return -1;
}

// The layers implement one tensor-parallel layout: the model axis of the default rules. The
// data axis may shard any one dim (FSDP gathers it whole before use). The model axis may be left
// out where a model axis of size 1 makes it moot (e.g. everything replicated: plain data
// parallelism); it may never stand on another dim.
void check_supported_spec(const ParamInfo& p, const PartitionSpec& default_spec,
                          int64_t model_size) {
  for (size_t d = 0; d < p.global_shape.size(); ++d) {
    const bool model = p.spec.axis(d) == "model";
    const bool want = default_spec.axis(d) == "model";
    MAGIX_CHECK(model == want || (!model && model_size == 1),
                "parameter '{}': partition spec {} is not supported by the decoder; the model "
                "axis must shard it as {} does (vocab / column-parallel weights (model, *), "
                "row-parallel weights (*, model), q/k/v/gate/up biases (model)); the data "
                "axis may shard any one dim",
                p.name, p.spec.str(), default_spec.str());
  }
}

void all_reduce(Communicator& comm, float* x, int64_t n, ReduceOp op) {
  if (comm.size() > 1) comm.all_reduce(std::span<float>(x, static_cast<size_t>(n)), op);
}

}  // namespace

struct Decoder::State {
  // Per parameter: the weight as used (fp32, this rank's model slice, gathered over data) and
  // its fp32 gradient buffer, defined only while materialised (one layer at a time, plus the
  // embedding / LM head around their use). full_w aliases the stored shard when it is fp32
  // and needs no gather; full_g aliases the gradient shard when the data axis has size 1.
  std::vector<Tensor> full_w, full_g;
  std::vector<LayerIndex> layers;
  int embed = kNone, norm = kNone, head = kNone;
  std::vector<float> inv_freq;                                  // (D/2)
  int64_t C = 0, I = 0, Hq = 0, Hkv = 0, D = 0, V = 0, v0 = 0;  // local sizes
  // KV heads replicated over the model axis (num_key_value_heads < M): kv_rep model ranks share
  // one KV head; this rank uses global KV head kv_head. kv_param marks the k/v weights and
  // biases, stored sharded by rows like any column-parallel weight, gathered whole over the
  // model axis before use (this rank keeps its head's D rows) and their gradients summed over
  // the model axis back to the shards (kv_rep == 1: none marked).
  int64_t kv_rep = 1, kv_head = 0;
  std::vector<char> kv_param;
  // Workspace for the current number of rows N (rebuilt when N changes).
  int64_t N = -1;
  bool acts_per_layer = false;
  std::vector<Tensor> x;               // (L + 1) x (N, C): block inputs; x[L] = last output
  std::vector<model::BlockActs> acts;  // per layer, or one (recompute / no grad)
  model::BlockScratch scratch;
  Tensor xf, rstd_f, dx, dxf, tmp;  // (N, C), (N), (N, C) x3
  std::vector<int32_t> positions, key_valid;

  model::BlockWeights weights(int l) const;
  model::BlockGrads grads(int l);
};

model::BlockWeights Decoder::State::weights(int l) const {
  const LayerIndex& i = layers[static_cast<size_t>(l)];
  auto w = [&](int k) -> const float* { return k == kNone ? nullptr : full_w[k].data<float>(); };
  return {w(i.ln1), w(i.wq),  w(i.bq), w(i.wk), w(i.bk), w(i.wv), w(i.bv), w(i.wo),
          w(i.bo),  w(i.ln2), w(i.wg), w(i.bg), w(i.wu), w(i.bu), w(i.wd), w(i.bd)};
}

model::BlockGrads Decoder::State::grads(int l) {
  const LayerIndex& i = layers[static_cast<size_t>(l)];
  auto g = [&](int k) -> float* { return k == kNone ? nullptr : full_g[k].data<float>(); };
  return {g(i.ln1), g(i.wq),  g(i.bq), g(i.wk), g(i.bk), g(i.wv), g(i.bv), g(i.wo),
          g(i.bo),  g(i.ln2), g(i.wg), g(i.bg), g(i.wu), g(i.bu), g(i.wd), g(i.bd)};
}

Decoder::Decoder(ModelConfig config, const Mesh& mesh, ParameterSet params, DecoderOptions options)
    : config_(std::move(config)),
      mesh_(&mesh),
      params_(std::move(params)),
      options_(options),
      state_(std::make_unique<State>()) {
  const ModelConfig& c = config_;
  const int64_t M = mesh.model_size();
  // Tensor parallelism splits whole heads, MLP columns and vocabulary rows: name the first
  // parameter whose split the config does not allow.
  auto check_split = [&](const std::string& param, const char* field, int64_t n) {
    MAGIX_CHECK(n % M == 0,
                "parameter '{}' cannot be split over the model axis of size {}: {} ({}) must "
                "divide by it",
                param, M, field, n);
  };
  check_split("model.embed_tokens.weight", "vocab_size", c.vocab_size);
  check_split("model.layers.0.self_attn.q_proj.weight", "num_attention_heads", c.num_heads);
  // Fewer KV heads than model ranks: each KV head is replicated on M / num_key_value_heads
  // consecutive model ranks (those whose query heads use it).
  const bool kv_split = c.num_kv_heads % M == 0;
  MAGIX_CHECK(kv_split || M % c.num_kv_heads == 0,
              "parameter 'model.layers.0.self_attn.k_proj.weight' cannot be split over the model "
              "axis of size {}: num_key_value_heads ({}) must divide by it, or divide it (then "
              "each KV head is replicated)",
              M, c.num_kv_heads);
  check_split("model.layers.0.mlp.gate_proj.weight", "intermediate_size", c.intermediate_size);
  std::vector<ParamInfo> expected = expected_parameters(c);
  MAGIX_CHECK(expected.size() == params_.size(), "parameter set has {} tensors, the config {}",
              params_.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const ParamInfo& p = params_.info(i);
    check_supported_spec(p, expected[i].spec, M);
    MAGIX_CHECK(expected[i].name == p.name && expected[i].global_shape == p.global_shape &&
                    p.box_extent == params_.tensor(i).shape(),
                "parameter {} ('{}' {}) does not match the config's layout ('{}' {})", i, p.name,
                shape_str(params_.tensor(i).shape()), expected[i].name,
                shape_str(expected[i].global_shape));
  }
  params_.convert(options_.weight_dtype);
  State& s = *state_;
  s.C = c.hidden_size;
  s.I = c.intermediate_size / M;
  s.Hq = c.num_heads / M;
  s.Hkv = kv_split ? c.num_kv_heads / M : 1;
  s.kv_rep = kv_split ? 1 : M / c.num_kv_heads;
  s.kv_head = mesh.model_rank() / s.kv_rep;
  s.D = c.head_dim;
  s.V = c.vocab_size / M;
  s.v0 = mesh.model_rank() * s.V;
  s.inv_freq = cpu::rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    auto at = [&](const char* n) { return index_of(params_, p + n); };
    s.layers.push_back(
        {at("input_layernorm.weight"), at("self_attn.q_proj.weight"), at("self_attn.q_proj.bias"),
         at("self_attn.k_proj.weight"), at("self_attn.k_proj.bias"), at("self_attn.v_proj.weight"),
         at("self_attn.v_proj.bias"), at("self_attn.o_proj.weight"), at("self_attn.o_proj.bias"),
         at("post_attention_layernorm.weight"), at("mlp.gate_proj.weight"),
         at("mlp.gate_proj.bias"), at("mlp.up_proj.weight"), at("mlp.up_proj.bias"),
         at("mlp.down_proj.weight"), at("mlp.down_proj.bias")});
  }
  s.embed = index_of(params_, "model.embed_tokens.weight");
  s.norm = index_of(params_, "model.norm.weight");
  s.head = c.tie_word_embeddings ? s.embed : index_of(params_, "lm_head.weight");
  s.kv_param.assign(params_.size(), 0);
  if (s.kv_rep > 1) {
    for (const LayerIndex& i : s.layers) {
      for (int k : {i.wk, i.bk, i.wv, i.bv}) {
        if (k != kNone) s.kv_param[static_cast<size_t>(k)] = 1;
      }
    }
  }
}

void Decoder::set_options(const DecoderOptions& options) {
  if (options.weight_dtype != options_.weight_dtype) params_.convert(options.weight_dtype);
  options_ = options;
}

Decoder::~Decoder() = default;
Decoder::Decoder(Decoder&&) noexcept = default;
Decoder& Decoder::operator=(Decoder&&) noexcept = default;

namespace {

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

}  // namespace

// The pieces of a step, shared by loss, loss_and_grad and logits.
class DecoderStep {
 public:
  DecoderStep(const ModelConfig& c, const Mesh& mesh, ParameterSet& params,
              const DecoderOptions& opt, Decoder::State& s, const TokenBatch& b, bool grad)
      : c_(c), mesh_(mesh), params_(params), opt_(opt), s_(s), b_(b), grad_(grad) {
    check_batch(b, c.vocab_size);
    prepare_workspace();
    s_.full_w.assign(params_.size(), Tensor());
    s_.full_g.assign(params_.size(), Tensor());
  }
  // Drops what is still materialised (after an error too) and the aliases of the gradients.
  ~DecoderStep() {
    s_.full_w.clear();
    s_.full_g.clear();
  }
  DecoderStep(const DecoderStep&) = delete;
  DecoderStep& operator=(const DecoderStep&) = delete;

  // x[L] <- blocks(embedding(ids)); keeps what the backward pass needs.
  void forward() {
    const int64_t N = b_.batch * b_.seq;
    materialize(s_.embed);
    cpu::embedding_forward(x(0), b_.input_ids.data(), w(s_.embed), N, s_.C, s_.v0, s_.V,
                           c_.embed_scale);
    release(s_.embed);
    all_reduce(mesh_.model(), x(0), N * s_.C, ReduceOp::kSum);  // vocab-parallel rows
    for (int l = 0; l < c_.num_layers; ++l) {
      model::BlockDims d = dims(l);
      for (int k : layer(l)) materialize(k);
      model::block_forward(x(l + 1), x(l), s_.weights(l), acts(l), d);
      for (int k : layer(l)) release(k);
    }
    materialize(s_.norm);
    cpu::rmsnorm_forward(s_.xf.data<float>(), s_.rstd_f.data<float>(), x(c_.num_layers), w(s_.norm),
                         N, s_.C, c_.rms_norm_eps, c_.norm_offset);
    release(s_.norm);
  }

  // LM head + cross-entropy in row chunks; with grad, also d xf and d head weight (whose
  // buffer stays open until the embedding's backward when the two are tied).
  LossResult head(double token_count) {
    const int64_t N = b_.batch * b_.seq, C = s_.C, V = s_.V;
    const int64_t R = std::max<int64_t>(1, opt_.head_chunk_rows);
    LossResult res;
    res.nll_per_row.assign(static_cast<size_t>(b_.batch), 0.0);
    res.tokens_per_row.assign(static_cast<size_t>(b_.batch), 0);
    Tensor logits({std::min(R, N), V});
    std::vector<float> row_max(R), stats(2 * R), losses(R), dloss(R);
    const float dl = static_cast<float>(1.0 / token_count);
    materialize(s_.head);
    if (grad_) {
      s_.dxf.fill_zero();
      open_grad(s_.head);
    }
    for (int64_t r0 = 0; r0 < N; r0 += R) {
      const int64_t rows = std::min(R, N - r0);
      const int32_t* tgt = b_.targets.data() + r0;
      const float* xf = s_.xf.data<float>() + r0 * C;
      float* lg = logits.data<float>();
      cpu::matmul_forward(lg, xf, w(s_.head), nullptr, rows, C, V);
      cpu::cross_entropy_max(row_max.data(), lg, rows, V);
      all_reduce(mesh_.model(), row_max.data(), rows, ReduceOp::kMax);
      float* sumexp = stats.data();
      float* tlogit = stats.data() + rows;
      cpu::cross_entropy_sumexp(sumexp, tlogit, lg, row_max.data(), tgt, s_.v0, rows, V);
      all_reduce(mesh_.model(), stats.data(), 2 * rows, ReduceOp::kSum);
      cpu::cross_entropy_loss(losses.data(), row_max.data(), sumexp, tlogit, tgt, rows);
      for (int64_t i = 0; i < rows; ++i) {
        if (tgt[i] == TokenBatch::kIgnore) continue;
        const size_t row = static_cast<size_t>((r0 + i) / b_.seq);
        res.nll_per_row[row] += losses[i];
        res.tokens_per_row[row] += 1;
      }
      if (!grad_) continue;
      std::fill(dloss.begin(), dloss.end(), dl);
      cpu::cross_entropy_backward(lg, lg, row_max.data(), sumexp, tgt, dloss.data(), s_.v0, rows,
                                  V);
      cpu::matmul_backward(s_.dxf.data<float>() + r0 * C, g(s_.head), nullptr, lg, xf, w(s_.head),
                           rows, C, V);
    }
    release(s_.head);
    if (grad_ && s_.head != s_.embed) close_grad(s_.head);
    for (double v : res.nll_per_row) res.nll_sum += v;
    all_reduce_double(res.nll_sum);
    res.loss = res.nll_sum / token_count;
    return res;
  }

  // From d xf back to the parameters; then gradients go to their shards.
  void backward() {
    const int64_t N = b_.batch * b_.seq, C = s_.C;
    all_reduce(mesh_.model(), s_.dxf.data<float>(), N * C, ReduceOp::kSum);  // vocab-parallel
    s_.dx.fill_zero();
    materialize(s_.norm);
    open_grad(s_.norm);
    cpu::rmsnorm_backward(s_.dx.data<float>(), g(s_.norm), s_.dxf.data<float>(), x(c_.num_layers),
                          w(s_.norm), s_.rstd_f.data<float>(), N, C, c_.norm_offset);
    release(s_.norm);
    close_grad(s_.norm);
    for (int l = static_cast<int>(c_.num_layers) - 1; l >= 0; --l) {
      model::BlockDims d = dims(l);
      // The layer's weights again (gathered anew: ZeRO-3 keeps none between its uses).
      for (int k : layer(l)) {
        materialize(k);
        open_grad(k);
      }
      if (!s_.acts_per_layer) {  // recompute this block's activations from its input
        model::block_forward(s_.tmp.data<float>(), x(l), s_.weights(l), acts(l), d);
      }
      model::BlockGrads bg = s_.grads(l);
      model::block_backward(s_.dx.data<float>(), x(l), s_.weights(l), bg, acts(l), s_.scratch, d);
      for (int k : layer(l)) {
        release(k);
        close_grad(k);
      }
    }
    // As torch's nn.Embedding(padding_idx=pad_token_id): the pad row gets no gradient from the
    // lookup (id -1 lies outside every shard).
    std::vector<int32_t> ids = b_.input_ids;
    if (c_.pad_token_id) std::replace(ids.begin(), ids.end(), int32_t(*c_.pad_token_id), -1);
    if (s_.embed != s_.head) open_grad(s_.embed);  // tied: open since the LM head
    cpu::embedding_backward(g(s_.embed), s_.dx.data<float>(), ids.data(), N, C, s_.v0, s_.V,
                            c_.embed_scale);
    close_grad(s_.embed);
  }

  // Full-vocabulary logits (N, V_global) from xf.
  Tensor logits() {
    const int64_t N = b_.batch * b_.seq, C = s_.C, V = s_.V;
    const int64_t M = mesh_.model_size();
    Tensor local({N, V});
    materialize(s_.head);
    cpu::matmul_forward(local.data<float>(), s_.xf.data<float>(), w(s_.head), nullptr, N, C, V);
    release(s_.head);
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
  float* x(int64_t l) { return s_.x[static_cast<size_t>(l)].data<float>(); }
  const float* w(int k) const { return s_.full_w[static_cast<size_t>(k)].data<float>(); }
  float* g(int k) { return s_.full_g[static_cast<size_t>(k)].data<float>(); }
  model::BlockActs& acts(int l) { return s_.acts[s_.acts_per_layer ? l : 0]; }

  void all_reduce_double(double& v) {
    if (mesh_.data_size() > 1) mesh_.data().all_reduce(std::span<double>(&v, 1), ReduceOp::kSum);
  }

  model::BlockDims dims(int l) {
    model::BlockDims d;
    d.B = b_.batch;
    d.T = b_.seq;
    d.C = s_.C;
    d.I = s_.I;
    d.Hq = s_.Hq;
    d.Hkv = s_.Hkv;
    d.D = s_.D;
    d.eps = c_.rms_norm_eps;
    d.norm_offset = c_.norm_offset;
    d.attn_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(s_.D)));
    d.act = c_.activation;
    d.mask.key_valid = s_.key_valid.data();
    d.mask.segment = b_.segments.empty() ? nullptr : b_.segments.data();
    d.mask.sliding_window = c_.sliding_window[static_cast<size_t>(l)];
    d.pos = s_.positions.data();
    d.inv_freq = s_.inv_freq.data();
    d.model_comm = &mesh_.model();
    return d;
  }

  void prepare_workspace() {
    const int64_t N = b_.batch * b_.seq, C = s_.C;
    const bool per_layer = grad_ && !opt_.recompute;
    model::BlockDims d = dims(0);
    if (s_.N != N || s_.acts_per_layer != per_layer) {
      s_.N = N;
      s_.acts_per_layer = per_layer;
      s_.x.assign(static_cast<size_t>(c_.num_layers + 1), Tensor());
      for (Tensor& t : s_.x) t = Tensor({N, C});
      s_.acts.clear();
      const int64_t n_acts = per_layer ? c_.num_layers : 1;
      for (int64_t l = 0; l < n_acts; ++l) s_.acts.push_back(model::BlockActs::allocate(d));
      s_.scratch = model::BlockScratch::allocate(d);
      s_.xf = Tensor({N, C});
      s_.rstd_f = Tensor({N});
      s_.dx = Tensor({N, C});
      s_.dxf = Tensor({N, C});
      s_.tmp = Tensor({N, C});
    }
    // Defaults of a batch without mask or positions: every key valid, positions 0..T-1.
    s_.key_valid = b_.key_valid;
    if (s_.key_valid.empty()) s_.key_valid.assign(static_cast<size_t>(N), 1);
    s_.positions = b_.positions;
    if (s_.positions.empty()) {
      s_.positions.resize(static_cast<size_t>(N));
      for (int64_t i = 0; i < N; ++i) s_.positions[i] = static_cast<int32_t>(i % b_.seq);
    }
  }

  // A k/v weight (rows, C) or bias (rows) sharded by rows over the model axis -> the D rows of
  // this rank's KV head, gathered whole first.
  Tensor kv_head_rows(const Tensor& shard) {
    Shape shape = shard.shape();
    shape[0] *= mesh_.model_size();  // num_key_value_heads * D
    Tensor whole(shape);
    model::gather_along_dim(mesh_.model(), shard, 0, whole);
    const int64_t cols = whole.numel() / shape[0];
    shape[0] = s_.D;
    Tensor head(shape);
    std::copy_n(whole.data<float>() + s_.kv_head * s_.D * cols, s_.D * cols, head.data<float>());
    return head;
  }

  // The gradient of this rank's KV head rows (D, ...) -> its row shard, summed over the model
  // ranks (the replicas of a head each hold the part from their own query heads).
  Tensor kv_grad_shard(const Tensor& head) {
    Shape shape = head.shape();
    shape[0] *= c_.num_kv_heads;
    Tensor whole(shape);
    const int64_t cols = head.numel() / s_.D;
    std::copy_n(head.data<float>(), head.numel(), whole.data<float>() + s_.kv_head * s_.D * cols);
    shape[0] /= mesh_.model_size();
    Tensor shard(shape);
    model::reduce_scatter_along_dim(mesh_.model(), whole, 0, shard);
    return shard;
  }

  // The indices of layer l's tensors (kNone entries are skipped by the callees).
  std::array<int, 16> layer(int l) const { return s_.layers[static_cast<size_t>(l)].all(); }

  // full_w[k] <- parameter k as the layers use it: fp32 (bf16 storage widened, exactly),
  // gathered whole over data (FSDP), a replicated KV head's rows. Aliases the stored tensor
  // where none of that applies.
  void materialize(int k) {
    if (k == kNone) return;
    const size_t i = static_cast<size_t>(k);
    Tensor w = params_.tensor(i);
    if (w.dtype() != DType::kF32) w = w.to(DType::kF32);
    const int dd = data_dim(params_.info(i).spec);
    if (mesh_.data_size() > 1 && dd >= 0) {
      Shape shape = w.shape();
      shape[static_cast<size_t>(dd)] *= mesh_.data_size();
      Tensor full(shape);
      model::gather_along_dim(mesh_.data(), w, dd, full);
      w = full;
    }
    if (s_.kv_param[i]) w = kv_head_rows(w);
    s_.full_w[i] = w;
  }

  void release(int k) {
    if (k != kNone) s_.full_w[static_cast<size_t>(k)] = Tensor();
  }

  // The shape of parameter k as used (materialize's result).
  Shape used_shape(int k) const {
    const size_t i = static_cast<size_t>(k);
    Shape shape = params_.tensor(i).shape();
    const int dd = data_dim(params_.info(i).spec);
    if (mesh_.data_size() > 1 && dd >= 0) shape[static_cast<size_t>(dd)] *= mesh_.data_size();
    if (s_.kv_param[i]) shape[0] = s_.D;
    return shape;
  }

  // full_g[k] <- the gradient buffer of parameter k as used: the gradient shard itself where
  // they coincide (data axis of size 1, not a replicated KV head), else zeros.
  void open_grad(int k) {
    if (k == kNone) return;
    const size_t i = static_cast<size_t>(k);
    if (mesh_.data_size() == 1 && !s_.kv_param[i]) {
      s_.full_g[i] = grads_->tensor(i);
    } else {
      s_.full_g[i] = Tensor(used_shape(k));
    }
  }

  // full_g[k] -> its shard (+=): KV head rows summed over the model axis, then reduce-scattered
  // over data (a data-sharded dim) or all-reduced (replicated over data); then released.
  void close_grad(int k) {
    if (k == kNone) return;
    const size_t i = static_cast<size_t>(k);
    Tensor g = s_.full_g[i];
    s_.full_g[i] = Tensor();
    if (s_.kv_param[i]) {
      g = kv_grad_shard(g);
    } else if (mesh_.data_size() == 1) {
      return;  // g aliases the shard
    }
    Tensor& shard = grads_->tensor(i);
    const int dd = data_dim(params_.info(i).spec);
    if (mesh_.data_size() == 1) {
      float* dst = shard.data<float>();
      const float* src = g.data<float>();
      for (int64_t e = 0; e < g.numel(); ++e) dst[e] += src[e];
    } else if (dd >= 0) {
      model::reduce_scatter_along_dim(mesh_.data(), g, dd, shard);
    } else {
      model::all_reduce_add(mesh_.data(), g, shard);
    }
  }

  const ModelConfig& c_;
  const Mesh& mesh_;
  ParameterSet& params_;
  const DecoderOptions& opt_;
  Decoder::State& s_;
  const TokenBatch& b_;
  bool grad_;
  ParameterSet* grads_ = nullptr;  // bound by bind_grads
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
