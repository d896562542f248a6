// The op table's argument checks of the sequence ops (backends/backend.hpp): rotary embedding and
// attention (training and decode), as op_checks.cpp does the others.
#include <algorithm>
#include <string>

#include "backends/op_check.hpp"

namespace magix {
namespace {

using backends::all_of;
using backends::heads;
using backends::Heads;
using backends::is;
using backends::mat;
using backends::Mat;
using backends::NamedList;
using backends::OpCheck;

// The rope operand x (N, H, D), or (N, H·R), against its table (N, R) F32, R <= D even.
void check_rope(const OpCheck& c, const char* what, const Tensor& x, const Tensor& table) {
  c.on(what, x);
  c.dtype("table", table, DType::kF32);
  const Mat t = mat(table);
  MAGIX_CHECK(t.rows > 0 && t.cols > 0 && t.cols % 2 == 0, "{}: table {} is not (N, R), R even",
              c.op(), shape_str(table.shape()));
  if (x.ndim() == 3) {
    MAGIX_CHECK(x.dim(0) == t.rows && x.dim(2) >= t.cols,
                "{}: {} {} is not (N={}, H, D>={}) for the table {}", c.op(), what,
                shape_str(x.shape()), t.rows, t.cols, shape_str(table.shape()));
  } else {
    MAGIX_CHECK(x.numel() % (t.rows * t.cols) == 0,
                "{}: {} {} is not (N={}, H, D={}) for the table {}", c.op(), what,
                shape_str(x.shape()), t.rows, t.cols, shape_str(table.shape()));
  }
}

}  // namespace

// ---- rotary position embedding -----------------------------------------------------------------

void Backend::rope_table(Tensor& table, const Tensor& pos, const Tensor& inv_freq) const {
  const OpCheck c(*this, "rope_table");
  c.dtype("table", table, DType::kF32);
  c.dtype("pos", pos, DType::kI32);
  c.dtype("inv_freq", inv_freq, DType::kF32);
  const int64_t D = 2 * inv_freq.numel();
  MAGIX_CHECK(D > 0, "rope_table: no frequencies");
  c.numel("table", table, pos.numel() * D);
  do_rope_table(table, pos, inv_freq);
}

void Backend::rope_forward(Tensor& x, const Tensor& table) const {
  const OpCheck c(*this, "rope_forward");
  check_rope(c, "x", x, table);
  c.float_kind("x", x);
  do_rope_forward(x, table);
}

void Backend::rope_backward(Tensor& dx, const Tensor& table) const {
  const OpCheck c(*this, "rope_backward");
  check_rope(c, "dx", dx, table);
  c.dtype("dx", dx, DType::kF32);
  do_rope_backward(dx, table);
}

// ---- attention ---------------------------------------------------------------------------------

void Backend::attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                                const Tensor& v, float scale, const AttentionMask& mask) const {
  const OpCheck c(*this, "attention_forward");
  c.on("out", out);
  c.on("q", q);
  c.on("k", k);
  c.on("v", v);
  const Heads hq = c.four_d("q", q), hk = c.four_d("k", k);
  MAGIX_CHECK(hk.B == hq.B && hk.T == hq.T && hk.D == hq.D && v.shape() == k.shape() &&
                  out.shape() == q.shape(),
              "attention_forward: q {}, k {}, v {}, out {} do not match", shape_str(q.shape()),
              shape_str(k.shape()), shape_str(v.shape()), shape_str(out.shape()));
  c.head_counts(hq.H, hk.H, hq.D);
  c.dtype("lse", lse, DType::kF32);
  c.numel("lse", lse, hq.B * hq.H * hq.T);
  c.mask(mask, hq.B, hq.T);
  if (!all_of({&q, &k, &v, &out}, DType::kF32) && !all_of({&q, &k, &v, &out}, DType::kBF16)) {
    c.no_kernel({{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}});
  }
  do_attention_forward(out, lse, q, k, v, scale, mask);
}

void Backend::attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                                 const Tensor& out, const Tensor& lse, const Tensor& q,
                                 const Tensor& k, const Tensor& v, float scale,
                                 const AttentionMask& mask) const {
  const OpCheck c(*this, "attention_backward");
  const NamedList all = {{"dq", &dq},   {"dk", &dk}, {"dv", &dv}, {"dout", &dout},
                         {"out", &out}, {"q", &q},   {"k", &k},   {"v", &v}};
  for (const auto& [what, t] : all) c.on(what, *t);
  const Heads hq = c.four_d("q", q), hk = c.four_d("k", k);
  MAGIX_CHECK(hk.B == hq.B && hk.T == hq.T && hk.D == hq.D && v.shape() == k.shape() &&
                  out.shape() == q.shape() && dout.shape() == q.shape() &&
                  dq.shape() == q.shape() && dk.shape() == k.shape() && dv.shape() == k.shape(),
              "attention_backward: q {}, k {}, v {} and their gradients do not match",
              shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
  c.head_counts(hq.H, hk.H, hq.D);
  c.dtype("lse", lse, DType::kF32);
  c.numel("lse", lse, hq.B * hq.H * hq.T);
  c.mask(mask, hq.B, hq.T);
  // All F32, or bf16 mixed precision: bf16 activations, fp32 gradients.
  const bool f32 = all_of({&dq, &dk, &dv, &dout, &out, &q, &k, &v}, DType::kF32);
  const bool mixed =
      all_of({&dout, &out, &q, &k, &v}, DType::kBF16) && all_of({&dq, &dk, &dv}, DType::kF32);
  if (!f32 && !mixed) c.no_kernel(all);
  do_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, scale, mask);
}

void Backend::attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache,
                               const Tensor& v_cache, const Tensor& valid, int64_t slot,
                               float scale, int64_t window, float softcap) const {
  const OpCheck c(*this, "attention_decode");
  c.dtype("q", q, DType::kF32);
  c.dtype("out", out, DType::kF32);
  c.on("k_cache", k_cache);
  c.on("v_cache", v_cache);
  MAGIX_CHECK(
      (is(k_cache, DType::kF32) || is(k_cache, DType::kBF16)) && v_cache.dtype() == k_cache.dtype(),
      "attention_decode: the cache is {} / {}, must be F32 or BF16 (both)",
      dtype_name(k_cache.dtype()), dtype_name(v_cache.dtype()));
  c.dtype("valid", valid, DType::kI32);
  const Heads cache = c.four_d("k_cache", k_cache);  // (B, S, Hkv, D)
  MAGIX_CHECK(cache.H > 0 && cache.D > 0 && q.ndim() == 3 && q.dim(1) > 0,
              "attention_decode: empty heads: q {}, cache {}", shape_str(q.shape()),
              shape_str(k_cache.shape()));
  MAGIX_CHECK(q.dim(0) == cache.B && q.dim(2) == cache.D && out.shape() == q.shape() &&
                  v_cache.shape() == k_cache.shape() && q.dim(1) % cache.H == 0,
              "attention_decode: q {} (B, Hq, D) does not match the cache {} (B, S, Hkv, D)",
              shape_str(q.shape()), shape_str(k_cache.shape()));
  c.numel("valid", valid, cache.B * cache.T);
  // Slot j is held at j mod S: the slots the query sees, [slot - window + 1, slot], must fit.
  const int64_t seen = window > 0 ? std::min(window, slot + 1) : slot + 1;
  MAGIX_CHECK(slot >= 0 && (window > 0 ? seen <= cache.T : slot < cache.T),
              "attention_decode: slot {} (window {}) outside the cache's {} slots", slot, window,
              cache.T);
  do_attention_decode(out, q, k_cache, v_cache, valid, slot, scale, window, softcap);
}

}  // namespace magix
