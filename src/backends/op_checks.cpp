// The op table's argument checks (backends/backend.hpp), once for every backend: each op checks
// its tensors (defined, on the backend's device, dtype and dtype combination, shape), its
// optional arguments and its scalars, then calls the backend's kernel (Backend::do_<op>). A
// backend's kernel adds only the limits of its own hardware or library.
#include <initializer_list>
#include <string>
#include <utility>

#include "backends/backend.hpp"
#include "backends/op_shapes.hpp"
#include "magix/error.hpp"

namespace magix {
namespace {

using backends::heads;
using backends::Heads;
using backends::mat;
using backends::Mat;

// A tensor argument and its name in messages.
using Named = std::pair<const char*, const Tensor*>;
using NamedList = std::initializer_list<Named>;

bool is(const Tensor& t, DType d) {
  return t.dtype() == d;
}

// The checks of one call: the op's name, for every message, and the backend's device.
class OpCheck {
 public:
  OpCheck(const Backend& backend, const char* op) : op_(op), device_(backend.device()) {}

  // t defined and on the backend's device.
  void on(const char* what, const Tensor& t) const {
    defined(what, t);
    if (t.device() != device_) foreign(what, t);
  }
  // copy: on the backend's device or on the host.
  void on_or_host(const char* what, const Tensor& t) const {
    defined(what, t);
    if (t.device() != device_ && t.device() != Device::kCpu) foreign(what, t);
  }
  void dtype(const char* what, const Tensor& t, DType want) const {
    on(what, t);
    MAGIX_CHECK(t.dtype() == want, "{}: {} is {}, must be {}", op_, what, dtype_name(t.dtype()),
                dtype_name(want));
  }
  // F32 or BF16.
  void float_kind(const char* what, const Tensor& t) const {
    on(what, t);
    MAGIX_CHECK(is(t, DType::kF32) || is(t, DType::kBF16), "{}: {} is {}, must be F32 or BF16", op_,
                what, dtype_name(t.dtype()));
  }
  void numel(const char* what, const Tensor& t, int64_t want) const {
    MAGIX_CHECK(t.numel() == want, "{}: {} has {} elements {}, expected {}", op_, what, t.numel(),
                shape_str(t.shape()), want);
  }
  // An optional F32 tensor of `want` elements (bias, a gradient).
  void f32_or_null(const char* what, const Tensor* t, int64_t want) const {
    if (!t) return;
    dtype(what, *t, DType::kF32);
    numel(what, *t, want);
  }
  // (B, T, H, D).
  Heads four_d(const char* what, const Tensor& t) const {
    MAGIX_CHECK(t.ndim() == 4, "{}: {} must be (B, T, H, D), got {}", op_, what,
                shape_str(t.shape()));
    return heads(t);
  }
  // weight (OC, C) chains with inp (N, C).
  void chains(const Tensor& inp, const Tensor& weight) const {
    MAGIX_CHECK(weight.ndim() == 2 && mat(inp).cols == mat(weight).cols,
                "{}: inp {} and weight {} do not chain (weight is (OC, C))", op_,
                shape_str(inp.shape()), shape_str(weight.shape()));
  }
  // Query head h reads KV head h / (Hq / Hkv).
  void head_counts(int64_t Hq, int64_t Hkv, int64_t D) const {
    MAGIX_CHECK(Hq > 0 && Hkv > 0 && Hq % Hkv == 0,
                "{}: {} query heads is not a multiple of {} kv heads", op_, Hq, Hkv);
    MAGIX_CHECK(D > 0, "{}: head dim {} is not positive", op_, D);
  }
  void mask(const AttentionMask& m, int64_t B, int64_t T) const {
    for (const auto& [what, t] : NamedList{{"key_valid", m.key_valid}, {"segment", m.segment}}) {
      if (!t) continue;
      dtype(what, *t, DType::kI32);
      numel(what, *t, B * T);
    }
  }
  // A vocabulary of at least one entry per row.
  void vocab(const Mat& logits) const {
    MAGIX_CHECK(logits.cols > 0, "{}: bad sizes N={} V={}", op_, logits.rows, logits.cols);
  }
  // A dtype combination the op does not list: its tensors' dtypes.
  [[noreturn]] void no_kernel(NamedList tensors) const {
    std::string dtypes;
    for (const auto& [what, t] : tensors) {
      dtypes += fmt::format("{}{} {}", dtypes.empty() ? "" : ", ", what, dtype_name(t->dtype()));
    }
    MAGIX_FAIL("{}: no kernel for {}", op_, dtypes);
  }
  const char* op() const { return op_; }

 private:
  void defined(const char* what, const Tensor& t) const {
    MAGIX_CHECK(t.defined(), "{}: {} is an undefined tensor", op_, what);
  }
  [[noreturn]] void foreign(const char* what, const Tensor& t) const {
    MAGIX_FAIL("{}: {} is a {} {} tensor given to the {} backend (move it with to_device or copy)",
               op_, what, device_name(t.device()), shape_str(t.shape()), device_name(device_));
  }

  const char* op_;
  Device device_;
};

// Every one of ts has dtype d.
bool all_of(std::initializer_list<const Tensor*> ts, DType d) {
  for (const Tensor* t : ts)
    if (!is(*t, d)) return false;
  return true;
}

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

// ---- memory ------------------------------------------------------------------------------------

Tensor Backend::zeros(const Shape& shape, DType dtype) const {
  (void)shape_numel(shape);  // a negative or overflowing dim is an error naming the shape
  return do_zeros(shape, dtype);
}

Tensor Backend::empty(const Shape& shape, DType dtype) const {
  (void)shape_numel(shape);
  return do_empty(shape, dtype);
}

void Backend::fill_zero(Tensor& t) const {
  OpCheck(*this, "fill_zero").on("t", t);
  do_fill_zero(t);
}

void Backend::copy(Tensor& dst, const Tensor& src) const {
  const OpCheck c(*this, "copy");
  c.on_or_host("dst", dst);
  c.on_or_host("src", src);
  c.numel("src", src, dst.numel());
  const bool converts = (is(dst, DType::kF32) && is(src, DType::kBF16)) ||
                        (is(dst, DType::kBF16) && is(src, DType::kF32));
  MAGIX_CHECK(dst.dtype() == src.dtype() || converts,
              "copy: no conversion from {} to {} ({} elements)", dtype_name(src.dtype()),
              dtype_name(dst.dtype()), dst.numel());
  do_copy(dst, src);
}

void Backend::add(Tensor& dst, const Tensor& src) const {
  const OpCheck c(*this, "add");
  c.dtype("dst", dst, DType::kF32);
  c.dtype("src", src, DType::kF32);
  c.numel("src", src, dst.numel());
  do_add(dst, src);
}

void Backend::scale(Tensor& x, float s) const {
  OpCheck(*this, "scale").dtype("x", x, DType::kF32);
  do_scale(x, s);
}

void Backend::dropout(Tensor& out, const Tensor& inp, uint64_t key, int64_t row0, int64_t col0,
                      int64_t cols, float p) const {
  const OpCheck c(*this, "dropout");
  c.dtype("out", out, DType::kF32);
  c.float_kind("inp", inp);
  c.numel("out", out, inp.numel());
  MAGIX_CHECK(p >= 0 && p < 1, "dropout: p must be in [0, 1), got {}", p);
  const int64_t width = mat(inp).cols;
  MAGIX_CHECK(row0 >= 0 && col0 >= 0 && col0 + width <= cols,
              "dropout: columns [{}, {}) outside the {} global columns", col0, col0 + width, cols);
  do_dropout(out, inp, key, row0, col0, cols, p);
}

// ---- linear layers -----------------------------------------------------------------------------

void Backend::matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight,
                             const Tensor* bias) const {
  const OpCheck c(*this, "matmul_forward");
  c.on("out", out);
  c.on("inp", inp);
  c.on("weight", weight);
  c.chains(inp, weight);
  const int64_t OC = mat(weight).rows;
  c.numel("out", out, mat(inp).rows * OC);
  c.f32_or_null("bias", bias, OC);
  const bool f32 = all_of({&inp, &weight, &out}, DType::kF32);
  const bool bf16 =
      all_of({&inp, &weight}, DType::kBF16) && (is(out, DType::kF32) || is(out, DType::kBF16));
  if (!f32 && !bf16) c.no_kernel({{"inp", &inp}, {"weight", &weight}, {"out", &out}});
  do_matmul_forward(out, inp, weight, bias);
}

void Backend::matmul_backward(Tensor* dinp, Tensor* dweight, Tensor* dbias, const Tensor& dout,
                              const Tensor& inp, const Tensor& weight) const {
  const OpCheck c(*this, "matmul_backward");
  c.on("dout", dout);
  c.on("inp", inp);
  c.on("weight", weight);
  c.chains(inp, weight);
  const int64_t OC = mat(weight).rows;
  c.numel("dout", dout, mat(inp).rows * OC);
  c.f32_or_null("dinp", dinp, inp.numel());
  c.f32_or_null("dweight", dweight, weight.numel());
  c.f32_or_null("dbias", dbias, OC);
  if (!all_of({&dout, &inp, &weight}, DType::kF32) &&
      !all_of({&dout, &inp, &weight}, DType::kBF16)) {
    c.no_kernel({{"dout", &dout}, {"inp", &inp}, {"weight", &weight}});
  }
  do_matmul_backward(dinp, dweight, dbias, dout, inp, weight);
}

void Backend::matmul_decode(Tensor& out, const Tensor& inp, const Tensor& weight,
                            const Tensor* bias) const {
  const OpCheck c(*this, "matmul_decode");
  c.dtype("out", out, DType::kF32);
  c.dtype("inp", inp, DType::kF32);
  c.float_kind("weight", weight);
  c.chains(inp, weight);
  const int64_t OC = mat(weight).rows;
  c.numel("out", out, mat(inp).rows * OC);
  c.f32_or_null("bias", bias, OC);
  do_matmul_decode(out, inp, weight, bias);
}

// ---- residual stream ---------------------------------------------------------------------------

void Backend::residual_forward(Tensor& out, const Tensor& residual, const Tensor& y,
                               const Tensor* bias) const {
  const OpCheck c(*this, "residual_forward");
  c.dtype("out", out, DType::kF32);
  c.dtype("residual", residual, DType::kF32);
  c.dtype("y", y, DType::kF32);
  c.numel("residual", residual, out.numel());
  c.numel("y", y, out.numel());
  c.f32_or_null("bias", bias, mat(out).cols);
  do_residual_forward(out, residual, y, bias);
}

void Backend::bias_backward(Tensor& dbias, const Tensor& dout) const {
  const OpCheck c(*this, "bias_backward");
  c.dtype("dbias", dbias, DType::kF32);
  c.dtype("dout", dout, DType::kF32);
  c.numel("dbias", dbias, mat(dout).cols);
  do_bias_backward(dbias, dout);
}

// ---- RMSNorm -----------------------------------------------------------------------------------

void Backend::rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                              float eps, float offset) const {
  const OpCheck c(*this, "rmsnorm_forward");
  c.dtype("inp", inp, DType::kF32);
  c.dtype("weight", weight, DType::kF32);
  c.dtype("rstd", rstd, DType::kF32);
  c.float_kind("out", out);
  const Mat m = mat(inp);
  c.numel("out", out, inp.numel());
  c.numel("weight", weight, m.cols);
  c.numel("rstd", rstd, m.rows);
  MAGIX_CHECK(m.rows == 0 || m.cols > 0, "rmsnorm_forward: rows of 0 channels");
  do_rmsnorm_forward(out, rstd, inp, weight, eps, offset);
}

void Backend::rmsnorm_backward(Tensor& dinp, Tensor* dweight, const Tensor& dout, const Tensor& inp,
                               const Tensor& weight, const Tensor& rstd, float offset) const {
  const OpCheck c(*this, "rmsnorm_backward");
  for (const auto& [what, t] : NamedList{
           {"dinp", &dinp}, {"dout", &dout}, {"inp", &inp}, {"weight", &weight}, {"rstd", &rstd}})
    c.dtype(what, *t, DType::kF32);
  const Mat m = mat(inp);
  c.numel("dinp", dinp, inp.numel());
  c.numel("dout", dout, inp.numel());
  c.numel("weight", weight, m.cols);
  c.numel("rstd", rstd, m.rows);
  c.f32_or_null("dweight", dweight, m.cols);
  MAGIX_CHECK(m.rows == 0 || m.cols > 0, "rmsnorm_backward: rows of 0 channels");
  do_rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, offset);
}

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
  for (const auto& [what, t] : NamedList{{"dq", &dq},
                                         {"dk", &dk},
                                         {"dv", &dv},
                                         {"dout", &dout},
                                         {"out", &out},
                                         {"q", &q},
                                         {"k", &k},
                                         {"v", &v}}) {
    c.on(what, *t);
  }
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
  if (!f32 && !mixed) {
    c.no_kernel({{"dq", &dq},
                 {"dk", &dk},
                 {"dv", &dv},
                 {"dout", &dout},
                 {"out", &out},
                 {"q", &q},
                 {"k", &k},
                 {"v", &v}});
  }
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

// ---- logit soft-capping ------------------------------------------------------------------------

void Backend::softcap_forward(Tensor& x, float cap) const {
  const OpCheck c(*this, "softcap_forward");
  c.float_kind("x", x);
  MAGIX_CHECK(cap > 0, "softcap_forward: cap must be positive, got {}", cap);
  do_softcap_forward(x, cap);
}

void Backend::softcap_backward(Tensor& dx, const Tensor& y, float cap) const {
  const OpCheck c(*this, "softcap_backward");
  c.on("dx", dx);
  c.on("y", y);
  MAGIX_CHECK(cap > 0, "softcap_backward: cap must be positive, got {}", cap);
  c.numel("y", y, dx.numel());
  if (!all_of({&dx, &y}, DType::kF32) && !all_of({&dx, &y}, DType::kBF16))
    c.no_kernel({{"dx", &dx}, {"y", &y}});
  do_softcap_backward(dx, y, cap);
}

// ---- gated MLP ---------------------------------------------------------------------------------

void Backend::glu_forward(Tensor& out, const Tensor& gate, const Tensor& up, Activation act) const {
  const OpCheck c(*this, "glu_forward");
  c.on("out", out);
  c.on("gate", gate);
  c.on("up", up);
  c.numel("up", up, gate.numel());
  c.numel("out", out, gate.numel());
  if (!all_of({&gate, &up, &out}, DType::kF32) && !all_of({&gate, &up, &out}, DType::kBF16)) {
    c.no_kernel({{"gate", &gate}, {"up", &up}, {"out", &out}});
  }
  do_glu_forward(out, gate, up, act);
}

void Backend::glu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                           const Tensor& up, Activation act) const {
  const OpCheck c(*this, "glu_backward");
  c.dtype("dout", dout, DType::kF32);
  for (const auto& [what, t] :
       NamedList{{"dgate", &dgate}, {"dup", &dup}, {"gate", &gate}, {"up", &up}}) {
    c.on(what, *t);
    c.numel(what, *t, dout.numel());
  }
  if (!all_of({&dgate, &dup, &gate, &up}, DType::kF32) &&
      !all_of({&dgate, &dup, &gate, &up}, DType::kBF16)) {
    c.no_kernel({{"dgate", &dgate}, {"dup", &dup}, {"gate", &gate}, {"up", &up}});
  }
  do_glu_backward(dgate, dup, dout, gate, up, act);
}

// ---- token embedding ---------------------------------------------------------------------------

void Backend::embedding_forward(Tensor& out, const Tensor& ids, const Tensor& table,
                                int64_t row_start, float scale) const {
  const OpCheck c(*this, "embedding_forward");
  c.dtype("out", out, DType::kF32);
  c.dtype("ids", ids, DType::kI32);
  c.float_kind("table", table);  // BF16: rows widened by the kernel, the table never whole
  c.numel("out", out, ids.numel() * mat(table).cols);
  MAGIX_CHECK(row_start >= 0, "embedding_forward: row_start {} < 0", row_start);
  do_embedding_forward(out, ids, table, row_start, scale);
}

void Backend::embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& ids,
                                 int64_t row_start, float scale) const {
  const OpCheck c(*this, "embedding_backward");
  c.dtype("dtable", dtable, DType::kF32);
  c.dtype("dout", dout, DType::kF32);
  c.dtype("ids", ids, DType::kI32);
  c.numel("dout", dout, ids.numel() * mat(dtable).cols);
  MAGIX_CHECK(row_start >= 0, "embedding_backward: row_start {} < 0", row_start);
  do_embedding_backward(dtable, dout, ids, row_start, scale);
}

// ---- softmax cross-entropy ---------------------------------------------------------------------

void Backend::cross_entropy_max(Tensor& row_max, const Tensor& logits) const {
  const OpCheck c(*this, "cross_entropy_max");
  c.float_kind("logits", logits);
  c.dtype("row_max", row_max, DType::kF32);
  const Mat l = mat(logits);
  c.numel("row_max", row_max, l.rows);
  c.vocab(l);
  do_cross_entropy_max(row_max, logits);
}

void Backend::cross_entropy_sumexp(Tensor& sumexp, Tensor& target_logit, const Tensor& logits,
                                   const Tensor& row_max, const Tensor& targets, int64_t v0) const {
  const OpCheck c(*this, "cross_entropy_sumexp");
  c.float_kind("logits", logits);
  c.dtype("targets", targets, DType::kI32);
  const Mat l = mat(logits);
  for (const auto& [what, t] :
       NamedList{{"sumexp", &sumexp}, {"target_logit", &target_logit}, {"row_max", &row_max}}) {
    c.dtype(what, *t, DType::kF32);
    c.numel(what, *t, l.rows);
  }
  c.numel("targets", targets, l.rows);
  c.vocab(l);
  do_cross_entropy_sumexp(sumexp, target_logit, logits, row_max, targets, v0);
}

void Backend::cross_entropy_loss(Tensor& losses, const Tensor& row_max, const Tensor& sumexp,
                                 const Tensor& target_logit, const Tensor& targets) const {
  const OpCheck c(*this, "cross_entropy_loss");
  c.dtype("targets", targets, DType::kI32);
  for (const auto& [what, t] : NamedList{{"losses", &losses},
                                         {"row_max", &row_max},
                                         {"sumexp", &sumexp},
                                         {"target_logit", &target_logit}}) {
    c.dtype(what, *t, DType::kF32);
    c.numel(what, *t, targets.numel());
  }
  do_cross_entropy_loss(losses, row_max, sumexp, target_logit, targets);
}

void Backend::cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& row_max,
                                     const Tensor& sumexp, const Tensor& targets, float dloss,
                                     int64_t v0) const {
  const OpCheck c(*this, "cross_entropy_backward");
  c.float_kind("logits", logits);
  c.dtype("dlogits", dlogits, logits.dtype());
  c.dtype("targets", targets, DType::kI32);
  const Mat l = mat(logits);
  c.numel("dlogits", dlogits, logits.numel());
  for (const auto& [what, t] : NamedList{{"row_max", &row_max}, {"sumexp", &sumexp}}) {
    c.dtype(what, *t, DType::kF32);
    c.numel(what, *t, l.rows);
  }
  c.numel("targets", targets, l.rows);
  c.vocab(l);
  do_cross_entropy_backward(dlogits, logits, row_max, sumexp, targets, dloss, v0);
}

// ---- optimizer ---------------------------------------------------------------------------------

void Backend::adamw_update(Tensor& w, const Tensor& g, Tensor& m, Tensor& v,
                           const AdamWScalars& k) const {
  const OpCheck c(*this, "adamw_update");
  c.on("w", w);
  for (const auto& [what, t] : NamedList{{"g", &g}, {"m", &m}, {"v", &v}}) {
    c.dtype(what, *t, DType::kF32);
    c.numel(what, *t, w.numel());
  }
  MAGIX_CHECK(is(w, DType::kF32) || is(w, DType::kBF16),
              "adamw_update: parameters are F32 or BF16, not {}", dtype_name(w.dtype()));
  do_adamw_update(w, g, m, v, k);
}

double Backend::sum_of_squares(const Tensor& g) const {
  OpCheck(*this, "sum_of_squares").dtype("g", g, DType::kF32);
  return do_sum_of_squares(g);
}

// ---- LoRA --------------------------------------------------------------------------------------

void Backend::lora_merge(Tensor& w, const Tensor& a, const Tensor& b, float scale,
                         const Tensor* base) const {
  const OpCheck c(*this, "lora_merge");
  c.dtype("w", w, DType::kF32);
  c.dtype("a", a, DType::kF32);
  c.dtype("b", b, DType::kF32);
  MAGIX_CHECK(w.ndim() == 2 && a.ndim() == 2 && b.ndim() == 2 && a.dim(1) == w.dim(1) &&
                  b.dim(0) == w.dim(0) && a.dim(0) == b.dim(1),
              "lora_merge: w {}, a {}, b {} are not (O, I), (r, I), (O, r)", shape_str(w.shape()),
              shape_str(a.shape()), shape_str(b.shape()));
  if (base) {
    c.float_kind("base", *base);
    c.numel("base", *base, w.numel());
  }
  do_lora_merge(w, a, b, scale, base);
}

void Backend::lora_project(Tensor& da, Tensor& db, const Tensor& dw, const Tensor& a,
                           const Tensor& b, float scale) const {
  const OpCheck c(*this, "lora_project");
  for (const auto& [what, t] :
       NamedList{{"da", &da}, {"db", &db}, {"dw", &dw}, {"a", &a}, {"b", &b}})
    c.dtype(what, *t, DType::kF32);
  MAGIX_CHECK(dw.ndim() == 2 && a.ndim() == 2 && b.ndim() == 2 && a.dim(1) == dw.dim(1) &&
                  b.dim(0) == dw.dim(0) && a.dim(0) == b.dim(1) && da.shape() == a.shape() &&
                  db.shape() == b.shape(),
              "lora_project: dw {}, a {}, b {} are not (O, I), (r, I), (O, r)",
              shape_str(dw.shape()), shape_str(a.shape()), shape_str(b.shape()));
  do_lora_project(da, db, dw, a, b, scale);
}

}  // namespace magix
