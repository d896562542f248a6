// The op table's argument checks (backends/backend.hpp), once for every backend: each op checks
// its tensors (defined, on the backend's device, dtype and dtype combination, shape), its
// optional arguments and its scalars, then calls the backend's kernel (Backend::do_<op>). A
// backend's kernel adds only the limits of its own hardware or library.
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
