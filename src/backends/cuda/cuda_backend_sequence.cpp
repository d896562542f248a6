// The CUDA backend's ops over sequences and the vocabulary: rotary embedding, attention (training
// and decode), token embedding and the staged cross-entropy (the rest is in cuda_backend.cpp).
// Their arguments are checked by Backend (backends/op_checks.cpp) before these kernels run.
#include "backends/cuda/backend_internal.hpp"
#include "backends/cuda/kernel_math.hpp"
#include "backends/cuda/kernels.hpp"

namespace magix::cuda {

using namespace access;  // the tensor accessors of backend_internal.hpp

namespace {

// What the attention kernels alone limit (grid dims, a head dim held in registers); the op checked
// the rest.
void check_attention_sizes(const char* op, int64_t B, int64_t Hq, int64_t D) {
  MAGIX_CHECK(D <= kMaxHeadDim, "{}: head dim {} outside the cuda kernels' 1..{}", op, D,
              kMaxHeadDim);
  MAGIX_CHECK(B <= 65535 && Hq <= 65535, "{}: B={} or Hq={} above the grid's 65535", op, B, Hq);
}

AttentionArgs attention_args(const char* op, const magix::AttentionMask& m, const Tensor& q,
                             const Tensor& k, float scale) {
  const Heads hq = heads(q);
  const int64_t Hkv = heads(k).H;
  check_attention_sizes(op, hq.B, hq.H, hq.D);
  AttentionArgs a{hq.B, hq.T, hq.H, Hkv, hq.D, scale, nullptr, nullptr, m.window, m.softcap};
  if (m.key_valid) a.key_valid = i32(*m.key_valid);
  if (m.segment) a.segment = i32(*m.segment);
  return a;
}

}  // namespace

void CudaBackend::do_rope_table(Tensor& table, const Tensor& pos, const Tensor& inv_freq) const {
  cuda::rope_table(f32(table), i32(pos), f32(inv_freq), pos.numel(), 2 * inv_freq.numel(),
                   s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("rope_table");
}

void CudaBackend::do_rope_forward(Tensor& x, const Tensor& table) const {
  const RopeDims r = rope_dims(x, table);
  rope_rotate(raw(x), is(x, DType::kBF16), f32(table), r.N, r.H, r.D, r.R, 1.0f, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("rope_forward");
}

void CudaBackend::do_rope_backward(Tensor& dx, const Tensor& table) const {
  const RopeDims r = rope_dims(dx, table);
  rope_rotate(raw(dx), false, f32(table), r.N, r.H, r.D, r.R, -1.0f, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("rope_backward");
}

void CudaBackend::do_attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                                       const Tensor& v, float scale,
                                       const magix::AttentionMask& mask) const {
  const AttentionArgs a = attention_args("attention_forward", mask, q, k, scale);
  cuda::attention_forward(raw(out), f32(lse), raw(q), raw(k), raw(v), is(q, DType::kBF16), a,
                          s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("attention_forward");
}

void CudaBackend::do_attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                                        const Tensor& out, const Tensor& lse, const Tensor& q,
                                        const Tensor& k, const Tensor& v, float scale,
                                        const magix::AttentionMask& mask) const {
  const AttentionArgs a = attention_args("attention_backward", mask, q, k, scale);
  Tensor row_dot = empty({a.B * a.Hq * a.T}, DType::kF32);
  cuda::attention_backward(f32(dq), f32(dk), f32(dv), raw(dout), raw(out), f32(lse), raw(q), raw(k),
                           raw(v), is(q, DType::kBF16), f32(row_dot), a, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("attention_backward");
}

void CudaBackend::do_attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache,
                                      const Tensor& v_cache, const Tensor& valid, int64_t slot,
                                      float scale, int64_t window, float softcap) const {
  const char* op = "attention_decode";
  const Heads c = heads(k_cache);  // (B, S, Hkv, D)
  check_attention_sizes(op, 1, q.dim(1), c.D);
  cuda::attention_decode(f32(out), f32(q), raw(k_cache), raw(v_cache), is(k_cache, DType::kBF16),
                         i32(valid), c.B, c.T, q.dim(1), c.H, c.D, slot, scale, window, softcap,
                         s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::do_embedding_forward(Tensor& out, const Tensor& ids, const Tensor& table,
                                       int64_t row_start, float scale) const {
  const Mat t = mat(table);
  cuda::embedding_forward(f32(out), i32(ids), table.device_bytes(), table.dtype() == DType::kBF16,
                          ids.numel(), t.cols, row_start, t.rows, scale, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("embedding_forward");
}

void CudaBackend::do_embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& ids,
                                        int64_t row_start, float scale) const {
  const Mat t = mat(dtable);
  cuda::embedding_backward(f32(dtable), f32(dout), i32(ids), ids.numel(), t.cols, row_start, t.rows,
                           scale, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("embedding_backward");
}

void CudaBackend::do_cross_entropy_max(Tensor& row_max, const Tensor& logits) const {
  const Mat l = mat(logits);
  cuda::cross_entropy_max(f32(row_max), raw(logits), is(logits, DType::kBF16), l.rows, l.cols,
                          s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("cross_entropy_max");
}

void CudaBackend::do_cross_entropy_sumexp(Tensor& sumexp, Tensor& target_logit,
                                          const Tensor& logits, const Tensor& row_max,
                                          const Tensor& targets, int64_t v0) const {
  const Mat l = mat(logits);
  cuda::cross_entropy_sumexp(f32(sumexp), f32(target_logit), raw(logits), is(logits, DType::kBF16),
                             f32(row_max), i32(targets), v0, l.rows, l.cols, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("cross_entropy_sumexp");
}

void CudaBackend::do_cross_entropy_loss(Tensor& losses, const Tensor& row_max, const Tensor& sumexp,
                                        const Tensor& target_logit, const Tensor& targets) const {
  cuda::cross_entropy_loss(f32(losses), f32(row_max), f32(sumexp), f32(target_logit), i32(targets),
                           targets.numel(), s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("cross_entropy_loss");
}

void CudaBackend::do_cross_entropy_backward(Tensor& dlogits, const Tensor& logits,
                                            const Tensor& row_max, const Tensor& sumexp,
                                            const Tensor& targets, float dloss, int64_t v0) const {
  const Mat l = mat(logits);
  cuda::cross_entropy_backward(raw(dlogits), raw(logits), is(logits, DType::kBF16), f32(row_max),
                               f32(sumexp), i32(targets), dloss, v0, l.rows, l.cols, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("cross_entropy_backward");
}

}  // namespace magix::cuda
