#include "block.hpp"

#include <initializer_list>
#include <span>

#include "magix/error.hpp"
#include "magix/hash.hpp"
#include "shard/shard_ops.hpp"

namespace magix::model {
namespace {

// Row-parallel output: the partial sums of every model rank add up to the layer's output.
void all_reduce_model(Tensor& x, const BlockContext& ctx) {
  if (ctx.model_comm && ctx.model_comm->size() > 1) {
    all_reduce(*ctx.model_comm, x, ReduceOp::kSum);
  }
}

const Tensor* optional(const Tensor& t) {
  return t.defined() ? &t : nullptr;
}
Tensor* optional(Tensor& t) {
  return t.defined() ? &t : nullptr;
}

// A linear layer's forward: GEMM, or row by row in a decode call.
void linear_forward(Tensor& out, const Tensor& inp, const Tensor& w, const Tensor& bias,
                    const BlockDims& d, const BlockContext& ctx) {
  if (d.decode) {
    ctx.ops->matmul_decode(out, inp, w, optional(bias));
  } else {
    ctx.ops->matmul_forward(out, inp, w, optional(bias));
  }
}

// `t` as a GEMM input: itself when it already has the gemm dtype, else converted into `in`.
const Tensor& gemm_input(const Tensor& t, Tensor& in, const BlockContext& ctx) {
  if (!in.defined() || in.dtype() == t.dtype()) return t;
  ctx.ops->copy(in, t);
  return in;
}

// A linear layer's backward from the F32 output gradient `dout` and the same as a GEMM input
// (`dout_in`, which is `dout` itself in fp32). With a converted dout_in the bias gradient is
// summed from the fp32 dout.
void linear_backward(Tensor* dinp, Tensor& gw, Tensor& gb, const Tensor& dout,
                     const Tensor& dout_in, const Tensor& inp, const Tensor& w,
                     const BlockContext& ctx) {
  if (&dout_in == &dout) {
    ctx.ops->matmul_backward(dinp, optional(gw), optional(gb), dout, inp, w);
    return;
  }
  if (gb.defined()) ctx.ops->bias_backward(gb, dout);
  ctx.ops->matmul_backward(dinp, optional(gw), nullptr, dout_in, inp, w);
}

// out = dropout(t) with adapter p's mask (the same mask for its input and its input gradient).
void dropout_like_input(Tensor& out, const Tensor& t, LayerParam p, const BlockAdapters& lora,
                        const BlockContext& ctx) {
  const LayerParam id = lora.fused_input[p] ? fused_of(p) : p;
  ctx.ops->dropout(out, t, splitmix64(lora.dropout_key ^ splitmix64(static_cast<uint64_t>(id))),
                   lora.dropout_row0, lora.col0[p], lora.cols[p], lora.dropout);
}

// `t` as F32: itself, or a widened (exact) copy.
Tensor as_f32(const Tensor& t, const BlockContext& ctx) {
  if (t.dtype() == DType::kF32) return t;
  Tensor out = ctx.ops->empty(t.shape(), DType::kF32);
  ctx.ops->copy(out, t);
  return out;
}

// The adapter's input: x as F32, with the dropout mask applied when training with dropout.
// `shared`: x already widened for several adapters (shared_adapter_input), or undefined.
Tensor adapter_input(const Tensor& x, LayerParam p, const BlockAdapters& lora,
                     const BlockContext& ctx, const Tensor& shared = Tensor()) {
  if (shared.defined()) return shared;
  if (lora.dropout <= 0) return as_f32(x, ctx);
  Tensor out = ctx.ops->empty(x.shape(), DType::kF32);
  dropout_like_input(out, x, p, lora, ctx);
  return out;
}

bool adapted(const BlockAdapters* lora, LayerParam p) {
  return lora && lora->a[p].defined();
}

// The F32 input the adapters of `parts` (q/k/v, gate/up) read, widened once when two or more of
// them are adapted and no dropout mask makes their inputs differ; else undefined (each adapter
// widens its own).
Tensor shared_adapter_input(const Tensor& x, std::initializer_list<LayerParam> parts,
                            const BlockAdapters* lora, const BlockContext& ctx) {
  if (!lora || lora->dropout > 0 || x.dtype() == DType::kF32) return Tensor();
  int n = 0;
  for (const LayerParam p : parts) n += adapted(lora, p) ? 1 : 0;
  return n >= 2 ? as_f32(x, ctx) : Tensor();
}

// Linear layer p's forward, plus scale · B·(A·x) when it has an adapter (u = scale · A·x saved
// for the backward pass). With a BF16 output the base GEMM's fp32 result gets the adapter's
// term before its one rounding.
void adapted_forward(Tensor& out, const Tensor& inp, const Tensor& w, const Tensor& bias,
                     LayerParam p, BlockActs& acts, const BlockDims& d, const BlockContext& ctx,
                     const BlockAdapters* lora, const Tensor& inp_f32 = Tensor()) {
  if (!adapted(lora, p)) {
    linear_forward(out, inp, w, bias, d, ctx);
    return;
  }
  MAGIX_CHECK(!d.decode, "LoRA adapters cannot run in a decode call (merge them: merge_lora)");
  const Backend& ops = *ctx.ops;
  const Tensor& a = lora->a[p];
  const Tensor& b = lora->b[p];
  const int64_t N = d.N(), r = a.dim(0), O = b.dim(0);
  Tensor& u = acts.lora_u[p];  // (N, r)
  if (!u.defined() || u.shape() != Shape{N, r}) u = ops.empty({N, r}, DType::kF32);
  ops.matmul_forward(u, adapter_input(inp, p, *lora, ctx, inp_f32), a, nullptr);
  ops.scale(u, lora->scale);
  Tensor y = out.dtype() == DType::kF32 ? out : ops.empty({N, O}, DType::kF32);
  ops.matmul_forward(y, inp, w, optional(bias));
  Tensor lo = ops.empty({N, O}, DType::kF32);
  ops.matmul_forward(lo, u, b, nullptr);
  ops.add(y, lo);
  if (out.dtype() != DType::kF32) ops.copy(out, y);
}

// The adapter's part of linear layer p's backward (after the base weight's): g = scale · dout·B,
// dinp (F32) += g·A, da += gᵀ·x, db += doutᵀ·u. dout and inp of any dtype (widened).
void adapter_backward(Tensor& dinp, const Tensor& dout, const Tensor& inp, LayerParam p,
                      const BlockActs& acts, const BlockContext& ctx, BlockAdapters* lora,
                      const Tensor& inp_f32 = Tensor()) {
  if (!adapted(lora, p)) return;
  const Backend& ops = *ctx.ops;
  const Tensor& u = acts.lora_u[p];
  Tensor g = ops.zeros(u.shape(), DType::kF32);  // (N, r)
  ops.matmul_backward(&g, optional(lora->db[p]), nullptr, as_f32(dout, ctx), u, lora->b[p]);
  ops.scale(g, lora->scale);
  if (lora->dropout <= 0) {
    ops.matmul_backward(&dinp, optional(lora->da[p]), nullptr, g,
                        inp_f32.defined() ? inp_f32 : as_f32(inp, ctx), lora->a[p]);
    return;
  }
  // x went through dropout before A: dA takes the dropped x, and dx the masked g·A.
  Tensor dxa = ops.zeros(inp.shape(), DType::kF32);
  ops.matmul_backward(&dxa, optional(lora->da[p]), nullptr, g, adapter_input(inp, p, *lora, ctx),
                      lora->a[p]);
  dropout_like_input(dxa, dxa, p, *lora, ctx);
  ops.add(dinp, dxa);
}

Tensor heads(const Tensor& t, int64_t B, int64_t T, int64_t H, int64_t D) {
  return t.reshape({B, T, H, D});
}

// q or k (N, H·D) rotated in place, seen as (N, H, D): the table's R dims of each head (all D of
// them, or the first R with partial_rotary_factor).
void rope_heads(const Backend& ops, const Tensor& x, int64_t H, int64_t D, const Tensor& table,
                bool backward) {
  Tensor heads3 = x.reshape({x.dim(0), H, D});  // shares x's storage
  if (backward) {
    ops.rope_backward(heads3, table);
  } else {
    ops.rope_forward(heads3, table);
  }
}

// The T new keys (or values) of each row (N, KD) into cache slots [slot, slot + T): slot j at j,
// or at j mod S in a ring (where only the last S of them are kept).
void write_cache(Tensor& cache, const Tensor& x, const BlockDims& d, int64_t slot, bool ring,
                 const BlockContext& ctx) {
  const int64_t S = cache.dim(1), KD = d.Hkv * d.D;
  MAGIX_CHECK(ring || slot + d.T <= S, "KV cache: positions [{}, {}) beyond its {} slots", slot,
              slot + d.T, S);
  const Tensor slots = cache.reshape({d.B * S, KD});
  for (int64_t b = 0; b < d.B; ++b) {
    // Contiguous runs of slots: one, or two where the ring wraps.
    for (int64_t t = std::max<int64_t>(0, d.T - S); t < d.T;) {
      const int64_t at = (slot + t) % S, n = std::min(d.T - t, S - at);
      Tensor dst = slots.rows(b * S + at, n);
      ctx.ops->copy(dst, x.rows(b * d.T + t, n));
      t += n;
    }
  }
}

// Per-head RMSNorm (q_norm / k_norm) of x (N, H*D) F32 into out (N, H*D), rstd (N*H).
void head_norm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& w, int64_t H,
                       const BlockDims& d, const BlockContext& ctx) {
  const int64_t rows = d.N() * H;
  Tensor o = out.reshape({rows, d.D});
  ctx.ops->rmsnorm_forward(o, rstd, x.reshape({rows, d.D}), w, d.eps, d.norm_offset);
}

// Its backward: dx (N, H*D) F32 = d x (written); gw (D) += d w. A model rank holds only some of
// the heads, so its part of gw is summed over the model axis first.
void head_norm_backward(Tensor& dx, Tensor& gw, const Tensor& dout, const Tensor& x,
                        const Tensor& w, const Tensor& rstd, int64_t H, const BlockDims& d,
                        const BlockContext& ctx) {
  const Backend& ops = *ctx.ops;
  const int64_t rows = d.N() * H;
  const bool partial = ctx.model_comm && ctx.model_comm->size() > 1;
  Tensor part = gw.defined() && partial ? ops.zeros(gw.shape(), DType::kF32) : Tensor();
  Tensor* gp = part.defined() ? &part : optional(gw);
  ops.fill_zero(dx);
  Tensor di = dx.reshape({rows, d.D});
  ops.rmsnorm_backward(di, gp, dout.reshape({rows, d.D}), x.reshape({rows, d.D}), w, rstd,
                       d.norm_offset);
  if (part.defined()) {
    all_reduce_model(part, ctx);
    ops.add(gw, part);
  }
}

// Sandwich norms' output norm, backward: dx (N, C) F32 = d(norm input) (written), gw += d w.
void output_norm_backward(Tensor& dx, Tensor& gw, const Tensor& dout, const Tensor& x,
                          const Tensor& w, const Tensor& rstd, const BlockDims& d,
                          const BlockContext& ctx) {
  ctx.ops->fill_zero(dx);
  ctx.ops->rmsnorm_backward(dx, optional(gw), dout, x, w, rstd, d.norm_offset);
}

}  // namespace

bool BlockAdapters::any() const {
  for (const Tensor& t : a) {
    if (t.defined()) return true;
  }
  return false;
}

BlockActs BlockActs::allocate(const BlockDims& d, const Backend& ops) {
  const int64_t N = d.N();
  const DType g = d.gemm_dtype();
  BlockActs a;
  a.ln1 = ops.zeros({N, d.C}, g);
  a.rstd1 = ops.zeros({N}, DType::kF32);
  a.q = ops.zeros({N, d.Hq * d.D}, g);
  a.k = ops.zeros({N, d.Hkv * d.D}, g);
  a.v = ops.zeros({N, d.Hkv * d.D}, g);
  a.att = ops.zeros({N, d.Hq * d.D}, g);
  a.lse = ops.zeros({d.B, d.Hq, d.T}, DType::kF32);
  a.res2 = ops.zeros({N, d.C}, DType::kF32);
  a.ln2 = ops.zeros({N, d.C}, g);
  a.rstd2 = ops.zeros({N}, DType::kF32);
  a.gate = ops.zeros({N, d.I}, g);
  a.up = ops.zeros({N, d.I}, g);
  a.h = ops.zeros({N, d.I}, g);
  if (d.qk_norm) {
    a.q_raw = ops.zeros({N, d.Hq * d.D}, DType::kF32);
    a.k_raw = ops.zeros({N, d.Hkv * d.D}, DType::kF32);
    a.rstd_q = ops.zeros({N * d.Hq}, DType::kF32);
    a.rstd_k = ops.zeros({N * d.Hkv}, DType::kF32);
  }
  if (d.sandwich) {
    a.att_out = ops.zeros({N, d.C}, DType::kF32);
    a.mlp_out = ops.zeros({N, d.C}, DType::kF32);
    a.rstd_att_out = ops.zeros({N}, DType::kF32);
    a.rstd_mlp_out = ops.zeros({N}, DType::kF32);
  }
  return a;
}

BlockScratch BlockScratch::allocate(const BlockDims& d, const Backend& ops) {
  const int64_t N = d.N();
  const DType g = d.gemm_dtype();
  BlockScratch s;
  s.dln = ops.zeros({N, d.C}, DType::kF32);
  s.datt = ops.zeros({N, d.Hq * d.D}, DType::kF32);
  s.dq = ops.zeros({N, d.Hq * d.D}, DType::kF32);
  s.dk = ops.zeros({N, d.Hkv * d.D}, DType::kF32);
  s.dv = ops.zeros({N, d.Hkv * d.D}, DType::kF32);
  s.dh = ops.zeros({N, d.I}, DType::kF32);
  s.dgate = ops.zeros({N, d.I}, g);
  s.dup = ops.zeros({N, d.I}, g);
  if (g != DType::kF32) {
    s.dx_in = ops.zeros({N, d.C}, g);
    s.datt_in = ops.zeros({N, d.Hq * d.D}, g);
    s.dq_in = ops.zeros({N, d.Hq * d.D}, g);
    s.dk_in = ops.zeros({N, d.Hkv * d.D}, g);
    s.dv_in = ops.zeros({N, d.Hkv * d.D}, g);
  }
  if (d.qk_norm) {
    s.dq_raw = ops.zeros({N, d.Hq * d.D}, DType::kF32);
    s.dk_raw = ops.zeros({N, d.Hkv * d.D}, DType::kF32);
  }
  if (d.sandwich) s.dnormed = ops.zeros({N, d.C}, DType::kF32);
  return s;
}

void block_forward(Tensor& out, const Tensor& inp, const BlockWeights& w, BlockActs& a,
                   const BlockDims& d, const BlockContext& ctx, KvCache* cache,
                   const BlockAdapters* lora) {
  const Backend& ops = *ctx.ops;
  MAGIX_CHECK(!d.decode || (cache && d.T == 1),
              "a decode call takes one token per row and a cache");
  // attention: ln1 -> q, k, v -> rope -> attention -> o_proj (+ all-reduce) -> residual
  ops.rmsnorm_forward(a.ln1, a.rstd1, inp, w[kLn1], d.eps, d.norm_offset);
  {
    const Tensor ln1 = shared_adapter_input(a.ln1, {kWq, kWk, kWv}, lora, ctx);
    adapted_forward(d.qk_norm ? a.q_raw : a.q, a.ln1, w[kWq], w[kBq], kWq, a, d, ctx, lora, ln1);
    adapted_forward(d.qk_norm ? a.k_raw : a.k, a.ln1, w[kWk], w[kBk], kWk, a, d, ctx, lora, ln1);
    adapted_forward(a.v, a.ln1, w[kWv], w[kBv], kWv, a, d, ctx, lora, ln1);
  }
  if (d.qk_norm) {
    head_norm_forward(a.q, a.rstd_q, a.q_raw, w[kQn], d.Hq, d, ctx);
    head_norm_forward(a.k, a.rstd_k, a.k_raw, w[kKn], d.Hkv, d, ctx);
  }
  const Tensor& rope = d.local_rope ? *ctx.rope_local : *ctx.rope;
  rope_heads(ops, a.q, d.Hq, d.D, rope, /*backward=*/false);
  rope_heads(ops, a.k, d.Hkv, d.D, rope, /*backward=*/false);
  if (cache) {
    write_cache(cache->k, a.k, d, cache->slot, cache->ring, ctx);
    write_cache(cache->v, a.v, d, cache->slot, cache->ring, ctx);
  }
  if (d.decode) {
    Tensor att = a.att.reshape({d.B, d.Hq, d.D});
    ops.attention_decode(att, a.q.reshape({d.B, d.Hq, d.D}), cache->k, cache->v, *cache->valid,
                         cache->slot, d.attn_scale, d.window, d.softcap);
  } else {
    const AttentionMask mask{ctx.key_valid, ctx.segment, d.window, d.softcap};
    Tensor att = heads(a.att, d.B, d.T, d.Hq, d.D);
    ops.attention_forward(att, a.lse, heads(a.q, d.B, d.T, d.Hq, d.D),
                          heads(a.k, d.B, d.T, d.Hkv, d.D), heads(a.v, d.B, d.T, d.Hkv, d.D),
                          d.attn_scale, mask);
  }
  // o_proj output goes to `out` first (a free (N, C) buffer), then res2 = inp + out + bo. With
  // sandwich norms it goes to att_out and out = norm(att_out) (no o_proj bias there).
  Tensor& o_out = d.sandwich ? a.att_out : out;
  adapted_forward(o_out, a.att, w[kWo], Tensor(), kWo, a, d, ctx, lora);
  all_reduce_model(o_out, ctx);
  if (d.sandwich) {
    ops.rmsnorm_forward(out, a.rstd_att_out, a.att_out, w[kLn2], d.eps, d.norm_offset);
  }
  ops.residual_forward(a.res2, inp, out, optional(w[kBo]));
  // MLP: ln2 -> gate, up -> act(gate) * up -> down_proj (+ all-reduce) [-> norm] -> residual
  const Tensor& pre_mlp = d.sandwich ? w[kLnPreFfn] : w[kLn2];
  ops.rmsnorm_forward(a.ln2, a.rstd2, a.res2, pre_mlp, d.eps, d.norm_offset);
  {
    const Tensor ln2 = shared_adapter_input(a.ln2, {kWg, kWu}, lora, ctx);
    adapted_forward(a.gate, a.ln2, w[kWg], w[kBg], kWg, a, d, ctx, lora, ln2);
    adapted_forward(a.up, a.ln2, w[kWu], w[kBu], kWu, a, d, ctx, lora, ln2);
  }
  ops.glu_forward(a.h, a.gate, a.up, d.act);
  Tensor& d_out = d.sandwich ? a.mlp_out : out;
  adapted_forward(d_out, a.h, w[kWd], Tensor(), kWd, a, d, ctx, lora);
  all_reduce_model(d_out, ctx);
  if (d.sandwich) {
    ops.rmsnorm_forward(out, a.rstd_mlp_out, a.mlp_out, w[kLnPostFfn], d.eps, d.norm_offset);
  }
  ops.residual_forward(out, a.res2, out, optional(w[kBd]));
}

void block_backward(Tensor& dx, const Tensor& inp, const BlockWeights& w, BlockGrads& g,
                    const BlockActs& a, BlockScratch& s, const BlockDims& d,
                    const BlockContext& ctx, BlockAdapters* lora) {
  const Backend& ops = *ctx.ops;
  MAGIX_CHECK(!d.decode, "no backward pass through a decode call");
  // MLP. dx = d out = d res2 (residual path) and d down_proj output.
  if (g[kBd].defined()) ops.bias_backward(g[kBd], dx);
  // d down_proj output: dx, or through the post-feed-forward norm (sandwich).
  if (d.sandwich) {
    output_norm_backward(s.dnormed, g[kLnPostFfn], dx, a.mlp_out, w[kLnPostFfn], a.rstd_mlp_out, d,
                         ctx);
  }
  const Tensor& dmlp = d.sandwich ? s.dnormed : dx;
  const Tensor& dx_mlp = gemm_input(dmlp, s.dx_in, ctx);
  ops.fill_zero(s.dh);
  ops.matmul_backward(&s.dh, optional(g[kWd]), nullptr, dx_mlp, a.h, w[kWd]);
  adapter_backward(s.dh, dmlp, a.h, kWd, a, ctx, lora);
  ops.glu_backward(s.dgate, s.dup, s.dh, a.gate, a.up, d.act);
  ops.fill_zero(s.dln);
  ops.matmul_backward(&s.dln, optional(g[kWg]), optional(g[kBg]), s.dgate, a.ln2, w[kWg]);
  ops.matmul_backward(&s.dln, optional(g[kWu]), optional(g[kBu]), s.dup, a.ln2, w[kWu]);
  {
    const Tensor ln2 = shared_adapter_input(a.ln2, {kWg, kWu}, lora, ctx);
    adapter_backward(s.dln, s.dgate, a.ln2, kWg, a, ctx, lora, ln2);
    adapter_backward(s.dln, s.dup, a.ln2, kWu, a, ctx, lora, ln2);
  }
  all_reduce_model(s.dln, ctx);  // column-parallel inputs: sum over model ranks
  const LayerParam pre_mlp = d.sandwich ? kLnPreFfn : kLn2;
  ops.rmsnorm_backward(dx, optional(g[pre_mlp]), s.dln, a.res2, w[pre_mlp], a.rstd2, d.norm_offset);
  // Attention. dx = d res2 = d inp (residual path) and d o_proj output (through the
  // post-attention norm with sandwich norms).
  if (g[kBo].defined()) ops.bias_backward(g[kBo], dx);
  if (d.sandwich) {
    output_norm_backward(s.dnormed, g[kLn2], dx, a.att_out, w[kLn2], a.rstd_att_out, d, ctx);
  }
  const Tensor& dattn = d.sandwich ? s.dnormed : dx;
  const Tensor& dx_att = gemm_input(dattn, s.dx_in, ctx);
  ops.fill_zero(s.datt);
  ops.matmul_backward(&s.datt, optional(g[kWo]), nullptr, dx_att, a.att, w[kWo]);
  adapter_backward(s.datt, dattn, a.att, kWo, a, ctx, lora);
  ops.fill_zero(s.dq);
  ops.fill_zero(s.dk);
  ops.fill_zero(s.dv);
  Tensor dq = heads(s.dq, d.B, d.T, d.Hq, d.D), dk = heads(s.dk, d.B, d.T, d.Hkv, d.D),
         dv = heads(s.dv, d.B, d.T, d.Hkv, d.D);
  const Tensor& datt = gemm_input(s.datt, s.datt_in, ctx);
  ops.attention_backward(dq, dk, dv, heads(datt, d.B, d.T, d.Hq, d.D),
                         heads(a.att, d.B, d.T, d.Hq, d.D), a.lse, heads(a.q, d.B, d.T, d.Hq, d.D),
                         heads(a.k, d.B, d.T, d.Hkv, d.D), heads(a.v, d.B, d.T, d.Hkv, d.D),
                         d.attn_scale,
                         AttentionMask{ctx.key_valid, ctx.segment, d.window, d.softcap});
  const Tensor& rope = d.local_rope ? *ctx.rope_local : *ctx.rope;
  rope_heads(ops, s.dq, d.Hq, d.D, rope, /*backward=*/true);
  rope_heads(ops, s.dk, d.Hkv, d.D, rope, /*backward=*/true);
  // d q, k projections' outputs: through the per-head norms with qk_norm.
  if (d.qk_norm) {
    head_norm_backward(s.dq_raw, g[kQn], s.dq, a.q_raw, w[kQn], a.rstd_q, d.Hq, d, ctx);
    head_norm_backward(s.dk_raw, g[kKn], s.dk, a.k_raw, w[kKn], a.rstd_k, d.Hkv, d, ctx);
  }
  Tensor& dq_proj = d.qk_norm ? s.dq_raw : s.dq;
  Tensor& dk_proj = d.qk_norm ? s.dk_raw : s.dk;
  ops.fill_zero(s.dln);
  linear_backward(&s.dln, g[kWq], g[kBq], dq_proj, gemm_input(dq_proj, s.dq_in, ctx), a.ln1, w[kWq],
                  ctx);
  linear_backward(&s.dln, g[kWk], g[kBk], dk_proj, gemm_input(dk_proj, s.dk_in, ctx), a.ln1, w[kWk],
                  ctx);
  linear_backward(&s.dln, g[kWv], g[kBv], s.dv, gemm_input(s.dv, s.dv_in, ctx), a.ln1, w[kWv], ctx);
  {
    const Tensor ln1 = shared_adapter_input(a.ln1, {kWq, kWk, kWv}, lora, ctx);
    adapter_backward(s.dln, dq_proj, a.ln1, kWq, a, ctx, lora, ln1);
    adapter_backward(s.dln, dk_proj, a.ln1, kWk, a, ctx, lora, ln1);
    adapter_backward(s.dln, s.dv, a.ln1, kWv, a, ctx, lora, ln1);
  }
  all_reduce_model(s.dln, ctx);
  ops.rmsnorm_backward(dx, optional(g[kLn1]), s.dln, inp, w[kLn1], a.rstd1, d.norm_offset);
}

}  // namespace magix::model
