// The CPU backend: the op table (backends/backend.hpp) over the kernels of this folder. Each op
// checks its tensors (device, dtype, shape) and calls the kernel of its dtype combination.
#include "backends/cpu/cpu_backend.hpp"

#include <array>
#include <cmath>
#include <cstring>
#include <initializer_list>
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
#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"
#include "magix/hash.hpp"

namespace magix::cpu {
namespace {

// A tensor read as a matrix: (numel / last dim, last dim).
struct Mat {
  int64_t rows, cols;
};

Mat mat(const Tensor& t) {
  if (t.ndim() == 0) return {1, 1};
  const int64_t cols = t.dim(-1);
  return {cols == 0 ? 0 : t.numel() / cols, cols};
}

void check_cpu(const char* op, const Tensor& t) {
  MAGIX_CHECK(t.defined(), "{}: an undefined tensor", op);
  MAGIX_CHECK(t.device() == Device::kCpu, "{}: a {} tensor given to the cpu backend", op,
              device_name(t.device()));
}

void check_dtype(const char* op, const char* what, const Tensor& t, DType want) {
  check_cpu(op, t);
  MAGIX_CHECK(t.dtype() == want, "{}: {} is {}, must be {}", op, what, dtype_name(t.dtype()),
              dtype_name(want));
}

void check_numel(const char* op, const char* what, const Tensor& t, int64_t want) {
  MAGIX_CHECK(t.numel() == want, "{}: {} has {} elements {}, expected {}", op, what, t.numel(),
              shape_str(t.shape()), want);
}

void check_logits(const char* op, const Tensor& logits) {
  check_cpu(op, logits);
  MAGIX_CHECK(logits.dtype() == DType::kF32 || logits.dtype() == DType::kBF16,
              "{}: logits are {}, must be F32 or BF16", op, dtype_name(logits.dtype()));
}

[[noreturn]] void unsupported(const char* op, const Tensor& a, const Tensor& b) {
  MAGIX_FAIL("{}: the cpu backend has no kernel for {} x {}", op, dtype_name(a.dtype()),
             dtype_name(b.dtype()));
}

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

// (B, T, H, D) of an attention tensor.
struct Heads {
  int64_t B, T, H, D;
};

Heads heads(const char* op, const char* what, const Tensor& t) {
  MAGIX_CHECK(t.ndim() == 4, "{}: {} must be (B, T, H, D), got {}", op, what, shape_str(t.shape()));
  return {t.dim(0), t.dim(1), t.dim(2), t.dim(3)};
}

cpu::AttentionMask mask_view(const char* op, const magix::AttentionMask& m, int64_t B, int64_t T) {
  cpu::AttentionMask v;
  if (m.key_valid) {
    check_dtype(op, "key_valid", *m.key_valid, DType::kI32);
    check_numel(op, "key_valid", *m.key_valid, B * T);
    v.key_valid = i32(*m.key_valid);
  }
  if (m.segment) {
    check_dtype(op, "segment", *m.segment, DType::kI32);
    check_numel(op, "segment", *m.segment, B * T);
    v.segment = i32(*m.segment);
  }
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

Tensor CpuBackend::zeros(const Shape& shape, DType dtype) const {
  return Tensor(shape, dtype);
}

Tensor CpuBackend::empty(const Shape& shape, DType dtype) const {
  return Tensor::empty(shape, dtype);
}

void CpuBackend::fill_zero(Tensor& t) const {
  check_cpu("fill_zero", t);
  t.fill_zero();
}

void CpuBackend::copy(Tensor& dst, const Tensor& src) const {
  check_cpu("copy", dst);
  check_cpu("copy", src);
  check_numel("copy", "src", src, dst.numel());
  const size_t n = static_cast<size_t>(dst.numel());
  if (dst.dtype() == src.dtype()) {
    if (dst.nbytes() > 0 && dst.bytes() != src.bytes()) {
      std::memmove(dst.bytes(), src.bytes(), dst.nbytes());
    }
  } else if (dst.dtype() == DType::kF32 && src.dtype() == DType::kBF16) {
    bf16_to_f32(b16(src), f32(dst), dst.numel());
  } else if (dst.dtype() == DType::kBF16 && src.dtype() == DType::kF32) {
    f32_to_bf16(f32(src), b16(dst), dst.numel());
  } else {
    MAGIX_FAIL("copy: no conversion from {} to {} ({} elements)", dtype_name(src.dtype()),
               dtype_name(dst.dtype()), n);
  }
}

void CpuBackend::add(Tensor& dst, const Tensor& src) const {
  check_dtype("add", "dst", dst, DType::kF32);
  check_dtype("add", "src", src, DType::kF32);
  check_numel("add", "src", src, dst.numel());
  float* d = f32(dst);
  const float* s = f32(src);
  const int64_t n = dst.numel();
#pragma omp parallel for if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) d[i] += s[i];
}

void CpuBackend::scale(Tensor& x, float s) const {
  check_dtype("scale", "x", x, DType::kF32);
  float* d = f32(x);
  const int64_t n = x.numel();
#pragma omp parallel for if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) d[i] *= s;
}

void CpuBackend::dropout(Tensor& out, const Tensor& inp, uint64_t key, int64_t row0, int64_t col0,
                         int64_t cols, float p) const {
  const char* op = "dropout";
  check_dtype(op, "out", out, DType::kF32);
  check_cpu(op, inp);
  MAGIX_CHECK(inp.dtype() == DType::kF32 || inp.dtype() == DType::kBF16,
              "{}: inp is {}, must be F32 or BF16", op, dtype_name(inp.dtype()));
  check_numel(op, "out", out, inp.numel());
  MAGIX_CHECK(p >= 0 && p < 1, "{}: p must be in [0, 1), got {}", op, p);
  const Mat x = mat(inp);
  MAGIX_CHECK(row0 >= 0 && col0 >= 0 && col0 + x.cols <= cols,
              "{}: columns [{}, {}) outside the {} global columns", op, col0, col0 + x.cols, cols);
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

void CpuBackend::matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight,
                                const Tensor* bias) const {
  const char* op = "matmul_forward";
  check_cpu(op, out);
  check_cpu(op, inp);
  check_cpu(op, weight);
  const Mat x = mat(inp), w = mat(weight);
  MAGIX_CHECK(weight.ndim() == 2 && x.cols == w.cols,
              "{}: inp {} and weight {} do not chain (weight is (OC, C))", op,
              shape_str(inp.shape()), shape_str(weight.shape()));
  check_numel(op, "out", out, x.rows * w.rows);
  if (bias) {
    check_dtype(op, "bias", *bias, DType::kF32);
    check_numel(op, "bias", *bias, w.rows);
  }
  if (inp.dtype() == DType::kF32 && weight.dtype() == DType::kF32 && out.dtype() == DType::kF32) {
    cpu::matmul_forward(f32(out), f32(inp), f32(weight), f32_or_null(bias), x.rows, x.cols, w.rows);
    return;
  }
  if (is(inp, DType::kBF16) && is(weight, DType::kBF16) && is(out, DType::kF32)) {
    cpu::matmul_forward(f32(out), b16(inp), b16(weight), f32_or_null(bias), x.rows, x.cols, w.rows);
    return;
  }
  if (is(inp, DType::kBF16) && is(weight, DType::kBF16) && is(out, DType::kBF16)) {
    cpu::matmul_forward(b16(out), b16(inp), b16(weight), f32_or_null(bias), x.rows, x.cols, w.rows);
    return;
  }
  unsupported(op, inp, weight);
}

void CpuBackend::matmul_backward(Tensor* dinp, Tensor* dweight, Tensor* dbias, const Tensor& dout,
                                 const Tensor& inp, const Tensor& weight) const {
  const char* op = "matmul_backward";
  check_cpu(op, dout);
  check_cpu(op, inp);
  check_cpu(op, weight);
  const Mat x = mat(inp), w = mat(weight);
  MAGIX_CHECK(weight.ndim() == 2 && x.cols == w.cols,
              "{}: inp {} and weight {} do not chain (weight is (OC, C))", op,
              shape_str(inp.shape()), shape_str(weight.shape()));
  check_numel(op, "dout", dout, x.rows * w.rows);
  if (dinp) {
    check_dtype(op, "dinp", *dinp, DType::kF32);
    check_numel(op, "dinp", *dinp, inp.numel());
  }
  if (dweight) {
    check_dtype(op, "dweight", *dweight, DType::kF32);
    check_numel(op, "dweight", *dweight, weight.numel());
  }
  if (dbias) {
    check_dtype(op, "dbias", *dbias, DType::kF32);
    check_numel(op, "dbias", *dbias, w.rows);
  }
  if (dout.dtype() == DType::kF32 && inp.dtype() == DType::kF32 && weight.dtype() == DType::kF32) {
    cpu::matmul_backward(f32_or_null(dinp), f32_or_null(dweight), f32_or_null(dbias), f32(dout),
                         f32(inp), f32(weight), x.rows, x.cols, w.rows);
    return;
  }
  if (is(dout, DType::kBF16) && is(inp, DType::kBF16) && is(weight, DType::kBF16)) {
    cpu::matmul_backward(f32_or_null(dinp), f32_or_null(dweight), f32_or_null(dbias), b16(dout),
                         b16(inp), b16(weight), x.rows, x.cols, w.rows);
    return;
  }
  unsupported(op, dout, weight);
}

void CpuBackend::matmul_decode(Tensor& out, const Tensor& inp, const Tensor& weight,
                               const Tensor* bias) const {
  const char* op = "matmul_decode";
  check_dtype(op, "out", out, DType::kF32);
  check_dtype(op, "inp", inp, DType::kF32);
  check_cpu(op, weight);
  const Mat x = mat(inp), w = mat(weight);
  MAGIX_CHECK(weight.ndim() == 2 && x.cols == w.cols,
              "{}: inp {} and weight {} do not chain (weight is (OC, C))", op,
              shape_str(inp.shape()), shape_str(weight.shape()));
  check_numel(op, "out", out, x.rows * w.rows);
  if (bias) {
    check_dtype(op, "bias", *bias, DType::kF32);
    check_numel(op, "bias", *bias, w.rows);
  }
  if (weight.dtype() == DType::kF32) {
    cpu::matmul_decode(f32(out), f32(inp), f32(weight), f32_or_null(bias), x.rows, x.cols, w.rows);
    return;
  }
  if (weight.dtype() == DType::kBF16) {
    cpu::matmul_decode(f32(out), f32(inp), b16(weight), f32_or_null(bias), x.rows, x.cols, w.rows);
    return;
  }
  unsupported(op, inp, weight);
}

void CpuBackend::residual_forward(Tensor& out, const Tensor& residual, const Tensor& y,
                                  const Tensor* bias) const {
  const char* op = "residual_forward";
  check_dtype(op, "out", out, DType::kF32);
  check_dtype(op, "residual", residual, DType::kF32);
  check_dtype(op, "y", y, DType::kF32);
  const Mat m = mat(out);
  check_numel(op, "residual", residual, out.numel());
  check_numel(op, "y", y, out.numel());
  if (bias) {
    check_dtype(op, "bias", *bias, DType::kF32);
    check_numel(op, "bias", *bias, m.cols);
  }
  residual_add(f32(out), f32(residual), f32(y), f32_or_null(bias), m.rows, m.cols);
}

void CpuBackend::bias_backward(Tensor& dbias, const Tensor& dout) const {
  const char* op = "bias_backward";
  check_dtype(op, "dbias", dbias, DType::kF32);
  check_dtype(op, "dout", dout, DType::kF32);
  const Mat m = mat(dout);
  check_numel(op, "dbias", dbias, m.cols);
  column_sums(f32(dbias), f32(dout), m.rows, m.cols);
}

void CpuBackend::rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                                 float eps, float offset) const {
  const char* op = "rmsnorm_forward";
  check_dtype(op, "inp", inp, DType::kF32);
  check_dtype(op, "weight", weight, DType::kF32);
  check_dtype(op, "rstd", rstd, DType::kF32);
  check_cpu(op, out);
  const Mat m = mat(inp);
  check_numel(op, "out", out, inp.numel());
  check_numel(op, "weight", weight, m.cols);
  check_numel(op, "rstd", rstd, m.rows);
  if (out.dtype() == DType::kF32) {
    cpu::rmsnorm_forward(f32(out), f32(rstd), f32(inp), f32(weight), m.rows, m.cols, eps, offset);
    return;
  }
  if (out.dtype() == DType::kBF16) {
    cpu::rmsnorm_forward(b16(out), f32(rstd), f32(inp), f32(weight), m.rows, m.cols, eps, offset);
    return;
  }
  unsupported(op, out, inp);
}

void CpuBackend::rmsnorm_backward(Tensor& dinp, Tensor* dweight, const Tensor& dout,
                                  const Tensor& inp, const Tensor& weight, const Tensor& rstd,
                                  float offset) const {
  const char* op = "rmsnorm_backward";
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dinp, &dout, &inp, &weight, &rstd}) {
    check_dtype(op, "every tensor", *t, DType::kF32);
  }
  const Mat m = mat(inp);
  check_numel(op, "dinp", dinp, inp.numel());
  check_numel(op, "dout", dout, inp.numel());
  check_numel(op, "weight", weight, m.cols);
  check_numel(op, "rstd", rstd, m.rows);
  if (dweight) {
    check_dtype(op, "dweight", *dweight, DType::kF32);
    check_numel(op, "dweight", *dweight, m.cols);
  }
  cpu::rmsnorm_backward(f32(dinp), f32_or_null(dweight), f32(dout), f32(inp), f32(weight),
                        f32(rstd), m.rows, m.cols, offset);
}

void CpuBackend::rope_table(Tensor& table, const Tensor& pos, const Tensor& inv_freq) const {
  check_dtype("rope_table", "table", table, DType::kF32);
  check_dtype("rope_table", "pos", pos, DType::kI32);
  check_dtype("rope_table", "inv_freq", inv_freq, DType::kF32);
  const int64_t D = 2 * inv_freq.numel(), N = pos.numel();
  check_numel("rope_table", "table", table, N * D);
  cpu::rope_table(f32(table), i32(pos), f32(inv_freq), N, D);
}

namespace {

// (N, H, D) of a rope operand against its table (N, D).
std::array<int64_t, 3> rope_dims(const char* op, const Tensor& x, const Tensor& table) {
  check_cpu(op, x);
  check_dtype(op, "table", table, DType::kF32);
  const Mat t = mat(table);
  MAGIX_CHECK(t.rows > 0 && t.cols > 0 && t.cols % 2 == 0 && x.numel() % (t.rows * t.cols) == 0,
              "{}: x {} is not (N={}, H, D={}) for the table {}", op, shape_str(x.shape()), t.rows,
              t.cols, shape_str(table.shape()));
  return {t.rows, x.numel() / (t.rows * t.cols), t.cols};
}

}  // namespace

void CpuBackend::rope_forward(Tensor& x, const Tensor& table) const {
  const auto [N, H, D] = rope_dims("rope_forward", x, table);
  if (is(x, DType::kBF16)) {
    cpu::rope_forward(b16(x), f32(table), N, H, D);
  } else {
    check_dtype("rope_forward", "x", x, DType::kF32);
    cpu::rope_forward(f32(x), f32(table), N, H, D);
  }
}

void CpuBackend::rope_backward(Tensor& dx, const Tensor& table) const {
  const auto [N, H, D] = rope_dims("rope_backward", dx, table);
  check_dtype("rope_backward", "dx", dx, DType::kF32);
  cpu::rope_backward(f32(dx), f32(table), N, H, D);
}

void CpuBackend::attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                                   const Tensor& v, float scale,
                                   const magix::AttentionMask& mask) const {
  const char* op = "attention_forward";
  for (const Tensor* t : std::initializer_list<const Tensor*>{&out, &q, &k, &v}) check_cpu(op, *t);
  const Heads hq = heads(op, "q", q), hk = heads(op, "k", k);
  MAGIX_CHECK(hk.B == hq.B && hk.T == hq.T && hk.D == hq.D && v.shape() == k.shape() &&
                  out.shape() == q.shape(),
              "{}: q {}, k {}, v {}, out {} do not match", op, shape_str(q.shape()),
              shape_str(k.shape()), shape_str(v.shape()), shape_str(out.shape()));
  check_dtype(op, "lse", lse, DType::kF32);
  check_numel(op, "lse", lse, hq.B * hq.H * hq.T);
  const cpu::AttentionMask m = mask_view(op, mask, hq.B, hq.T);
  if (q.dtype() == DType::kF32 && k.dtype() == DType::kF32 && v.dtype() == DType::kF32 &&
      out.dtype() == DType::kF32) {
    cpu::attention_forward(f32(out), f32(lse), f32(q), f32(k), f32(v), hq.B, hq.T, hq.H, hk.H, hq.D,
                           scale, m);
    return;
  }
  if (is(q, DType::kBF16) && is(k, DType::kBF16) && is(v, DType::kBF16) && is(out, DType::kBF16)) {
    cpu::attention_forward(b16(out), f32(lse), b16(q), b16(k), b16(v), hq.B, hq.T, hq.H, hk.H, hq.D,
                           scale, m);
    return;
  }
  unsupported(op, q, k);
}

void CpuBackend::attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                                    const Tensor& out, const Tensor& lse, const Tensor& q,
                                    const Tensor& k, const Tensor& v, float scale,
                                    const magix::AttentionMask& mask) const {
  const char* op = "attention_backward";
  const Heads hq = heads(op, "q", q), hk = heads(op, "k", k);
  MAGIX_CHECK(hk.B == hq.B && hk.T == hq.T && hk.D == hq.D && v.shape() == k.shape() &&
                  out.shape() == q.shape() && dout.shape() == q.shape() &&
                  dq.shape() == q.shape() && dk.shape() == k.shape() && dv.shape() == k.shape(),
              "{}: q {}, k {}, v {} and their gradients do not match", op, shape_str(q.shape()),
              shape_str(k.shape()), shape_str(v.shape()));
  check_dtype(op, "lse", lse, DType::kF32);
  check_numel(op, "lse", lse, hq.B * hq.H * hq.T);
  const cpu::AttentionMask m = mask_view(op, mask, hq.B, hq.T);
  bool all_f32 = true, inputs_bf16 = true;
  for (const Tensor* t :
       std::initializer_list<const Tensor*>{&dq, &dk, &dv, &dout, &out, &q, &k, &v}) {
    check_cpu(op, *t);
    all_f32 = all_f32 && t->dtype() == DType::kF32;
  }
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dout, &out, &q, &k, &v}) {
    inputs_bf16 = inputs_bf16 && t->dtype() == DType::kBF16;
  }
  if (all_f32) {
    cpu::attention_backward(f32(dq), f32(dk), f32(dv), f32(dout), f32(out), f32(lse), f32(q),
                            f32(k), f32(v), hq.B, hq.T, hq.H, hk.H, hq.D, scale, m);
    return;
  }
  // bf16 mixed precision: bf16 activations, fp32 gradients.
  if (inputs_bf16 && is(dq, DType::kF32) && is(dk, DType::kF32) && is(dv, DType::kF32)) {
    cpu::attention_backward(f32(dq), f32(dk), f32(dv), b16(dout), b16(out), f32(lse), b16(q),
                            b16(k), b16(v), hq.B, hq.T, hq.H, hk.H, hq.D, scale, m);
    return;
  }
  unsupported(op, q, dout);
}

void CpuBackend::attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache,
                                  const Tensor& v_cache, const Tensor& valid, int64_t slot,
                                  float scale, int64_t window, float softcap) const {
  const char* op = "attention_decode";
  check_dtype(op, "q", q, DType::kF32);
  check_dtype(op, "out", out, DType::kF32);
  check_cpu(op, k_cache);
  check_cpu(op, v_cache);
  MAGIX_CHECK(
      (is(k_cache, DType::kF32) || is(k_cache, DType::kBF16)) && v_cache.dtype() == k_cache.dtype(),
      "{}: the cache is {} / {}, must be F32 or BF16 (both)", op, dtype_name(k_cache.dtype()),
      dtype_name(v_cache.dtype()));
  check_dtype(op, "valid", valid, DType::kI32);
  const Heads c = heads(op, "k_cache", k_cache);  // (B, S, Hkv, D)
  MAGIX_CHECK(c.H > 0 && c.D > 0 && q.ndim() == 3 && q.dim(1) > 0,
              "{}: empty heads: q {}, cache {}", op, shape_str(q.shape()),
              shape_str(k_cache.shape()));
  MAGIX_CHECK(q.ndim() == 3 && q.dim(0) == c.B && q.dim(2) == c.D && out.shape() == q.shape() &&
                  v_cache.shape() == k_cache.shape() && q.dim(1) % c.H == 0,
              "{}: q {} (B, Hq, D) does not match the cache {} (B, S, Hkv, D)", op,
              shape_str(q.shape()), shape_str(k_cache.shape()));
  check_numel(op, "valid", valid, c.B * c.T);
  MAGIX_CHECK(slot >= 0 && slot < c.T, "{}: slot {} outside the cache's {} slots", op, slot, c.T);
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

void CpuBackend::softcap_forward(Tensor& x, float cap) const {
  const char* op = "softcap_forward";
  check_cpu(op, x);
  MAGIX_CHECK(cap > 0, "{}: cap must be positive, got {}", op, cap);
  if (is(x, DType::kF32)) return cpu::softcap_forward(f32(x), x.numel(), cap);
  if (is(x, DType::kBF16)) return cpu::softcap_forward(b16(x), x.numel(), cap);
  unsupported(op, x, x);
}

void CpuBackend::softcap_backward(Tensor& dx, const Tensor& y, float cap) const {
  const char* op = "softcap_backward";
  check_cpu(op, dx);
  check_cpu(op, y);
  MAGIX_CHECK(cap > 0, "{}: cap must be positive, got {}", op, cap);
  check_numel(op, "y", y, dx.numel());
  if (is(dx, DType::kF32) && is(y, DType::kF32)) {
    return cpu::softcap_backward(f32(dx), f32(y), dx.numel(), cap);
  }
  if (is(dx, DType::kBF16) && is(y, DType::kBF16)) {
    return cpu::softcap_backward(b16(dx), b16(y), dx.numel(), cap);
  }
  unsupported(op, dx, y);
}

void CpuBackend::glu_forward(Tensor& out, const Tensor& gate, const Tensor& up,
                             Activation act) const {
  const char* op = "glu_forward";
  check_cpu(op, out);
  check_cpu(op, gate);
  check_cpu(op, up);
  check_numel(op, "up", up, gate.numel());
  check_numel(op, "out", out, gate.numel());
  if (gate.dtype() == DType::kF32 && up.dtype() == DType::kF32 && out.dtype() == DType::kF32) {
    cpu::glu_forward(f32(out), f32(gate), f32(up), gate.numel(), act);
    return;
  }
  if (is(gate, DType::kBF16) && is(up, DType::kBF16) && is(out, DType::kBF16)) {
    cpu::glu_forward(b16(out), b16(gate), b16(up), gate.numel(), act);
    return;
  }
  unsupported(op, gate, out);
}

void CpuBackend::glu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                              const Tensor& up, Activation act) const {
  const char* op = "glu_backward";
  check_dtype(op, "dout", dout, DType::kF32);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dgate, &dup, &gate, &up}) {
    check_cpu(op, *t);
    check_numel(op, "gate/up and their gradients", *t, dout.numel());
  }
  if (dgate.dtype() == DType::kF32 && dup.dtype() == DType::kF32 && gate.dtype() == DType::kF32 &&
      up.dtype() == DType::kF32) {
    dgate.fill_zero();
    dup.fill_zero();
    cpu::glu_backward(f32(dgate), f32(dup), f32(dout), f32(gate), f32(up), dout.numel(), act);
    return;
  }
  if (is(dgate, DType::kBF16) && is(dup, DType::kBF16) && is(gate, DType::kBF16) &&
      is(up, DType::kBF16)) {
    cpu::glu_backward(b16(dgate), b16(dup), f32(dout), b16(gate), b16(up), dout.numel(), act);
    return;
  }
  unsupported(op, gate, dgate);
}

void CpuBackend::embedding_forward(Tensor& out, const Tensor& ids, const Tensor& table,
                                   int64_t row_start, float scale) const {
  const char* op = "embedding_forward";
  check_dtype(op, "out", out, DType::kF32);
  check_dtype(op, "ids", ids, DType::kI32);
  check_cpu(op, table);
  MAGIX_CHECK(is(table, DType::kF32) || is(table, DType::kBF16),
              "{}: table is {}, must be F32 or BF16", op, dtype_name(table.dtype()));
  const Mat t = mat(table);
  check_numel(op, "out", out, ids.numel() * t.cols);
  cpu::embedding_forward(f32(out), i32(ids), table.bytes(), is(table, DType::kBF16), ids.numel(),
                         t.cols, row_start, t.rows, scale);
}

void CpuBackend::embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& ids,
                                    int64_t row_start, float scale) const {
  const char* op = "embedding_backward";
  check_dtype(op, "dtable", dtable, DType::kF32);
  check_dtype(op, "dout", dout, DType::kF32);
  check_dtype(op, "ids", ids, DType::kI32);
  const Mat t = mat(dtable);
  check_numel(op, "dout", dout, ids.numel() * t.cols);
  cpu::embedding_backward(f32(dtable), f32(dout), i32(ids), ids.numel(), t.cols, row_start, t.rows,
                          scale);
}

void CpuBackend::cross_entropy_max(Tensor& row_max, const Tensor& logits) const {
  check_logits("cross_entropy_max", logits);
  check_dtype("cross_entropy_max", "row_max", row_max, DType::kF32);
  const Mat l = mat(logits);
  check_numel("cross_entropy_max", "row_max", row_max, l.rows);
  if (is(logits, DType::kBF16)) {
    cpu::cross_entropy_max(f32(row_max), b16(logits), l.rows, l.cols);
  } else {
    cpu::cross_entropy_max(f32(row_max), f32(logits), l.rows, l.cols);
  }
}

void CpuBackend::cross_entropy_sumexp(Tensor& sumexp, Tensor& target_logit, const Tensor& logits,
                                      const Tensor& row_max, const Tensor& targets,
                                      int64_t v0) const {
  const char* op = "cross_entropy_sumexp";
  check_logits(op, logits);
  check_dtype(op, "targets", targets, DType::kI32);
  const Mat l = mat(logits);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&sumexp, &target_logit, &row_max}) {
    check_dtype(op, "row statistics", *t, DType::kF32);
    check_numel(op, "row statistics", *t, l.rows);
  }
  check_numel(op, "targets", targets, l.rows);
  if (is(logits, DType::kBF16)) {
    cpu::cross_entropy_sumexp(f32(sumexp), f32(target_logit), b16(logits), f32(row_max),
                              i32(targets), v0, l.rows, l.cols);
  } else {
    cpu::cross_entropy_sumexp(f32(sumexp), f32(target_logit), f32(logits), f32(row_max),
                              i32(targets), v0, l.rows, l.cols);
  }
}

void CpuBackend::cross_entropy_loss(Tensor& losses, const Tensor& row_max, const Tensor& sumexp,
                                    const Tensor& target_logit, const Tensor& targets) const {
  const char* op = "cross_entropy_loss";
  check_dtype(op, "targets", targets, DType::kI32);
  for (const Tensor* t :
       std::initializer_list<const Tensor*>{&losses, &row_max, &sumexp, &target_logit}) {
    check_dtype(op, "row statistics", *t, DType::kF32);
    check_numel(op, "row statistics", *t, targets.numel());
  }
  cpu::cross_entropy_loss(f32(losses), f32(row_max), f32(sumexp), f32(target_logit), i32(targets),
                          targets.numel());
}

void CpuBackend::cross_entropy_backward(Tensor& dlogits, const Tensor& logits,
                                        const Tensor& row_max, const Tensor& sumexp,
                                        const Tensor& targets, float dloss, int64_t v0) const {
  const char* op = "cross_entropy_backward";
  check_logits(op, logits);
  check_dtype(op, "dlogits", dlogits, logits.dtype());
  check_dtype(op, "targets", targets, DType::kI32);
  const Mat l = mat(logits);
  check_numel(op, "dlogits", dlogits, logits.numel());
  for (const Tensor* t : std::initializer_list<const Tensor*>{&row_max, &sumexp}) {
    check_dtype(op, "row statistics", *t, DType::kF32);
    check_numel(op, "row statistics", *t, l.rows);
  }
  check_numel(op, "targets", targets, l.rows);
  const std::vector<float> per_row(static_cast<size_t>(l.rows), dloss);
  if (is(logits, DType::kBF16)) {
    cpu::cross_entropy_backward(b16(dlogits), b16(logits), f32(row_max), f32(sumexp), i32(targets),
                                per_row.data(), v0, l.rows, l.cols);
  } else {
    cpu::cross_entropy_backward(f32(dlogits), f32(logits), f32(row_max), f32(sumexp), i32(targets),
                                per_row.data(), v0, l.rows, l.cols);
  }
}

void CpuBackend::adamw_update(Tensor& w, const Tensor& g, Tensor& m, Tensor& v,
                              const AdamWScalars& k) const {
  const char* op = "adamw_update";
  check_dtype(op, "g", g, DType::kF32);
  check_dtype(op, "m", m, DType::kF32);
  check_dtype(op, "v", v, DType::kF32);
  check_cpu(op, w);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&g, &m, &v})
    check_numel(op, "g/m/v", *t, w.numel());
  if (w.dtype() == DType::kF32) {
    cpu::adamw_update(w.data<float>(), f32(g), f32(m), f32(v), w.numel(), k);
  } else if (w.dtype() == DType::kBF16) {
    cpu::adamw_update(w.data<uint16_t>(), f32(g), f32(m), f32(v), w.numel(), k);
  } else {
    MAGIX_FAIL("{}: parameters are F32 or BF16, not {}", op, dtype_name(w.dtype()));
  }
}

double CpuBackend::sum_of_squares(const Tensor& g) const {
  check_dtype("sum_of_squares", "g", g, DType::kF32);
  return cpu::sum_of_squares(f32(g), g.numel());
}

void CpuBackend::lora_merge(Tensor& w, const Tensor& a, const Tensor& b, float scale,
                            const Tensor* base) const {
  const char* op = "lora_merge";
  check_dtype(op, "w", w, DType::kF32);
  check_dtype(op, "a", a, DType::kF32);
  check_dtype(op, "b", b, DType::kF32);
  MAGIX_CHECK(w.ndim() == 2 && a.ndim() == 2 && b.ndim() == 2 && a.dim(1) == w.dim(1) &&
                  b.dim(0) == w.dim(0) && a.dim(0) == b.dim(1),
              "{}: w {}, a {}, b {} are not (O, I), (r, I), (O, r)", op, shape_str(w.shape()),
              shape_str(a.shape()), shape_str(b.shape()));
  if (base) {
    check_cpu(op, *base);
    check_numel(op, "base", *base, w.numel());
    MAGIX_CHECK(base->dtype() == DType::kF32 || base->dtype() == DType::kBF16,
                "{}: base is {}, must be F32 or BF16", op, dtype_name(base->dtype()));
  }
  cpu::lora_merge(f32(w), f32(a), f32(b), w.dim(0), w.dim(1), a.dim(0), scale, base);
}

void CpuBackend::lora_project(Tensor& da, Tensor& db, const Tensor& dw, const Tensor& a,
                              const Tensor& b, float scale) const {
  const char* op = "lora_project";
  for (const Tensor* t : std::initializer_list<const Tensor*>{&da, &db, &dw, &a, &b})
    check_dtype(op, "every tensor", *t, DType::kF32);
  MAGIX_CHECK(dw.ndim() == 2 && a.ndim() == 2 && b.ndim() == 2 && a.dim(1) == dw.dim(1) &&
                  b.dim(0) == dw.dim(0) && a.dim(0) == b.dim(1) && da.shape() == a.shape() &&
                  db.shape() == b.shape(),
              "{}: dw {}, a {}, b {} are not (O, I), (r, I), (O, r)", op, shape_str(dw.shape()),
              shape_str(a.shape()), shape_str(b.shape()));
  cpu::lora_project(f32(dw), f32(a), f32(b), dw.dim(0), dw.dim(1), a.dim(0), scale, f32(da),
                    f32(db));
}

const CpuBackend& cpu_backend() {
  static const CpuBackend backend;
  return backend;
}

}  // namespace magix::cpu
