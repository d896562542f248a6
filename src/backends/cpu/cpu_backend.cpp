// The CPU backend: the op table (backends/backend.hpp) over the kernels of this folder. Each op's
// arguments are checked by Backend (backends/op_checks.cpp) before its kernel here runs; a kernel
// picks the function of its dtype combination.
#include "backends/cpu/cpu_backend.hpp"

#include <cmath>
#include <cstring>
#include <vector>

#include "backends/cpu/attention.hpp"
#include "backends/cpu/attention_decode.hpp"
#include "backends/cpu/convert.hpp"
#include "backends/cpu/cross_entropy.hpp"
#include "backends/cpu/embedding.hpp"
#include "backends/cpu/gemm.hpp"
#include "backends/cpu/gemm_bf16.hpp"
#include "backends/cpu/glu.hpp"
#include "backends/cpu/lora.hpp"
#include "backends/cpu/matmul.hpp"
#include "backends/cpu/matmul_decode.hpp"
#include "backends/cpu/optimizer.hpp"
#include "backends/cpu/residual.hpp"
#include "backends/cpu/rmsnorm.hpp"
#include "backends/cpu/rope.hpp"
#include "backends/cpu/softcap.hpp"
#include "backends/op_shapes.hpp"
#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"
#include "magix/hash.hpp"

namespace magix::cpu {
namespace {

using backends::heads;
using backends::Heads;
using backends::mat;
using backends::Mat;
using backends::rope_dims;
using backends::RopeDims;

const float* f32(const Tensor& t) {
  return t.data<float>();
}
float* f32(Tensor& t) {
  return t.data<float>();
}
const float* f32_or_null(const Tensor* t) {
  return t ? t->data<float>() : nullptr;
}
float* f32_or_null(Tensor* t) {
  return t ? t->data<float>() : nullptr;
}
const uint16_t* b16(const Tensor& t) {
  return t.data<uint16_t>();
}
uint16_t* b16(Tensor& t) {
  return t.data<uint16_t>();
}
bool is(const Tensor& t, DType d) {
  return t.dtype() == d;
}
const int32_t* i32(const Tensor& t) {
  return t.data<int32_t>();
}

// The kernels' view of an AttentionMask (its tensors checked by the op).
cpu::AttentionMask mask_view(const magix::AttentionMask& m) {
  cpu::AttentionMask v;
  if (m.key_valid) v.key_valid = i32(*m.key_valid);
  if (m.segment) v.segment = i32(*m.segment);
  v.sliding_window = m.window;
  v.softcap = m.softcap;
  return v;
}

}  // namespace

Device CpuBackend::device() const {
  return Device::kCpu;
}

std::string CpuBackend::describe() const {
  return fmt::format("cpu: fp32 GEMM {}; bf16 GEMM {}", gemm_backend_name(),
                     gemm_bf16_engine_name());
}

Tensor CpuBackend::do_zeros(const Shape& shape, DType dtype) const {
  return Tensor(shape, dtype);
}

Tensor CpuBackend::do_empty(const Shape& shape, DType dtype) const {
  return Tensor::empty(shape, dtype);
}

void CpuBackend::do_fill_zero(Tensor& t) const {
  t.fill_zero();
}

void CpuBackend::do_copy(Tensor& dst, const Tensor& src) const {
  if (dst.dtype() == src.dtype()) {
    if (dst.nbytes() > 0 && dst.bytes() != src.bytes()) {
      std::memmove(dst.bytes(), src.bytes(), dst.nbytes());
    }
  } else if (is(dst, DType::kF32)) {  // from BF16
    bf16_to_f32(b16(src), f32(dst), dst.numel());
  } else {  // F32 to BF16
    f32_to_bf16(f32(src), b16(dst), dst.numel());
  }
}

void CpuBackend::do_add(Tensor& dst, const Tensor& src) const {
  float* d = f32(dst);
  const float* s = f32(src);
  const int64_t n = dst.numel();
#pragma omp parallel for if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) d[i] += s[i];
}

void CpuBackend::do_scale(Tensor& x, float s) const {
  float* d = f32(x);
  const int64_t n = x.numel();
#pragma omp parallel for if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) d[i] *= s;
}

void CpuBackend::do_dropout(Tensor& out, const Tensor& inp, uint64_t key, int64_t row0,
                            int64_t col0, int64_t cols, float p) const {
  const Mat x = mat(inp);
  const auto threshold = static_cast<uint64_t>(std::llround(double(p) * 16777216.0));
  const float keep_scale = 1.0f / (1.0f - p);
  float* o = f32(out);
  const bool bf16 = inp.dtype() == DType::kBF16;
  const float* xf = bf16 ? nullptr : f32(inp);
  const uint16_t* xh = bf16 ? b16(inp) : nullptr;
#pragma omp parallel for if (x.rows * x.cols > (1 << 16))
  for (int64_t n = 0; n < x.rows; ++n) {
    for (int64_t j = 0; j < x.cols; ++j) {
      const int64_t i = n * x.cols + j;
      const auto e = static_cast<uint64_t>((row0 + n) * cols + col0 + j);
      const bool keep = (splitmix64(key ^ splitmix64(e)) >> 40) >= threshold;
      const float v = bf16 ? bf16_to_float(xh[i]) : xf[i];
      o[i] = keep ? v * keep_scale : 0.0f;
    }
  }
}

void CpuBackend::do_matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight,
                                   const Tensor* bias) const {
  const Mat x = mat(inp), w = mat(weight);
  if (is(inp, DType::kF32)) {  // F32 x F32 -> F32
    cpu::matmul_forward(f32(out), f32(inp), f32(weight), f32_or_null(bias), x.rows, x.cols, w.rows);
  } else if (is(out, DType::kF32)) {  // BF16 x BF16 -> F32
    cpu::matmul_forward(f32(out), b16(inp), b16(weight), f32_or_null(bias), x.rows, x.cols, w.rows);
  } else {  // BF16 x BF16 -> BF16
    cpu::matmul_forward(b16(out), b16(inp), b16(weight), f32_or_null(bias), x.rows, x.cols, w.rows);
  }
}

void CpuBackend::do_matmul_backward(Tensor* dinp, Tensor* dweight, Tensor* dbias,
                                    const Tensor& dout, const Tensor& inp,
                                    const Tensor& weight) const {
  const Mat x = mat(inp), w = mat(weight);
  if (is(dout, DType::kF32)) {
    cpu::matmul_backward(f32_or_null(dinp), f32_or_null(dweight), f32_or_null(dbias), f32(dout),
                         f32(inp), f32(weight), x.rows, x.cols, w.rows);
  } else {
    cpu::matmul_backward(f32_or_null(dinp), f32_or_null(dweight), f32_or_null(dbias), b16(dout),
                         b16(inp), b16(weight), x.rows, x.cols, w.rows);
  }
}

void CpuBackend::do_matmul_decode(Tensor& out, const Tensor& inp, const Tensor& weight,
                                  const Tensor* bias) const {
  const Mat x = mat(inp), w = mat(weight);
  if (is(weight, DType::kF32)) {
    cpu::matmul_decode(f32(out), f32(inp), f32(weight), f32_or_null(bias), x.rows, x.cols, w.rows);
  } else {
    cpu::matmul_decode(f32(out), f32(inp), b16(weight), f32_or_null(bias), x.rows, x.cols, w.rows);
  }
}

void CpuBackend::do_residual_forward(Tensor& out, const Tensor& residual, const Tensor& y,
                                     const Tensor* bias) const {
  const Mat m = mat(out);
  residual_add(f32(out), f32(residual), f32(y), f32_or_null(bias), m.rows, m.cols);
}

void CpuBackend::do_bias_backward(Tensor& dbias, const Tensor& dout) const {
  const Mat m = mat(dout);
  column_sums(f32(dbias), f32(dout), m.rows, m.cols);
}

void CpuBackend::do_rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& inp,
                                    const Tensor& weight, float eps, float offset) const {
  const Mat m = mat(inp);
  if (is(out, DType::kF32)) {
    cpu::rmsnorm_forward(f32(out), f32(rstd), f32(inp), f32(weight), m.rows, m.cols, eps, offset);
  } else {
    cpu::rmsnorm_forward(b16(out), f32(rstd), f32(inp), f32(weight), m.rows, m.cols, eps, offset);
  }
}

void CpuBackend::do_rmsnorm_backward(Tensor& dinp, Tensor* dweight, const Tensor& dout,
                                     const Tensor& inp, const Tensor& weight, const Tensor& rstd,
                                     float offset) const {
  const Mat m = mat(inp);
  cpu::rmsnorm_backward(f32(dinp), f32_or_null(dweight), f32(dout), f32(inp), f32(weight),
                        f32(rstd), m.rows, m.cols, offset);
}

void CpuBackend::do_rope_table(Tensor& table, const Tensor& pos, const Tensor& inv_freq) const {
  cpu::rope_table(f32(table), i32(pos), f32(inv_freq), pos.numel(), 2 * inv_freq.numel());
}

void CpuBackend::do_rope_forward(Tensor& x, const Tensor& table) const {
  const RopeDims r = rope_dims(x, table);
  if (is(x, DType::kBF16)) {
    cpu::rope_forward(b16(x), f32(table), r.N, r.H, r.D, r.R);
  } else {
    cpu::rope_forward(f32(x), f32(table), r.N, r.H, r.D, r.R);
  }
}

void CpuBackend::do_rope_backward(Tensor& dx, const Tensor& table) const {
  const RopeDims r = rope_dims(dx, table);
  cpu::rope_backward(f32(dx), f32(table), r.N, r.H, r.D, r.R);
}

void CpuBackend::do_attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                                      const Tensor& v, float scale,
                                      const magix::AttentionMask& mask) const {
  const Heads hq = heads(q), hk = heads(k);
  const cpu::AttentionMask m = mask_view(mask);
  if (is(q, DType::kF32)) {
    cpu::attention_forward(f32(out), f32(lse), f32(q), f32(k), f32(v), hq.B, hq.T, hq.H, hk.H, hq.D,
                           scale, m);
  } else {
    cpu::attention_forward(b16(out), f32(lse), b16(q), b16(k), b16(v), hq.B, hq.T, hq.H, hk.H, hq.D,
                           scale, m);
  }
}

void CpuBackend::do_attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                                       const Tensor& out, const Tensor& lse, const Tensor& q,
                                       const Tensor& k, const Tensor& v, float scale,
                                       const magix::AttentionMask& mask) const {
  const Heads hq = heads(q), hk = heads(k);
  const cpu::AttentionMask m = mask_view(mask);
  if (is(q, DType::kF32)) {
    cpu::attention_backward(f32(dq), f32(dk), f32(dv), f32(dout), f32(out), f32(lse), f32(q),
                            f32(k), f32(v), hq.B, hq.T, hq.H, hk.H, hq.D, scale, m);
  } else {  // bf16 mixed precision: bf16 activations, fp32 gradients
    cpu::attention_backward(f32(dq), f32(dk), f32(dv), b16(dout), b16(out), f32(lse), b16(q),
                            b16(k), b16(v), hq.B, hq.T, hq.H, hk.H, hq.D, scale, m);
  }
}

void CpuBackend::do_attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache,
                                     const Tensor& v_cache, const Tensor& valid, int64_t slot,
                                     float scale, int64_t window, float softcap) const {
  const Heads c = heads(k_cache);  // (B, S, Hkv, D)
  if (is(k_cache, DType::kBF16)) {
    const KvViewBf16 view{b16(k_cache), b16(v_cache), i32(valid), c.T};
    cpu::attention_decode(f32(out), f32(q), view, c.B, slot, q.dim(1), c.H, c.D, scale, window,
                          softcap);
  } else {
    const KvView view{f32(k_cache), f32(v_cache), i32(valid), c.T};
    cpu::attention_decode(f32(out), f32(q), view, c.B, slot, q.dim(1), c.H, c.D, scale, window,
                          softcap);
  }
}

void CpuBackend::do_softcap_forward(Tensor& x, float cap) const {
  if (is(x, DType::kF32)) {
    cpu::softcap_forward(f32(x), x.numel(), cap);
  } else {
    cpu::softcap_forward(b16(x), x.numel(), cap);
  }
}

void CpuBackend::do_softcap_backward(Tensor& dx, const Tensor& y, float cap) const {
  if (is(dx, DType::kF32)) {
    cpu::softcap_backward(f32(dx), f32(y), dx.numel(), cap);
  } else {
    cpu::softcap_backward(b16(dx), b16(y), dx.numel(), cap);
  }
}

void CpuBackend::do_glu_forward(Tensor& out, const Tensor& gate, const Tensor& up,
                                Activation act) const {
  if (is(gate, DType::kF32)) {
    cpu::glu_forward(f32(out), f32(gate), f32(up), gate.numel(), act);
  } else {
    cpu::glu_forward(b16(out), b16(gate), b16(up), gate.numel(), act);
  }
}

void CpuBackend::do_glu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                                 const Tensor& up, Activation act) const {
  if (is(gate, DType::kF32)) {
    dgate.fill_zero();
    dup.fill_zero();
    cpu::glu_backward(f32(dgate), f32(dup), f32(dout), f32(gate), f32(up), dout.numel(), act);
  } else {
    cpu::glu_backward(b16(dgate), b16(dup), f32(dout), b16(gate), b16(up), dout.numel(), act);
  }
}

void CpuBackend::do_embedding_forward(Tensor& out, const Tensor& ids, const Tensor& table,
                                      int64_t row_start, float scale) const {
  const Mat t = mat(table);
  cpu::embedding_forward(f32(out), i32(ids), table.bytes(), is(table, DType::kBF16), ids.numel(),
                         t.cols, row_start, t.rows, scale);
}

void CpuBackend::do_embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& ids,
                                       int64_t row_start, float scale) const {
  const Mat t = mat(dtable);
  cpu::embedding_backward(f32(dtable), f32(dout), i32(ids), ids.numel(), t.cols, row_start, t.rows,
                          scale);
}

void CpuBackend::do_cross_entropy_max(Tensor& row_max, const Tensor& logits) const {
  const Mat l = mat(logits);
  if (is(logits, DType::kBF16)) {
    cpu::cross_entropy_max(f32(row_max), b16(logits), l.rows, l.cols);
  } else {
    cpu::cross_entropy_max(f32(row_max), f32(logits), l.rows, l.cols);
  }
}

void CpuBackend::do_cross_entropy_sumexp(Tensor& sumexp, Tensor& target_logit, const Tensor& logits,
                                         const Tensor& row_max, const Tensor& targets,
                                         int64_t v0) const {
  const Mat l = mat(logits);
  if (is(logits, DType::kBF16)) {
    cpu::cross_entropy_sumexp(f32(sumexp), f32(target_logit), b16(logits), f32(row_max),
                              i32(targets), v0, l.rows, l.cols);
  } else {
    cpu::cross_entropy_sumexp(f32(sumexp), f32(target_logit), f32(logits), f32(row_max),
                              i32(targets), v0, l.rows, l.cols);
  }
}

void CpuBackend::do_cross_entropy_loss(Tensor& losses, const Tensor& row_max, const Tensor& sumexp,
                                       const Tensor& target_logit, const Tensor& targets) const {
  cpu::cross_entropy_loss(f32(losses), f32(row_max), f32(sumexp), f32(target_logit), i32(targets),
                          targets.numel());
}

void CpuBackend::do_cross_entropy_backward(Tensor& dlogits, const Tensor& logits,
                                           const Tensor& row_max, const Tensor& sumexp,
                                           const Tensor& targets, float dloss, int64_t v0) const {
  const Mat l = mat(logits);
  const std::vector<float> per_row(static_cast<size_t>(l.rows), dloss);
  if (is(logits, DType::kBF16)) {
    cpu::cross_entropy_backward(b16(dlogits), b16(logits), f32(row_max), f32(sumexp), i32(targets),
                                per_row.data(), v0, l.rows, l.cols);
  } else {
    cpu::cross_entropy_backward(f32(dlogits), f32(logits), f32(row_max), f32(sumexp), i32(targets),
                                per_row.data(), v0, l.rows, l.cols);
  }
}

void CpuBackend::do_adamw_update(Tensor& w, const Tensor& g, Tensor& m, Tensor& v,
                                 const AdamWScalars& k) const {
  if (is(w, DType::kF32)) {
    cpu::adamw_update(f32(w), f32(g), f32(m), f32(v), w.numel(), k);
  } else {
    cpu::adamw_update(b16(w), f32(g), f32(m), f32(v), w.numel(), k);
  }
}

double CpuBackend::do_sum_of_squares(const Tensor& g) const {
  return cpu::sum_of_squares(f32(g), g.numel());
}

void CpuBackend::do_lora_merge(Tensor& w, const Tensor& a, const Tensor& b, float scale,
                               const Tensor* base) const {
  cpu::lora_merge(f32(w), f32(a), f32(b), w.dim(0), w.dim(1), a.dim(0), scale, base);
}

void CpuBackend::do_lora_project(Tensor& da, Tensor& db, const Tensor& dw, const Tensor& a,
                                 const Tensor& b, float scale) const {
  cpu::lora_project(f32(dw), f32(a), f32(b), dw.dim(0), dw.dim(1), a.dim(0), scale, f32(da),
                    f32(db));
}

const CpuBackend& cpu_backend() {
  static const CpuBackend backend;
  return backend;
}

}  // namespace magix::cpu
