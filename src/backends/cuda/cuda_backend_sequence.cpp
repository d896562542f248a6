// The CUDA backend's ops over sequences and the vocabulary: rotary embedding, attention (training
// and decode), token embedding and the staged cross-entropy (the rest is in cuda_backend.cpp).
#include <array>
#include <initializer_list>

#include "backends/cuda/backend_internal.hpp"
#include "backends/cuda/kernel_math.hpp"
#include "backends/cuda/kernels.hpp"

namespace magix::cuda {

using namespace checks;  // the op checks of backend_internal.hpp

namespace {

// Sizes the attention kernels take (grid dims, head dim held in registers).
void check_attention_sizes(const char* op, int64_t B, int64_t Hq, int64_t Hkv, int64_t D) {
  MAGIX_CHECK(Hq > 0 && Hkv > 0 && Hq % Hkv == 0,
              "{}: {} query heads is not a multiple of {} kv heads", op, Hq, Hkv);
  MAGIX_CHECK(D > 0 && D <= kMaxHeadDim, "{}: head dim {} outside the cuda kernels' 1..{}", op, D,
              kMaxHeadDim);
  MAGIX_CHECK(B <= 65535 && Hq <= 65535, "{}: B={} or Hq={} above the grid's 65535", op, B, Hq);
}

AttentionArgs attention_args(const char* op, const magix::AttentionMask& m, const Heads& hq,
                             int64_t Hkv, float scale) {
  check_attention_sizes(op, hq.B, hq.H, Hkv, hq.D);
  AttentionArgs a{hq.B, hq.T, hq.H, Hkv, hq.D, scale, nullptr, nullptr, m.window, m.softcap};
  if (m.key_valid) {
    check_dtype(op, "key_valid", *m.key_valid, DType::kI32);
    check_numel(op, "key_valid", *m.key_valid, hq.B * hq.T);
    a.key_valid = i32(*m.key_valid);
  }
  if (m.segment) {
    check_dtype(op, "segment", *m.segment, DType::kI32);
    check_numel(op, "segment", *m.segment, hq.B * hq.T);
    a.segment = i32(*m.segment);
  }
  return a;
}

}  // namespace

void CudaBackend::rope_table(Tensor& table, const Tensor& pos, const Tensor& inv_freq) const {
  const char* op = "rope_table";
  check_dtype(op, "table", table, DType::kF32);
  check_dtype(op, "pos", pos, DType::kI32);
  check_dtype(op, "inv_freq", inv_freq, DType::kF32);
  const int64_t D = 2 * inv_freq.numel(), N = pos.numel();
  MAGIX_CHECK(D > 0, "{}: no frequencies", op);
  check_numel(op, "table", table, N * D);
  cuda::rope_table(f32(table), i32(pos), f32(inv_freq), N, D, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

namespace {

// (N, H, D) of a rope operand against its table (N, D).
std::array<int64_t, 3> rope_dims(const char* op, const Tensor& x, const Tensor& table) {
  check_cuda(op, x);
  check_dtype(op, "table", table, DType::kF32);
  const Mat t = mat(table);
  MAGIX_CHECK(t.rows > 0 && t.cols > 0 && t.cols % 2 == 0 && x.numel() % (t.rows * t.cols) == 0,
              "{}: x {} is not (N={}, H, D={}) for the table {}", op, shape_str(x.shape()), t.rows,
              t.cols, shape_str(table.shape()));
  return {t.rows, x.numel() / (t.rows * t.cols), t.cols};
}

}  // namespace

void CudaBackend::rope_forward(Tensor& x, const Tensor& table) const {
  const auto [N, H, D] = rope_dims("rope_forward", x, table);
  const bool bf16 = float_kind("rope_forward", "x", x);
  rope_rotate(raw(x), bf16, f32(table), N, H, D, 1.0f, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("rope_forward");
}

void CudaBackend::rope_backward(Tensor& dx, const Tensor& table) const {
  const auto [N, H, D] = rope_dims("rope_backward", dx, table);
  check_dtype("rope_backward", "dx", dx, DType::kF32);
  rope_rotate(raw(dx), false, f32(table), N, H, D, -1.0f, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("rope_backward");
}

void CudaBackend::attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                                    const Tensor& v, float scale,
                                    const magix::AttentionMask& mask) const {
  const char* op = "attention_forward";
  for (const Tensor* t : std::initializer_list<const Tensor*>{&out, &q, &k, &v}) check_cuda(op, *t);
  const Heads hq = heads(op, "q", q), hk = heads(op, "k", k);
  MAGIX_CHECK(hk.B == hq.B && hk.T == hq.T && hk.D == hq.D && v.shape() == k.shape() &&
                  out.shape() == q.shape(),
              "{}: q {}, k {}, v {}, out {} do not match", op, shape_str(q.shape()),
              shape_str(k.shape()), shape_str(v.shape()), shape_str(out.shape()));
  check_dtype(op, "lse", lse, DType::kF32);
  check_numel(op, "lse", lse, hq.B * hq.H * hq.T);
  const bool all_f32 =
      is(q, DType::kF32) && is(k, DType::kF32) && is(v, DType::kF32) && is(out, DType::kF32);
  const bool all_bf16 =
      is(q, DType::kBF16) && is(k, DType::kBF16) && is(v, DType::kBF16) && is(out, DType::kBF16);
  if (!all_f32 && !all_bf16) unsupported(op, q, k);
  const AttentionArgs a = attention_args(op, mask, hq, hk.H, scale);
  cuda::attention_forward(raw(out), f32(lse), raw(q), raw(k), raw(v), all_bf16, a, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
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
  bool all_f32 = true, inputs_bf16 = true;
  for (const Tensor* t :
       std::initializer_list<const Tensor*>{&dq, &dk, &dv, &dout, &out, &q, &k, &v}) {
    check_cuda(op, *t);
    all_f32 = all_f32 && is(*t, DType::kF32);
  }
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dout, &out, &q, &k, &v})
    inputs_bf16 = inputs_bf16 && is(*t, DType::kBF16);
  const bool grads_f32 = is(dq, DType::kF32) && is(dk, DType::kF32) && is(dv, DType::kF32);
  if (!all_f32 && !(inputs_bf16 && grads_f32)) unsupported(op, q, dout);
  const AttentionArgs a = attention_args(op, mask, hq, hk.H, scale);
  Tensor row_dot = empty({hq.B * hq.H * hq.T}, DType::kF32);
  cuda::attention_backward(f32(dq), f32(dk), f32(dv), raw(dout), raw(out), f32(lse), raw(q), raw(k),
                           raw(v), inputs_bf16, f32(row_dot), a, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache,
                                   const Tensor& v_cache, const Tensor& valid, int64_t slot,
                                   float scale, int64_t window, float softcap) const {
  const char* op = "attention_decode";
  check_dtype(op, "q", q, DType::kF32);
  check_dtype(op, "out", out, DType::kF32);
  check_cuda(op, k_cache);
  check_cuda(op, v_cache);
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
  check_attention_sizes(op, 1, q.dim(1), c.H, c.D);
  cuda::attention_decode(f32(out), f32(q), raw(k_cache), raw(v_cache), is(k_cache, DType::kBF16),
                         i32(valid), c.B, c.T, q.dim(1), c.H, c.D, slot, scale, window, softcap,
                         s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::embedding_forward(Tensor& out, const Tensor& ids, const Tensor& table,
                                    int64_t row_start, float scale) const {
  const char* op = "embedding_forward";
  check_dtype(op, "out", out, DType::kF32);
  check_dtype(op, "ids", ids, DType::kI32);
  check_cuda(op, table);
  MAGIX_CHECK(table.dtype() == DType::kF32 || table.dtype() == DType::kBF16,
              "{}: table is {}, must be F32 or BF16", op, dtype_name(table.dtype()));
  const Mat t = mat(table);
  check_numel(op, "out", out, ids.numel() * t.cols);
  MAGIX_CHECK(row_start >= 0, "{}: row_start {} < 0", op, row_start);
  cuda::embedding_forward(f32(out), i32(ids), table.device_bytes(), table.dtype() == DType::kBF16,
                          ids.numel(), t.cols, row_start, t.rows, scale, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& ids,
                                     int64_t row_start, float scale) const {
  const char* op = "embedding_backward";
  check_dtype(op, "dtable", dtable, DType::kF32);
  check_dtype(op, "dout", dout, DType::kF32);
  check_dtype(op, "ids", ids, DType::kI32);
  const Mat t = mat(dtable);
  check_numel(op, "dout", dout, ids.numel() * t.cols);
  MAGIX_CHECK(row_start >= 0, "{}: row_start {} < 0", op, row_start);
  cuda::embedding_backward(f32(dtable), f32(dout), i32(ids), ids.numel(), t.cols, row_start, t.rows,
                           scale, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::cross_entropy_max(Tensor& row_max, const Tensor& logits) const {
  const char* op = "cross_entropy_max";
  const bool bf16 = float_kind(op, "logits", logits);
  check_dtype(op, "row_max", row_max, DType::kF32);
  const Mat l = mat(logits);
  check_numel(op, "row_max", row_max, l.rows);
  MAGIX_CHECK(l.cols > 0, "{}: bad sizes N={} V={}", op, l.rows, l.cols);
  cuda::cross_entropy_max(f32(row_max), raw(logits), bf16, l.rows, l.cols, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::cross_entropy_sumexp(Tensor& sumexp, Tensor& target_logit, const Tensor& logits,
                                       const Tensor& row_max, const Tensor& targets,
                                       int64_t v0) const {
  const char* op = "cross_entropy_sumexp";
  const bool bf16 = float_kind(op, "logits", logits);
  check_dtype(op, "targets", targets, DType::kI32);
  const Mat l = mat(logits);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&sumexp, &target_logit, &row_max}) {
    check_dtype(op, "row statistics", *t, DType::kF32);
    check_numel(op, "row statistics", *t, l.rows);
  }
  check_numel(op, "targets", targets, l.rows);
  MAGIX_CHECK(l.cols > 0, "{}: bad sizes N={} V={}", op, l.rows, l.cols);
  cuda::cross_entropy_sumexp(f32(sumexp), f32(target_logit), raw(logits), bf16, f32(row_max),
                             i32(targets), v0, l.rows, l.cols, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::cross_entropy_loss(Tensor& losses, const Tensor& row_max, const Tensor& sumexp,
                                     const Tensor& target_logit, const Tensor& targets) const {
  const char* op = "cross_entropy_loss";
  check_dtype(op, "targets", targets, DType::kI32);
  for (const Tensor* t :
       std::initializer_list<const Tensor*>{&losses, &row_max, &sumexp, &target_logit}) {
    check_dtype(op, "row statistics", *t, DType::kF32);
    check_numel(op, "row statistics", *t, targets.numel());
  }
  cuda::cross_entropy_loss(f32(losses), f32(row_max), f32(sumexp), f32(target_logit), i32(targets),
                           targets.numel(), s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::cross_entropy_backward(Tensor& dlogits, const Tensor& logits,
                                         const Tensor& row_max, const Tensor& sumexp,
                                         const Tensor& targets, float dloss, int64_t v0) const {
  const char* op = "cross_entropy_backward";
  const bool bf16 = float_kind(op, "logits", logits);
  check_dtype(op, "dlogits", dlogits, logits.dtype());
  check_dtype(op, "targets", targets, DType::kI32);
  const Mat l = mat(logits);
  check_numel(op, "dlogits", dlogits, logits.numel());
  for (const Tensor* t : std::initializer_list<const Tensor*>{&row_max, &sumexp}) {
    check_dtype(op, "row statistics", *t, DType::kF32);
    check_numel(op, "row statistics", *t, l.rows);
  }
  check_numel(op, "targets", targets, l.rows);
  MAGIX_CHECK(l.cols > 0, "{}: bad sizes N={} V={}", op, l.rows, l.cols);
  cuda::cross_entropy_backward(raw(dlogits), raw(logits), bf16, f32(row_max), f32(sumexp),
                               i32(targets), dloss, v0, l.rows, l.cols, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

}  // namespace magix::cuda
