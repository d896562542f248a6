// Generator: inference weights gathered once; prefill through the training block (so prompts
// see exactly the training decoder's numerics), then one-token decode steps against a KV cache
// of (B, S, Hkv/M, D) per layer, sharded by heads over the model axis.
#include <algorithm>
#include <cmath>
#include <optional>
#include <set>

#include "generate/kv_attention.hpp"
#include "generate/linear_rows.hpp"
#include "kernels/cpu/embedding.hpp"
#include "kernels/cpu/glu.hpp"
#include "kernels/cpu/matmul.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/cpu/rope.hpp"
#include "magix/error.hpp"
#include "magix/generate.hpp"
#include "model/block.hpp"
#include "model/shard_ops.hpp"

namespace magix {
namespace {

float* f(Tensor& t) {
  return t.data<float>();
}

// The data-sharded dim of a spec, or -1.
int data_dim(const PartitionSpec& spec) {
  for (size_t d = 0; d < spec.dims.size(); ++d) {
    if (spec.dims[d] == "data") return static_cast<int>(d);
  }
  return -1;
}

bool is_kv_param(const std::string& name) {
  for (const char* s : {"self_attn.k_proj.weight", "self_attn.k_proj.bias",
                        "self_attn.v_proj.weight", "self_attn.v_proj.bias"}) {
    if (name.ends_with(s)) return true;
  }
  return false;
}

void all_reduce_model(Communicator& comm, float* x, int64_t n) {
  if (comm.size() > 1) comm.all_reduce(std::span<float>(x, static_cast<size_t>(n)), ReduceOp::kSum);
}

// out (N, C) = residual + y + bias (bias may be null)
void add_residual_bias(float* out, const float* residual, const float* y, const float* bias,
                       int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      out[n * C + c] = residual[n * C + c] + y[n * C + c] + (bias ? bias[c] : 0.0f);
    }
  }
}

}  // namespace

void check_generate_options(const GenerateOptions& o, bool has_tokenizer) {
  const SamplingOptions& s = o.sampling;
  MAGIX_CHECK(o.max_length > 0, "max_length must be positive, got {}", o.max_length);
  MAGIX_CHECK(o.max_new_tokens >= 0, "max_new_tokens must be >= 0, got {}", o.max_new_tokens);
  MAGIX_CHECK(o.pad_to_multiple_of >= 1, "pad_to_multiple_of must be >= 1, got {}",
              o.pad_to_multiple_of);
  MAGIX_CHECK(!s.sample || (s.temperature > 0 && std::isfinite(s.temperature)),
              "temperature must be a positive number when sampling, got {}", s.temperature);
  MAGIX_CHECK(s.top_k >= 0, "top_k must be >= 0 (0 = off), got {}", s.top_k);
  MAGIX_CHECK(s.top_p > 0 && s.top_p <= 1, "top_p must be in (0, 1], got {}", s.top_p);
  MAGIX_CHECK(s.repetition_penalty > 0 && std::isfinite(s.repetition_penalty),
              "repetition_penalty must be positive, got {}", s.repetition_penalty);
  MAGIX_CHECK(o.stop.empty() || has_tokenizer, "stop strings need a tokenizer");
  for (const std::string& stop : o.stop) MAGIX_CHECK(!stop.empty(), "empty stop string");
}

namespace {

// One sequence of a batch while it is generated.
struct Row {
  std::vector<int32_t> history;  // prompt + generated ids (what the repetition penalty sees)
  int64_t limit = 0;             // most new tokens it may have
  bool done = false;
  GenerationResult result;
  std::optional<StreamDecoder> stream;
  size_t checked = 0;  // bytes of result.text already searched for stop strings
};

}  // namespace

struct Generator::Impl {
  ModelConfig c;
  const Mesh* mesh = nullptr;
  const Tokenizer* tok = nullptr;
  std::vector<Tensor> w;  // per parameter: this model rank's slice, whole over data, fp32
  std::vector<model::BlockWeights> layers;
  const float* embed = nullptr;
  const float* norm = nullptr;
  const float* head = nullptr;
  int64_t C = 0, I = 0, Hq = 0, Hkv = 0, D = 0, V = 0, v0 = 0;  // local sizes
  std::vector<float> inv_freq;

  // Per generate() call: the cache and the decode-step buffers.
  int64_t B = 0, S = 0;
  std::vector<int32_t> valid;  // (B, S) 1 where the slot holds a real token
  std::vector<Tensor> k, v;    // per layer (B, S, Hkv * D)
  Tensor x, ln, res, q, kn, vn, att, o, gate, up, h, rstd, xf, logits_local, logits;

  void load(const Decoder& d);
  model::BlockDims dims(int64_t rows, int64_t T, int l) const;
  void allocate(int64_t rows, int64_t slots);
  void head_logits(const float* rows_x);
  void prefill(const std::vector<std::vector<int32_t>>& prompts, int64_t T, int32_t pad_id);
  void decode(const std::vector<int32_t>& ids, const std::vector<int32_t>& pos, int64_t slot);
};

void Generator::Impl::load(const Decoder& d) {
  c = d.config();
  mesh = &d.mesh();
  const ParameterSet& p = d.params();
  const int64_t M = mesh->model_size();
  // As the training decoder: fewer KV heads than model ranks are replicated, each model rank
  // keeping the D rows of its query heads' KV head.
  const bool kv_split = c.num_kv_heads % M == 0;
  const int64_t kv_rep = kv_split ? 1 : M / c.num_kv_heads;
  const int64_t kv_head = mesh->model_rank() / kv_rep;
  C = c.hidden_size;
  I = c.intermediate_size / M;
  Hq = c.num_heads / M;
  Hkv = kv_split ? c.num_kv_heads / M : 1;
  D = c.head_dim;
  V = c.vocab_size / M;
  v0 = mesh->model_rank() * V;
  inv_freq = cpu::rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling);
  w.resize(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    Tensor t = p.tensor(i);
    if (t.dtype() != DType::kF32) t = t.to(DType::kF32);
    const int dd = data_dim(p.info(i).spec);
    if (mesh->data_size() > 1 && dd >= 0) {
      Shape shape = t.shape();
      shape[static_cast<size_t>(dd)] *= mesh->data_size();
      Tensor full(shape);
      model::gather_along_dim(mesh->data(), t, dd, full);
      t = full;
    }
    if (kv_rep > 1 && is_kv_param(p.info(i).name)) {
      Shape shape = t.shape();
      shape[0] *= M;
      Tensor whole(shape);
      model::gather_along_dim(mesh->model(), t, 0, whole);
      const int64_t cols = whole.numel() / shape[0];
      shape[0] = D;
      Tensor rows(shape);
      std::copy_n(whole.data<float>() + kv_head * D * cols, D * cols, rows.data<float>());
      t = rows;
    }
    w[i] = t;
  }
  auto at = [&](const std::string& name) -> const float* {
    auto i = p.find(name);
    return i ? w[*i].data<float>() : nullptr;
  };
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string s = fmt::format("model.layers.{}.", l);
    layers.push_back({at(s + "input_layernorm.weight"), at(s + "self_attn.q_proj.weight"),
                      at(s + "self_attn.q_proj.bias"), at(s + "self_attn.k_proj.weight"),
                      at(s + "self_attn.k_proj.bias"), at(s + "self_attn.v_proj.weight"),
                      at(s + "self_attn.v_proj.bias"), at(s + "self_attn.o_proj.weight"),
                      at(s + "self_attn.o_proj.bias"), at(s + "post_attention_layernorm.weight"),
                      at(s + "mlp.gate_proj.weight"), at(s + "mlp.gate_proj.bias"),
                      at(s + "mlp.up_proj.weight"), at(s + "mlp.up_proj.bias"),
                      at(s + "mlp.down_proj.weight"), at(s + "mlp.down_proj.bias")});
  }
  embed = at("model.embed_tokens.weight");
  norm = at("model.norm.weight");
  head = c.tie_word_embeddings ? embed : at("lm_head.weight");
}

model::BlockDims Generator::Impl::dims(int64_t rows, int64_t T, int l) const {
  model::BlockDims d;
  d.B = rows;
  d.T = T;
  d.C = C;
  d.I = I;
  d.Hq = Hq;
  d.Hkv = Hkv;
  d.D = D;
  d.eps = c.rms_norm_eps;
  d.norm_offset = c.norm_offset;
  d.attn_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  d.act = c.activation;
  d.mask.sliding_window = c.sliding_window[static_cast<size_t>(l)];
  d.inv_freq = inv_freq.data();
  d.model_comm = &mesh->model();
  return d;
}

void Generator::Impl::allocate(int64_t rows, int64_t slots) {
  B = rows;
  S = slots;
  const int64_t QD = Hq * D, KD = Hkv * D;
  valid.assign(static_cast<size_t>(B * S), 0);
  k.assign(static_cast<size_t>(c.num_layers), Tensor());
  v.assign(static_cast<size_t>(c.num_layers), Tensor());
  for (int64_t l = 0; l < c.num_layers; ++l) {
    k[l] = Tensor({B, S, KD});
    v[l] = Tensor({B, S, KD});
  }
  x = Tensor({B, C});
  ln = Tensor({B, C});
  res = Tensor({B, C});
  o = Tensor({B, C});
  xf = Tensor({B, C});
  rstd = Tensor({B});
  q = Tensor({B, QD});
  att = Tensor({B, QD});
  kn = Tensor({B, KD});
  vn = Tensor({B, KD});
  gate = Tensor({B, I});
  up = Tensor({B, I});
  h = Tensor({B, I});
  logits_local = Tensor({B, V});
  logits = Tensor({B, V * mesh->model_size()});
}

// logits (B, V) <- head(final_norm(rows_x (B, C))), gathered over the model axis.
void Generator::Impl::head_logits(const float* rows_x) {
  cpu::rmsnorm_forward(f(xf), f(rstd), rows_x, norm, B, C, c.rms_norm_eps, c.norm_offset);
  generate::linear_rows(f(logits_local), f(xf), head, nullptr, B, C, V);
  if (mesh->model_size() == 1) {
    std::copy_n(f(logits_local), B * V, f(logits));
  } else {
    model::gather_along_dim(mesh->model(), logits_local, 1, logits);
  }
}

// Left-pads the prompts to T slots, runs the blocks over them (filling slots [0, T) of the
// cache) and leaves the logits of each row's last slot in `logits`.
void Generator::Impl::prefill(const std::vector<std::vector<int32_t>>& prompts, int64_t T,
                              int32_t pad_id) {
  const int64_t N = B * T, KD = Hkv * D;
  std::vector<int32_t> ids(static_cast<size_t>(N), pad_id), key_valid(static_cast<size_t>(N), 0);
  // HF: position ids count real tokens (cumsum of the mask - 1); padding gets 1 (unused).
  std::vector<int32_t> pos(static_cast<size_t>(N), 1);
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    const int64_t first = T - std::ssize(p);
    for (int64_t t = 0; t < std::ssize(p); ++t) {
      ids[b * T + first + t] = p[t];
      key_valid[b * T + first + t] = 1;
      valid[b * S + first + t] = 1;
      pos[b * T + first + t] = static_cast<int32_t>(t);
    }
  }
  Tensor cur({N, C}), next({N, C});
  cpu::embedding_forward(f(cur), ids.data(), embed, N, C, v0, V, c.embed_scale);
  all_reduce_model(mesh->model(), f(cur), N * C);
  model::BlockDims d0 = dims(B, T, 0);
  model::BlockActs acts = model::BlockActs::allocate(d0);
  for (int l = 0; l < c.num_layers; ++l) {
    model::BlockDims d = dims(B, T, l);
    d.mask.key_valid = key_valid.data();
    d.pos = pos.data();
    model::block_forward(f(next), f(cur), layers[l], acts, d);
    for (int64_t b = 0; b < B; ++b) {  // roped k and v of the T slots into the cache
      std::copy_n(f(acts.k) + b * T * KD, T * KD, f(k[l]) + b * S * KD);
      std::copy_n(f(acts.v) + b * T * KD, T * KD, f(v[l]) + b * S * KD);
    }
    std::swap(cur, next);
  }
  Tensor last({B, C});
  for (int64_t b = 0; b < B; ++b) std::copy_n(f(cur) + (b * T + T - 1) * C, C, f(last) + b * C);
  head_logits(f(last));
}

// One new token per row at cache slot `slot`, position pos[b]; leaves the logits in `logits`.
void Generator::Impl::decode(const std::vector<int32_t>& ids, const std::vector<int32_t>& pos,
                             int64_t slot) {
  const int64_t QD = Hq * D, KD = Hkv * D;
  cpu::embedding_forward(f(x), ids.data(), embed, B, C, v0, V, c.embed_scale);
  all_reduce_model(mesh->model(), f(x), B * C);
  for (int64_t b = 0; b < B; ++b) valid[b * S + slot] = 1;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  for (int l = 0; l < c.num_layers; ++l) {
    const model::BlockWeights& lw = layers[l];
    cpu::rmsnorm_forward(f(ln), f(rstd), f(x), lw.ln1, B, C, c.rms_norm_eps, c.norm_offset);
    generate::linear_rows(f(q), f(ln), lw.wq, lw.bq, B, C, QD);
    generate::linear_rows(f(kn), f(ln), lw.wk, lw.bk, B, C, KD);
    generate::linear_rows(f(vn), f(ln), lw.wv, lw.bv, B, C, KD);
    cpu::rope_forward(f(q), pos.data(), inv_freq.data(), B, Hq, D);
    cpu::rope_forward(f(kn), pos.data(), inv_freq.data(), B, Hkv, D);
    for (int64_t b = 0; b < B; ++b) {
      std::copy_n(f(kn) + b * KD, KD, f(k[l]) + (b * S + slot) * KD);
      std::copy_n(f(vn) + b * KD, KD, f(v[l]) + (b * S + slot) * KD);
    }
    generate::KvView view{f(k[l]), f(v[l]), valid.data(), S};
    generate::cached_attention_step(f(att), f(q), view, B, slot, Hq, Hkv, D, scale,
                                    c.sliding_window[static_cast<size_t>(l)]);
    generate::linear_rows(f(o), f(att), lw.wo, nullptr, B, QD, C);
    all_reduce_model(mesh->model(), f(o), B * C);
    add_residual_bias(f(res), f(x), f(o), lw.bo, B, C);
    cpu::rmsnorm_forward(f(ln), f(rstd), f(res), lw.ln2, B, C, c.rms_norm_eps, c.norm_offset);
    generate::linear_rows(f(gate), f(ln), lw.wg, lw.bg, B, C, I);
    generate::linear_rows(f(up), f(ln), lw.wu, lw.bu, B, C, I);
    cpu::glu_forward(f(h), f(gate), f(up), B * I, c.activation);
    generate::linear_rows(f(o), f(h), lw.wd, nullptr, B, I, C);
    all_reduce_model(mesh->model(), f(o), B * C);
    add_residual_bias(f(x), f(res), f(o), lw.bd, B, C);
  }
  head_logits(f(x));
}

Generator::Generator(const Decoder& model, const Tokenizer* tokenizer)
    : impl_(std::make_unique<Impl>()) {
  impl_->tok = tokenizer;
  impl_->load(model);
}

Generator::Generator(const ModelConfig& config, const Mesh& mesh, const ParameterSet& params,
                     const Tokenizer* tokenizer)
    : impl_(std::make_unique<Impl>()) {
  // The decoder's constructor checks the layout and the splits over the model axis.
  DecoderOptions options;
  if (params.size() > 0) options.weight_dtype = params.tensor(0).dtype();
  const Decoder model(config, mesh, params, options);
  impl_->tok = tokenizer;
  impl_->load(model);
}

Generator::~Generator() = default;
Generator::Generator(Generator&&) noexcept = default;
Generator& Generator::operator=(Generator&&) noexcept = default;

const ModelConfig& Generator::config() const {
  return impl_->c;
}
const Mesh& Generator::mesh() const {
  return *impl_->mesh;
}

std::vector<GenerationResult> Generator::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                  const GenerateOptions& options,
                                                  const std::vector<int64_t>& prompt_index) {
  Impl& m = *impl_;
  check_generate_options(options, m.tok != nullptr);
  MAGIX_CHECK(prompt_index.empty() || prompt_index.size() == prompts.size(),
              "prompt_index has {} entries for {} prompts", prompt_index.size(), prompts.size());
  if (prompts.empty()) return {};
  const int64_t vocab = m.c.vocab_size;
  std::set<int32_t> eos(options.eos_ids.begin(), options.eos_ids.end());
  if (eos.empty()) {
    for (int64_t id : m.c.eos_token_ids) eos.insert(static_cast<int32_t>(id));
    if (m.tok && m.tok->eos_id()) eos.insert(*m.tok->eos_id());
  }
  MAGIX_CHECK(options.pad_id >= 0 && options.pad_id < vocab, "pad id {} outside [0, {})",
              options.pad_id, vocab);

  const int64_t B = std::ssize(prompts);
  std::vector<Row> rows(static_cast<size_t>(B));
  int64_t longest = 0, steps = 0;
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    MAGIX_CHECK(!p.empty(), "prompt {} is empty (no tokens)", b);
    for (int32_t id : p) {
      MAGIX_CHECK(id >= 0 && id < vocab, "prompt {} holds token id {} outside [0, {})", b, id,
                  vocab);
    }
    Row& r = rows[b];
    r.history = p;
    r.limit = std::max<int64_t>(0, options.max_length - std::ssize(p));
    if (options.max_new_tokens > 0) r.limit = std::min(r.limit, options.max_new_tokens);
    r.done = r.limit == 0;
    if (m.tok) r.stream.emplace(*m.tok, /*skip_special_tokens=*/true);
    longest = std::max(longest, std::ssize(p));
    steps = std::max(steps, r.limit);
  }
  if (steps > 0) {
    const int64_t T = (longest + options.pad_to_multiple_of - 1) / options.pad_to_multiple_of *
                      options.pad_to_multiple_of;
    // The last token chosen is never fed back: T + steps - 1 slots.
    m.allocate(B, T + steps - 1);
    m.prefill(prompts, T, options.pad_id);
    size_t max_stop = 0;
    for (const std::string& s : options.stop) max_stop = std::max(max_stop, s.size());
    const int64_t Vg = vocab;
    const int64_t tok_vocab = m.tok ? m.tok->vocab_size() : 0;
    std::vector<float> row_logits(static_cast<size_t>(Vg));
    std::vector<int32_t> feed(static_cast<size_t>(B)), pos(static_cast<size_t>(B));
    for (int64_t step = 0;; ++step) {
      bool all_done = true;
      for (int64_t b = 0; b < B; ++b) {
        Row& r = rows[b];
        feed[b] = options.pad_id;
        pos[b] = 0;
        if (r.done) continue;
        const float* lg = m.logits.data<float>() + b * Vg;
        row_logits.assign(lg, lg + Vg);
        const int64_t index = prompt_index.empty() ? b : prompt_index[b];
        const int32_t t = choose_token(row_logits, r.history, options.sampling, index,
                                       std::ssize(r.result.tokens));
        r.result.tokens.push_back(t);
        r.history.push_back(t);
        if (eos.count(t)) {
          r.done = true;
          r.result.finish = FinishReason::kEos;
        } else if (r.stream && t < tok_vocab) {
          // Ids past the tokenizer's vocabulary (models pad their embedding tables) have no
          // text: skipped, as HF tokenizers' decode skips them.
          std::string& text = r.result.text;
          text += r.stream->push(t);
          if (max_stop > 0 && text.size() > r.checked) {
            const size_t from = r.checked >= max_stop ? r.checked - max_stop + 1 : 0;
            size_t cut = std::string::npos;
            for (const std::string& s : options.stop) cut = std::min(cut, text.find(s, from));
            if (cut != std::string::npos) {
              text.resize(cut);
              r.done = true;
              r.result.finish = FinishReason::kStop;
            }
            r.checked = text.size();
          }
        }
        if (!r.done && std::ssize(r.result.tokens) >= r.limit) r.done = true;  // kLength
        if (!r.done) {
          feed[b] = t;
          pos[b] = static_cast<int32_t>(r.history.size() - 1);
          all_done = false;
        }
      }
      if (all_done) break;
      m.decode(feed, pos, T + step);
    }
  }
  std::vector<GenerationResult> out;
  out.reserve(rows.size());
  for (Row& r : rows) {
    if (r.stream && r.result.finish != FinishReason::kStop) {
      r.result.text += r.stream->finish();
      for (const std::string& s : options.stop) {  // a stop string completed by the flush
        const size_t cut = r.result.text.find(s);
        if (cut != std::string::npos) {
          r.result.text.resize(cut);
          r.result.finish = FinishReason::kStop;
        }
      }
    }
    out.push_back(std::move(r.result));
  }
  return out;
}

}  // namespace magix
