// The CUDA backend of the op table (backends/backend.hpp): the kernels of this folder and
// cuBLASLt GEMMs on the device that is current when the backend is first used (one process per
// GPU: pick it with CUDA_VISIBLE_DEVICES or cudaSetDevice before). Every op is enqueued on the
// backend's stream and returns at once; `copy` from or to a host tensor and `sum_of_squares`
// wait for the stream. Storage comes from a caching allocator (device_memory.hpp).
#pragma once

#include <memory>
#include <string>

#include "backends/backend.hpp"

namespace magix::cuda {

class CudaBackend final : public Backend {
 public:
  // Throws magix::Error when no device is visible ("no CUDA device visible: ...").
  CudaBackend();
  ~CudaBackend() override;

  Device device() const override;
  double memory_bytes() const override;
  std::string describe() const override;

  // The stream every op is enqueued on (a cudaStream_t), for a communicator that must order its
  // collectives with the ops; and a wait for everything enqueued so far.
  void* stream() const;
  void synchronize() const;

 private:
  // The kernels of the op table (its checks made: backends/op_checks.cpp), enqueued on stream().
  Tensor do_zeros(const Shape& shape, DType dtype) const override;
  Tensor do_empty(const Shape& shape, DType dtype) const override;
  void do_fill_zero(Tensor& t) const override;
  void do_copy(Tensor& dst, const Tensor& src) const override;
  void do_add(Tensor& dst, const Tensor& src) const override;
  void do_scale(Tensor& x, float s) const override;
  void do_dropout(Tensor& out, const Tensor& inp, uint64_t key, int64_t row0, int64_t col0,
                  int64_t cols, float p) const override;
  void do_matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight,
                         const Tensor* bias) const override;
  void do_matmul_backward(Tensor* dinp, Tensor* dweight, Tensor* dbias, const Tensor& dout,
                          const Tensor& inp, const Tensor& weight) const override;
  void do_matmul_decode(Tensor& out, const Tensor& inp, const Tensor& weight,
                        const Tensor* bias) const override;
  void do_residual_forward(Tensor& out, const Tensor& residual, const Tensor& y,
                           const Tensor* bias) const override;
  void do_bias_backward(Tensor& dbias, const Tensor& dout) const override;
  void do_rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                          float eps, float offset) const override;
  void do_rmsnorm_backward(Tensor& dinp, Tensor* dweight, const Tensor& dout, const Tensor& inp,
                           const Tensor& weight, const Tensor& rstd, float offset) const override;
  void do_rope_table(Tensor& table, const Tensor& pos, const Tensor& inv_freq) const override;
  void do_rope_forward(Tensor& x, const Tensor& table) const override;
  void do_rope_backward(Tensor& dx, const Tensor& table) const override;
  void do_attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                            const Tensor& v, float scale, const AttentionMask& mask) const override;
  void do_attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                             const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                             const Tensor& v, float scale,
                             const AttentionMask& mask) const override;
  void do_attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache,
                           const Tensor& v_cache, const Tensor& valid, int64_t slot, float scale,
                           int64_t window, float softcap) const override;
  void do_softcap_forward(Tensor& x, float cap) const override;
  void do_softcap_backward(Tensor& dx, const Tensor& y, float cap) const override;
  void do_glu_forward(Tensor& out, const Tensor& gate, const Tensor& up,
                      Activation act) const override;
  void do_glu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                       const Tensor& up, Activation act) const override;
  void do_embedding_forward(Tensor& out, const Tensor& ids, const Tensor& table, int64_t row_start,
                            float scale) const override;
  void do_embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& ids,
                             int64_t row_start, float scale) const override;
  void do_cross_entropy_max(Tensor& row_max, const Tensor& logits) const override;
  void do_cross_entropy_sumexp(Tensor& sumexp, Tensor& target_logit, const Tensor& logits,
                               const Tensor& row_max, const Tensor& targets,
                               int64_t v0) const override;
  void do_cross_entropy_loss(Tensor& losses, const Tensor& row_max, const Tensor& sumexp,
                             const Tensor& target_logit, const Tensor& targets) const override;
  void do_cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& row_max,
                                 const Tensor& sumexp, const Tensor& targets, float dloss,
                                 int64_t v0) const override;
  void do_adamw_update(Tensor& w, const Tensor& g, Tensor& m, Tensor& v,
                       const AdamWScalars& k) const override;
  double do_sum_of_squares(const Tensor& g) const override;
  void do_lora_merge(Tensor& w, const Tensor& a, const Tensor& b, float scale,
                     const Tensor* base) const override;
  void do_lora_project(Tensor& da, Tensor& db, const Tensor& dw, const Tensor& a, const Tensor& b,
                       float scale) const override;

  struct State;
  std::unique_ptr<State> s_;
};

// The process's CUDA backend, created on first use (throws when no GPU is visible; a later call
// tries again).
const CudaBackend& cuda_backend();

// The GPUs this process sees: 0 where there are none or the driver cannot say (never throws).
int visible_device_count();
// Makes GPU `index` current for this process, before cuda_backend() is first used; once the
// backend exists, selecting a GPU other than its own is an error.
void set_device(int index);

}  // namespace magix::cuda
