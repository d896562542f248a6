// Generator: inference weights gathered once; prefill and one-token decode steps both run the
// training block (model::block_forward) with a KV cache of (B, S, Hkv/M, D) per layer, sharded
// by heads over the model axis. Decode steps read each weight row once (matmul_decode) and
// attend against the cache (attention_decode).
#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>

#include "backends/backend.hpp"
#include "magix/error.hpp"
#include "magix/generate.hpp"
#include "magix/memory_check.hpp"
#include "model/block.hpp"
#include "model/layout.hpp"
#include "shard/param_stream.hpp"
#include "shard/shard_ops.hpp"

namespace magix {
namespace {

void all_reduce_model(Communicator& comm, Tensor& x) {
  model::all_reduce(comm, x, ReduceOp::kSum);
}

// A host array as a backend tensor.
Tensor upload(const Backend& ops, std::vector<int32_t>& v, Shape shape) {
  Tensor t = ops.empty(shape, DType::kI32);
  ops.copy(t, Tensor::view_of(v.data(), shape, DType::kI32));
  return t;
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
  const Backend* ops = nullptr;
  model::ModelLayout layout;
  DType compute = DType::kF32;
  // Weights as the blocks use them: this model rank's slice, whole over data; linear weights
  // and the LM head in the compute dtype, the rest F32.
  std::vector<model::BlockWeights> layers;
  Tensor embed, norm, head, inv_freq;
  Tensor inv_freq_local;      // the sliding layers' frequencies (gemma3_text), or undefined
  Tensor inv_freq_long;       // longrope's past the original context, or undefined
  bool long_context = false;  // the next forward uses inv_freq_long (generate() decides)

  // Per generate() call: the cache and the step buffers.
  int64_t B = 0, S = 0;
  std::vector<int32_t> valid_host;  // (B, S) 1 where the slot holds a real token
  // Per layer: its cache's slots, S, or a ring of its sliding window where that is smaller (slot
  // j at j mod window: a sliding layer never looks further back).
  std::vector<int64_t> cache_slots;
  // valid_host as each cache size reads it: (B, S), and (B, R) for a ring of R slots.
  std::map<int64_t, Tensor> valid;
  std::vector<Tensor> k, v;    // per layer (B, cache_slots[l], Hkv, D)
  model::BlockActs step_acts;  // a decode step's activations (B rows)
  Tensor x, next, xf, rstd, logits_local, logits;

  void load(const Decoder& d);
  // The rope tables of a call's positions: every layer's, and the sliding layers' own.
  struct Ropes {
    Tensor global, local;
  };
  model::BlockContext context(const Ropes& rope, const Tensor* key_valid) const;
  Ropes rope_of(const Tensor& pos) const;
  void allocate(int64_t rows, int64_t slots);
  void upload_valid(int64_t last_slot);
  model::KvCache cache_of(int64_t l, int64_t slot);
  void head_logits(const Tensor& rows_x);
  void prefill(const std::vector<std::vector<int32_t>>& prompts, int64_t T, int32_t pad_id);
  void decode(std::vector<int32_t>& ids, std::vector<int32_t>& pos, int64_t slot);
};

void Generator::Impl::load(const Decoder& d) {
  MAGIX_CHECK(d.adapters().size() == 0,
              "the generator runs plain weights: merge the LoRA adapters into them first "
              "(merge_lora)");
  c = d.config();
  mesh = &d.mesh();
  compute = d.options().compute_dtype;
  ops = &backend_for(d.options().device);
  const ParameterSet& p = d.params();
  layout = model::make_layout(c, *mesh, p);
  const ParamStream stream(*mesh, *ops, layout.kv_rows, layout.kv);
  for (const auto& idx : layout.layers) {
    model::BlockWeights w;
    for (int i = 0; i < model::kNumLayerParams; ++i) {
      if (idx[i] == model::kNoParam) continue;
      const auto lp = static_cast<model::LayerParam>(i);
      w[i] = stream.gather(p, static_cast<size_t>(idx[i]),
                           model::is_linear_weight(lp) ? compute : DType::kF32);
    }
    layout.split_fused(w);
    layers.push_back(std::move(w));
  }
  // A BF16 table stays BF16 (the lookup widens its rows): no resident fp32 copy.
  const auto embed_i = static_cast<size_t>(layout.embed);
  embed = stream.gather(p, embed_i,
                        p.tensor(embed_i).dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32);
  norm = stream.gather(p, static_cast<size_t>(layout.norm), DType::kF32);
  head = layout.head == layout.embed && embed.dtype() == compute
             ? embed
             : stream.gather(p, static_cast<size_t>(layout.head), compute);
  inv_freq = ops->empty({std::ssize(layout.inv_freq)}, DType::kF32);
  ops->copy(inv_freq, Tensor::view_of(layout.inv_freq.data(), inv_freq.shape(), DType::kF32));
  if (!layout.inv_freq_long.empty()) {
    inv_freq_long = ops->empty({std::ssize(layout.inv_freq_long)}, DType::kF32);
    ops->copy(inv_freq_long,
              Tensor::view_of(layout.inv_freq_long.data(), inv_freq_long.shape(), DType::kF32));
  }
  if (!layout.inv_freq_local.empty()) {
    inv_freq_local = ops->empty({std::ssize(layout.inv_freq_local)}, DType::kF32);
    ops->copy(inv_freq_local,
              Tensor::view_of(layout.inv_freq_local.data(), inv_freq_local.shape(), DType::kF32));
  }
}

// The rope tables (N, R) of positions pos (N).
Generator::Impl::Ropes Generator::Impl::rope_of(const Tensor& pos) const {
  Ropes r;
  r.global = ops->empty({pos.numel(), layout.R}, DType::kF32);
  ops->rope_table(r.global, pos, long_context ? inv_freq_long : inv_freq);
  if (layout.rope_scale != 1.0f) ops->scale(r.global, layout.rope_scale);
  if (inv_freq_local.defined()) {
    r.local = ops->empty({pos.numel(), layout.R}, DType::kF32);
    ops->rope_table(r.local, pos, inv_freq_local);
    if (layout.rope_scale_local != 1.0f) ops->scale(r.local, layout.rope_scale_local);
  }
  return r;
}

model::BlockContext Generator::Impl::context(const Ropes& rope, const Tensor* key_valid) const {
  model::BlockContext ctx;
  ctx.ops = ops;
  ctx.rope = &rope.global;
  ctx.rope_local = rope.local.defined() ? &rope.local : nullptr;
  ctx.key_valid = key_valid;
  ctx.model_comm = &mesh->model();
  return ctx;
}

void Generator::Impl::allocate(int64_t rows, int64_t slots) {
  B = rows;
  S = slots;
  const int64_t C = layout.C, V = layout.V;
  cache_slots.assign(static_cast<size_t>(c.num_layers), S);
  double cache_rows = 0;  // B x (slots of every layer)
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const int64_t window = c.sliding_window.empty() ? 0 : c.sliding_window[static_cast<size_t>(l)];
    if (window > 0 && window < S) cache_slots[static_cast<size_t>(l)] = window;
    cache_rows += static_cast<double>(B) * static_cast<double>(cache_slots[static_cast<size_t>(l)]);
  }
  // Up front, in floating point (no overflow): the cache (k and v of every layer) and the
  // per-slot validity flags.
  const double cache = 2.0 * cache_rows * static_cast<double>(layout.Hkv) *
                           static_cast<double>(layout.D) *
                           static_cast<double>(dtype_size(compute)) +
                       static_cast<double>(B) * static_cast<double>(S);
  check_fits_in_memory(cache,
                       fmt::format("{} prompts per batch with {} cache slots each (the "
                                   "padded prompt + --max_length / --max_new_tokens): "
                                   "the KV cache",
                                   B, S),
                       ops->device());
  valid_host.assign(static_cast<size_t>(B * S), 0);
  valid.clear();
  k.assign(static_cast<size_t>(c.num_layers), Tensor());
  v.assign(static_cast<size_t>(c.num_layers), Tensor());
  for (int64_t l = 0; l < c.num_layers; ++l) {
    // The cache in the compute dtype: bf16 mixed precision halves its bytes per decode step.
    const int64_t Sl = cache_slots[static_cast<size_t>(l)];
    k[l] = ops->zeros({B, Sl, layout.Hkv, layout.D}, compute);
    v[l] = ops->zeros({B, Sl, layout.Hkv, layout.D}, compute);
  }
  model::BlockDims d = layout.dims(c, 0, B, 1, compute);
  d.decode = true;
  step_acts = model::BlockActs::allocate(d, *ops);
  x = ops->zeros({B, C}, DType::kF32);
  next = ops->zeros({B, C}, DType::kF32);
  xf = ops->zeros({B, C}, DType::kF32);
  rstd = ops->zeros({B}, DType::kF32);
  logits_local = ops->zeros({B, V}, DType::kF32);
  logits = Tensor({B, V * mesh->model_size()});  // host: the sampler reads it
}

// valid_host to the backend for every cache size, after slots [0, last_slot] were written: a ring
// of R slots holds slot j (of the last R) at j mod R.
void Generator::Impl::upload_valid(int64_t last_slot) {
  for (const int64_t R : std::set<int64_t>(cache_slots.begin(), cache_slots.end())) {
    if (R == S) {
      valid[R] = upload(*ops, valid_host, {B, S});
      continue;
    }
    std::vector<int32_t> ring(static_cast<size_t>(B * R), 0);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = std::max<int64_t>(0, last_slot - R + 1); j <= last_slot; ++j) {
        ring[static_cast<size_t>(b * R + j % R)] = valid_host[static_cast<size_t>(b * S + j)];
      }
    }
    valid[R] = upload(*ops, ring, {B, R});
  }
}

model::KvCache Generator::Impl::cache_of(int64_t l, int64_t slot) {
  const int64_t R = cache_slots[static_cast<size_t>(l)];
  return model::KvCache{k[l], v[l], &valid.at(R), slot, /*ring=*/R < S};
}

// logits (B, V) <- head(final_norm(rows_x (B, C))), gathered over the model axis.
void Generator::Impl::head_logits(const Tensor& rows_x) {
  ops->rmsnorm_forward(xf, rstd, rows_x, norm, c.rms_norm_eps, c.norm_offset);
  ops->matmul_decode(logits_local, xf, head, nullptr);
  if (c.final_softcap > 0) ops->softcap_forward(logits_local, c.final_softcap);
  if (mesh->model_size() == 1) {
    ops->copy(logits, logits_local);
  } else {
    model::gather_along_dim(mesh->model(), logits_local, 1, logits);
  }
}

// Left-pads the prompts to T slots, runs the blocks over them (filling slots [0, T) of the
// cache) and leaves the logits of each row's last slot in `logits`.
void Generator::Impl::prefill(const std::vector<std::vector<int32_t>>& prompts, int64_t T,
                              int32_t pad_id) {
  const int64_t N = B * T, C = layout.C;
  std::vector<int32_t> ids(static_cast<size_t>(N), pad_id), key_valid(static_cast<size_t>(N), 0);
  // HF: position ids count real tokens (cumsum of the mask - 1); padding gets 1 (unused).
  std::vector<int32_t> pos(static_cast<size_t>(N), 1);
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    const int64_t first = T - std::ssize(p);
    for (int64_t t = 0; t < std::ssize(p); ++t) {
      ids[b * T + first + t] = p[t];
      key_valid[b * T + first + t] = 1;
      valid_host[b * S + first + t] = 1;
      pos[b * T + first + t] = static_cast<int32_t>(t);
    }
  }
  upload_valid(T - 1);
  const Tensor ids_t = upload(*ops, ids, {N}), pos_t = upload(*ops, pos, {N}),
               key_valid_t = upload(*ops, key_valid, {B, T});
  Tensor cur = ops->empty({N, C}, DType::kF32), out = ops->empty({N, C}, DType::kF32);
  ops->embedding_forward(cur, ids_t, embed, layout.v0, c.embed_scale);
  all_reduce_model(mesh->model(), cur);
  model::BlockActs acts = model::BlockActs::allocate(layout.dims(c, 0, B, T, compute), *ops);
  const Ropes rope = rope_of(pos_t);
  const model::BlockContext ctx = context(rope, &key_valid_t);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    model::KvCache cache = cache_of(l, 0);
    model::block_forward(out, cur, layers[l], acts, layout.dims(c, l, B, T, compute), ctx, &cache);
    std::swap(cur, out);
  }
  Tensor last = ops->empty({B, C}, DType::kF32);
  for (int64_t b = 0; b < B; ++b) {
    Tensor row = last.rows(b, 1);
    ops->copy(row, cur.rows(b * T + T - 1, 1));
  }
  head_logits(last);
}

// One new token per row at cache slot `slot`, position pos[b]; leaves the logits in `logits`.
void Generator::Impl::decode(std::vector<int32_t>& ids, std::vector<int32_t>& pos, int64_t slot) {
  const Tensor ids_t = upload(*ops, ids, {B}), pos_t = upload(*ops, pos, {B});
  ops->embedding_forward(x, ids_t, embed, layout.v0, c.embed_scale);
  all_reduce_model(mesh->model(), x);
  for (int64_t b = 0; b < B; ++b) valid_host[b * S + slot] = 1;
  upload_valid(slot);
  const Ropes rope = rope_of(pos_t);
  const model::BlockContext ctx = context(rope, nullptr);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    model::BlockDims d = layout.dims(c, l, B, 1, compute);
    d.decode = true;
    model::KvCache cache = cache_of(l, slot);
    model::block_forward(next, x, layers[l], step_acts, d, ctx, &cache);
    std::swap(x, next);
  }
  head_logits(x);
}

Generator::Generator(const Decoder& model, const Tokenizer* tokenizer)
    : impl_(std::make_unique<Impl>()) {
  impl_->tok = tokenizer;
  impl_->load(model);
}

Generator::Generator(const ModelConfig& config, const Mesh& mesh, const ParameterSet& params,
                     const Tokenizer* tokenizer, DType compute_dtype)
    : impl_(std::make_unique<Impl>()) {
  // The decoder's constructor checks the layout and the splits over the model axis.
  DecoderOptions options;
  if (params.size() > 0) options.weight_dtype = params.tensor(0).dtype();
  options.compute_dtype = compute_dtype;
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
  // longrope: transformers picks the factors per forward by the largest position + 1 (a prompt
  // past the original context uses the long ones throughout), and when a generation crosses the
  // original context it recomputes the whole cache with the long factors at that step (Phi3's
  // prepare_inputs_for_generation): so does magix, at the step whose largest position reaches it.
  const int64_t long_from = m.inv_freq_long.defined() ? m.layout.long_from : 0;
  m.long_context = long_from > 0 && longest > long_from;
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
        const int64_t bad = first_non_finite(lg, DType::kF32, static_cast<size_t>(Vg));
        MAGIX_CHECK(bad < 0,
                    "prompt {}: the model gives a non-finite logit ({}) for token {} at generated "
                    "token {}: its weights or activations overflow",
                    index, lg[bad], bad, std::ssize(r.result.tokens));
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
      // The largest position of this step is the longest prompt's (rows that stopped count on,
      // as transformers keeps their attention mask growing).
      if (long_from > 0 && !m.long_context && longest + step + 1 > long_from) {
        m.long_context = true;
        std::vector<std::vector<int32_t>> histories;
        histories.reserve(rows.size());
        for (const Row& r : rows) histories.push_back(r.history);
        m.prefill(histories, T + step + 1, options.pad_id);  // the same slots, recomputed
        continue;
      }
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
