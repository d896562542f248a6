// The op table: every numeric operation of the decoder, the generator, the optimizer and LoRA,
// as one interface that each backend implements (src/backends/<name>/). Model, generation and
// training code call these ops on Tensors of the backend's device and never name a backend's
// kernels; only src/backends/ includes them.
//
// Conventions (as the CPU kernels, docs/kernels.md):
// - Tensors are row-major and contiguous; a matrix argument is read as (numel / last dim, last
//   dim), so callers may pass (B, T, C) or (N, C) alike. Shapes are checked on entry, by the op
//   itself for every backend (see the private kernels at the end of Backend).
// - What an op does is chosen by its tensors' dtypes (F32 or BF16; integer arrays I32): a matmul
//   of BF16 inputs runs a bf16 GEMM with fp32 accumulation, of F32 inputs an fp32 GEMM. A dtype
//   combination an op does not list is an error naming the op.
// - Backward ops accumulate (+=) into parameter gradients and into `dinp` of matmul, rmsnorm
//   and attention (several consumers add to one input gradient); glu_backward and
//   cross_entropy_backward write (=) theirs.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "magix/model_config.hpp"
#include "magix/tensor.hpp"

namespace magix {

class DeviceCollectivesEngine;  // dist/device_collectives.hpp

// Query i of row b sees key j iff j <= i, and (window <= 0 or i - j < window), and key_valid[b, j]
// != 0 (when given), and segment[b, i] == segment[b, j] (when given; packing). A query that sees
// no key outputs 0 (lse = -inf). With softcap > 0 each score s = scale·q·k is capped to
// softcap·tanh(s / softcap) before the mask and the softmax (Gemma 2's attn_logit_softcapping).
struct AttentionMask {
  const Tensor* key_valid = nullptr;  // (B, T) I32, or null: every key valid
  const Tensor* segment = nullptr;    // (B, T) I32, or null: one segment per row
  int64_t window = 0;                 // <= 0: unlimited
  float softcap = 0;                  // <= 0: none
};

// One AdamW update's scalars (fp32, as the update computes them).
struct AdamWScalars {
  float grad_scale = 1;  // clipping: g * grad_scale
  float beta1 = 0.9f, beta2 = 0.999f;
  float bias1 = 1, bias2 = 1;  // 1 - beta^t
  float eps = 1e-8f;
  float lr = 0;
  float weight_decay = 0;  // 0 for parameters without decay
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  // What runs, e.g. "cpu: fp32 GEMM OpenBLAS 0.3.21 (SkylakeX, OpenMP), bf16 GEMM ...".
  virtual std::string describe() const = 0;
  // The bytes of the memory its tensors live in (up-front fit checks, magix/memory_check.hpp):
  // the host's physical memory, a GPU's global memory.
  virtual double memory_bytes() const;

  // ---- memory --------------------------------------------------------------------------------
  Tensor zeros(const Shape& shape, DType dtype) const;
  // Contents unspecified (every element is written before it is read).
  Tensor empty(const Shape& shape, DType dtype) const;
  void fill_zero(Tensor& t) const;
  // dst = src (same number of elements), converted to dst's dtype: F32 <-> BF16 (BF16 rounds to
  // nearest even, widening is exact) or the same dtype; either may live on the host.
  void copy(Tensor& dst, const Tensor& src) const;
  // dst (F32) += src (F32), same number of elements.
  void add(Tensor& dst, const Tensor& src) const;
  // x (F32) *= s, element by element (one fp32 multiplication each).
  void scale(Tensor& x, float s) const;
  // Dropout with a counter-based mask (LoRA's adapter input): out (N, C) F32 = inp (N, C; F32 or
  // BF16) · keep / (1 - p), where element (n, j) is kept iff
  //   splitmix64(key ^ splitmix64((row0 + n) · cols + col0 + j)) >> 40  >=  round(p · 2^24),
  // a pure function of the element's global index (every rank draws its own box; applying it
  // again with the same arguments applies the same mask, as the backward pass needs). out may
  // alias inp when both are F32. 0 <= p < 1.
  void dropout(Tensor& out, const Tensor& inp, uint64_t key, int64_t row0, int64_t col0,
               int64_t cols, float p) const;

  // ---- linear layers (torch layout: weight (OC, C)) ------------------------------------------
  // out (N, OC) = inp (N, C) · weightᵀ + bias (OC, F32; may be null). inp and weight both F32
  // (fp32 GEMM) or both BF16 (bf16 GEMM, fp32 accumulation); out F32, or BF16 for BF16 inputs
  // (rounded once, after the bias).
  void matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight,
                      const Tensor* bias) const;
  // dinp (N, C, F32) += dout · weight; dweight (OC, C, F32) += doutᵀ · inp; dbias (OC, F32) +=
  // column sums of dout. dout, inp, weight all F32 or all BF16. Any output may be null.
  void matmul_backward(Tensor* dinp, Tensor* dweight, Tensor* dbias, const Tensor& dout,
                       const Tensor& inp, const Tensor& weight) const;
  // matmul_forward for a few rows (a decode step): reads each weight row once. inp F32; weight
  // F32 or BF16 (widened as it is read); out F32. Backends may run more rows as a GEMM (the CPU
  // backend above 8 rows, with a BF16 weight on the rows rounded to bf16).
  void matmul_decode(Tensor& out, const Tensor& inp, const Tensor& weight,
                     const Tensor* bias) const;

  // ---- residual stream -----------------------------------------------------------------------
  // out (N, C) = residual + y + bias (C; may be null); F32. out may alias residual or y.
  void residual_forward(Tensor& out, const Tensor& residual, const Tensor& y,
                        const Tensor* bias) const;
  // dbias (C, F32) += column sums of dout (N, C, F32).
  void bias_backward(Tensor& dbias, const Tensor& dout) const;

  // ---- RMSNorm: out = x / sqrt(mean(x²) + eps) · (weight + offset) ---------------------------
  // inp (N, C) F32, weight (C) F32, rstd (N) F32 saved; out F32 or BF16.
  void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                       float eps, float offset) const;
  // dinp (N, C) += ...; dweight (C) += ... (may be null); all F32.
  void rmsnorm_backward(Tensor& dinp, Tensor* dweight, const Tensor& dout, const Tensor& inp,
                        const Tensor& weight, const Tensor& rstd, float offset) const;

  // ---- rotary position embedding (rotate_half pairing, angles pos · inv_freq in fp32) --------
  // table (N, D) F32: cos of the N positions' angles in [0, D/2), sin in [D/2, D); pos (N) I32;
  // inv_freq (D/2) F32. Computed once per batch, shared by every layer's q and k.
  void rope_table(Tensor& table, const Tensor& pos, const Tensor& inv_freq) const;
  // x (N, H, D) F32 or BF16 (rotated in fp32, rounded once) in place by the table's angles;
  // backward (F32): the inverse rotation. A table (N, R) with R < D rotates each head's first R
  // dims and leaves the rest (partial_rotary_factor); x must then be 3-D. A 2-D x is (N, H·R).
  void rope_forward(Tensor& x, const Tensor& table) const;
  void rope_backward(Tensor& dx, const Tensor& table) const;

  // ---- causal attention with grouped KV heads ------------------------------------------------
  // q, out (B, T, Hq, D); k, v (B, T, Hkv, D); lse (B, Hq, T) F32. Query head h uses KV head
  // h / (Hq / Hkv); scale multiplies q·k; softmax in fp32. q, k, v, out all F32, or all BF16
  // (bf16 GEMMs with fp32 accumulation, probabilities rounded to bf16 for P·V, out rounded once).
  void attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                         const Tensor& v, float scale, const AttentionMask& mask) const;
  // dq, dk, dv += ... (shapes of q, k, v). All F32, or dout, out, q, k, v BF16 with dq, dk, dv
  // F32 (dP, dS in fp32; P and dS rounded to bf16 as GEMM inputs).
  void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& out,
                          const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                          float scale, const AttentionMask& mask) const;
  // One new query per row at cache slot `slot`: q, out (B, Hq, D) F32; k_cache, v_cache
  // (B, S, Hkv, D) F32 or BF16 (both); valid (B, S) I32. The query sees slot j iff j <= slot,
  // valid[b, j] != 0 and (window <= 0 or slot - j < window): the training mask with slots as
  // positions. softcap > 0 caps the scores as AttentionMask::softcap does. The cache holds slot j
  // at j mod S, as does valid: with a window, S may be as small as the window (a ring of the
  // sliding layers' last keys), the slots the query sees must fit in it; without one, slot < S.
  void attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                        const Tensor& valid, int64_t slot, float scale, int64_t window,
                        float softcap) const;

  // ---- logit soft-capping (Gemma 2's final_logit_softcapping): y = cap · tanh(x / cap) -------
  // x (N, V) F32 or BF16 in place (fp32 arithmetic, rounded once); cap > 0.
  void softcap_forward(Tensor& x, float cap) const;
  // dx *= 1 - (y / cap)² in place, y the capped output; dx and y F32 or BF16 (the same shape).
  void softcap_backward(Tensor& dx, const Tensor& y, float cap) const;

  // ---- gated MLP: out = act(gate) · up -------------------------------------------------------
  // gate, up F32 or BF16 (the same); out F32 or BF16.
  void glu_forward(Tensor& out, const Tensor& gate, const Tensor& up, Activation act) const;
  // dgate = dout · up · act'(gate), dup = dout · act(gate) (written); dout F32; dgate, dup F32 or
  // BF16 (the same).
  void glu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                    const Tensor& up, Activation act) const;

  // ---- token embedding over a vocab shard: rows [row_start, row_start + rows) ----------------
  // out (N, C) F32 = scale · table[ids[n] - row_start], 0 for ids outside the shard; ids (N) I32.
  void embedding_forward(Tensor& out, const Tensor& ids, const Tensor& table, int64_t row_start,
                         float scale) const;
  // dtable (rows, C) += scale · dout[n] for ids inside the shard.
  void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& ids, int64_t row_start,
                          float scale) const;

  // ---- softmax cross-entropy over a vocab shard (entries [v0, v0 + V)), in stages ------------
  // logits (N, V) F32, or BF16 (the head's output in bf16 mixed precision; exp then evaluated
  // with a vectorised approximation); targets (N) I32 (< 0: ignored); row_max, sumexp,
  // target_logit, losses (N) F32. With the vocab split over ranks the caller all-reduces row_max
  // (max) after the first stage and sumexp, target_logit (sum) after the second.
  void cross_entropy_max(Tensor& row_max, const Tensor& logits) const;
  void cross_entropy_sumexp(Tensor& sumexp, Tensor& target_logit, const Tensor& logits,
                            const Tensor& row_max, const Tensor& targets, int64_t v0) const;
  void cross_entropy_loss(Tensor& losses, const Tensor& row_max, const Tensor& sumexp,
                          const Tensor& target_logit, const Tensor& targets) const;
  // dlogits (N, V, the dtype of logits) = dloss · (softmax - onehot(target)), written; may alias
  // logits.
  void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& row_max,
                              const Tensor& sumexp, const Tensor& targets, float dloss,
                              int64_t v0) const;

  // ---- optimizer -----------------------------------------------------------------------------
  // One AdamW update in fp32: w F32 or BF16 (widened, updated, rounded back), g, m, v F32.
  void adamw_update(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const AdamWScalars& k) const;
  // Sum of squares of g (F32), accumulated in double in a fixed order (thread-count independent).
  double sum_of_squares(const Tensor& g) const;

  // ---- LoRA ----------------------------------------------------------------------------------
  // w (O, I) F32 = base + scale · b (O, r) · a (r, I), or w += scale · b · a when base is null;
  // base F32 or BF16.
  void lora_merge(Tensor& w, const Tensor& a, const Tensor& b, float scale,
                  const Tensor* base) const;
  // From a dense gradient dw (O, I): da (r, I) += scale · bᵀ · dw, db (O, r) = scale · dw · aᵀ.
  void lora_project(Tensor& da, Tensor& db, const Tensor& dw, const Tensor& a, const Tensor& b,
                    float scale) const;

 private:
  // The kernels: a backend's part of each op above, `do_` and the op's name, with its
  // arguments. The op (src/backends/op_checks*.cpp) checks them once for every backend before it
  // calls the kernel: each tensor defined and on this backend's device (copy: or the host), the
  // dtypes and dtype combination the op lists above, the shapes, which pointers may be null and
  // the scalars' ranges. A kernel checks only what its backend alone cannot run (e.g. the CUDA
  // attention's head dim <= 256).
  virtual Tensor do_zeros(const Shape& shape, DType dtype) const = 0;
  virtual Tensor do_empty(const Shape& shape, DType dtype) const = 0;
  virtual void do_fill_zero(Tensor& t) const = 0;
  virtual void do_copy(Tensor& dst, const Tensor& src) const = 0;
  virtual void do_add(Tensor& dst, const Tensor& src) const = 0;
  virtual void do_scale(Tensor& x, float s) const = 0;
  virtual void do_dropout(Tensor& out, const Tensor& inp, uint64_t key, int64_t row0, int64_t col0,
                          int64_t cols, float p) const = 0;
  virtual void do_matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight,
                                 const Tensor* bias) const = 0;
  virtual void do_matmul_backward(Tensor* dinp, Tensor* dweight, Tensor* dbias, const Tensor& dout,
                                  const Tensor& inp, const Tensor& weight) const = 0;
  virtual void do_matmul_decode(Tensor& out, const Tensor& inp, const Tensor& weight,
                                const Tensor* bias) const = 0;
  virtual void do_residual_forward(Tensor& out, const Tensor& residual, const Tensor& y,
                                   const Tensor* bias) const = 0;
  virtual void do_bias_backward(Tensor& dbias, const Tensor& dout) const = 0;
  virtual void do_rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& inp,
                                  const Tensor& weight, float eps, float offset) const = 0;
  virtual void do_rmsnorm_backward(Tensor& dinp, Tensor* dweight, const Tensor& dout,
                                   const Tensor& inp, const Tensor& weight, const Tensor& rstd,
                                   float offset) const = 0;
  virtual void do_rope_table(Tensor& table, const Tensor& pos, const Tensor& inv_freq) const = 0;
  virtual void do_rope_forward(Tensor& x, const Tensor& table) const = 0;
  virtual void do_rope_backward(Tensor& dx, const Tensor& table) const = 0;
  virtual void do_attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                                    const Tensor& v, float scale,
                                    const AttentionMask& mask) const = 0;
  virtual void do_attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                                     const Tensor& out, const Tensor& lse, const Tensor& q,
                                     const Tensor& k, const Tensor& v, float scale,
                                     const AttentionMask& mask) const = 0;
  virtual void do_attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache,
                                   const Tensor& v_cache, const Tensor& valid, int64_t slot,
                                   float scale, int64_t window, float softcap) const = 0;
  virtual void do_softcap_forward(Tensor& x, float cap) const = 0;
  virtual void do_softcap_backward(Tensor& dx, const Tensor& y, float cap) const = 0;
  virtual void do_glu_forward(Tensor& out, const Tensor& gate, const Tensor& up,
                              Activation act) const = 0;
  virtual void do_glu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                               const Tensor& up, Activation act) const = 0;
  virtual void do_embedding_forward(Tensor& out, const Tensor& ids, const Tensor& table,
                                    int64_t row_start, float scale) const = 0;
  virtual void do_embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& ids,
                                     int64_t row_start, float scale) const = 0;
  virtual void do_cross_entropy_max(Tensor& row_max, const Tensor& logits) const = 0;
  virtual void do_cross_entropy_sumexp(Tensor& sumexp, Tensor& target_logit, const Tensor& logits,
                                       const Tensor& row_max, const Tensor& targets,
                                       int64_t v0) const = 0;
  virtual void do_cross_entropy_loss(Tensor& losses, const Tensor& row_max, const Tensor& sumexp,
                                     const Tensor& target_logit, const Tensor& targets) const = 0;
  virtual void do_cross_entropy_backward(Tensor& dlogits, const Tensor& logits,
                                         const Tensor& row_max, const Tensor& sumexp,
                                         const Tensor& targets, float dloss, int64_t v0) const = 0;
  virtual void do_adamw_update(Tensor& w, const Tensor& g, Tensor& m, Tensor& v,
                               const AdamWScalars& k) const = 0;
  virtual double do_sum_of_squares(const Tensor& g) const = 0;
  virtual void do_lora_merge(Tensor& w, const Tensor& a, const Tensor& b, float scale,
                             const Tensor* base) const = 0;
  virtual void do_lora_project(Tensor& da, Tensor& db, const Tensor& dw, const Tensor& a,
                               const Tensor& b, float scale) const = 0;
};

// The backend of a device (throws magix::Error when this build has none for it:
// "this build of magix has no cuda backend").
const Backend& backend_for(Device device);

// `t` on the host: t itself (sharing its storage) when it lives there, else a host copy made by
// its backend's copy.
Tensor to_host(const Tensor& t);
// `t` on `device`: t itself when it lives there, else a copy made by the device side's copy.
Tensor to_device(const Tensor& t, Device device);

// Whether backend_for(device) has a backend (without throwing).
bool has_backend(Device device);

// For tests only (never called by the library or the CLI): backend_for(device) returns
// `backend` from now on; null restores the build's own. tests/common/emulated_device.hpp
// registers a host-memory backend for Device::kCuda with it, so that every host access of a
// device tensor in model, training and generation code throws on the CPU alone.
void set_backend_for_testing(Device device, const Backend* backend);

// The engine of collectives on buffers of `device` (dist/device_collectives.hpp): NCCL for the
// build's own CUDA backend when built with its header; null for the CPU, in a build without it,
// and for a backend registered by a test (its tensors are not the GPU's), unless a test
// registered an engine with set_collectives_engine_for_testing (null restores the build's).
const DeviceCollectivesEngine* collectives_engine_for(Device device);
void set_collectives_engine_for_testing(Device device, const DeviceCollectivesEngine* engine);

// ---- devices and ranks -------------------------------------------------------------------------

// "cpu" or "cuda" (--device) -> the Device; another name is an error naming both choices, and a
// device this build has no backend for is the error of backend_for.
Device parse_device(std::string_view name);
// --device's default: kCuda when this build has the CUDA backend and it sees a GPU, else kCpu.
Device default_device();
// The device a command runs on: `name` as parse_device reads it, or default_device() when it is
// empty; the process is bound to its local rank's GPU (select_device_for_local_rank with
// local_rank(), magix/distributed.hpp).
Device use_device(std::string_view name);
// The rank's node-local index from the launcher's environment: OMPI_COMM_WORLD_LOCAL_RANK
// (Open MPI's mpirun), SLURM_LOCALID (srun), MPI_LOCALRANKID or PMI_LOCAL_RANK (MPICH, Intel
// MPI), in that order; nullopt when none is set. A value that is not a non-negative integer is
// an error naming the variable.
std::optional<int> local_rank_from_env();
// The same with `getenv` in place of the process environment (tests).
std::optional<int> local_rank_from_env(const std::function<const char*(const char*)>& getenv);
// The GPU a rank with node-local index `local_rank` uses among `devices` visible ones: one GPU
// per rank, round robin when more ranks than GPUs share a node (an error when devices < 1).
int device_index_for_local_rank(int local_rank, int devices);
// Makes GPU device_index_for_local_rank(local_rank, visible GPUs) current for the CUDA backend
// (nothing for the CPU and for a backend registered by a test): called once per process, before
// the first tensor of `device` is made (the CUDA backend binds to the GPU current when it is
// created; selecting another one afterwards is an error).
void select_device_for_local_rank(Device device, int local_rank);

}  // namespace magix
