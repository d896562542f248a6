// Streaming parameter shards to the layers that use them (FSDP / ZeRO-3, replicated KV heads),
// shared by the decoder, the generator and LoRA. A parameter is gathered whole over the data
// axis just before use and released after; its gradient goes back to the shard right after the
// layer's backward pass (reduce-scattered over data, or all-reduced where the parameter is
// replicated over data). When KV heads are fewer than the model axis, k/v weights and biases
// are stored row-sharded over model like any column-parallel weight, gathered whole over model
// before use (each rank keeps the rows of its own KV head) and their gradients summed over
// model back to the shards.
//
// Overlap (set_overlap, --overlap_comm): prefetch() starts a parameter's gather over data on the
// data group's communication thread (Communicator::run_async) so that it runs while the caller
// computes, and close_grad's reduce-scatters over data run there too; finish() waits for them.
// The collectives are the same calls on the same bytes, so the numbers are the same bit for bit.
// Where the data group's collectives run on the device (NCCL, shard_ops.hpp) there is no thread:
// they are enqueued on the device's stream at once, in program order, and the GPU orders them
// with the kernels around them (the host does not wait for them).
#pragma once

#include <cstdint>
#include <vector>

#include "backends/backend.hpp"
#include "magix/mesh.hpp"
#include "magix/model.hpp"

namespace magix {

struct KvReplication {
  int64_t replicas = 1;   // model ranks sharing one KV head (1: each rank has its own heads)
  int64_t head = 0;       // the global KV head this rank uses (replicas > 1)
  int64_t head_rows = 0;  // rows of one head in a k/v weight (head_dim)
};

// The dim of a spec sharded over the data axis, or -1.
int data_sharded_dim(const PartitionSpec& spec);

class ParamStream {
 public:
  ParamStream() = default;
  // kv_rows[i] != 0: parameter i is a k/v weight or bias taken per KV head (replicas > 1).
  ParamStream(const Mesh& mesh, const Backend& ops, std::vector<char> kv_rows, KvReplication kv);

  // Parameter i of `params` as the layers use it, as `dtype` (F32 or BF16): whole over data,
  // this rank's KV head rows. The stored shard itself where nothing is to be done.
  Tensor gather(const ParameterSet& params, size_t i, DType dtype) const;
  // The dtype gather() of parameter i hands back without a conversion pass: BF16 where a BF16
  // shard is used as stored, else F32 (collectives move F32).
  DType unconverted_dtype(const ParameterSet& params, size_t i) const;
  // The shape gather() returns.
  Shape used_shape(const ParameterSet& params, size_t i) const;
  // An F32 gradient buffer of the used shape for parameter i: the gradient shard itself where
  // the two coincide (data axis of size 1, not a KV head's rows), else zeros.
  Tensor open_grad(ParameterSet& grads, size_t i) const;
  // g (from open_grad) goes to its shard (+=): KV head rows summed over the model axis, then
  // reduce-scattered over data (a data-sharded dim) or all-reduced (replicated over data).
  void close_grad(ParameterSet& grads, size_t i, const Tensor& g) const;

  // Overlap on or off. `max_pending_bytes` bounds the gradients whose reduce-scatters are in
  // flight, each holding its whole fp32 gradient until the collective ends: close_grad first
  // waits for the oldest ones while starting another would pass the bound (one gradient alone
  // may pass it). Without a bound, a link slower than the backward pass would keep every
  // layer's whole gradient alive (the model's unsharded fp32 gradient, what FSDP avoids).
  void set_overlap(bool on, size_t max_pending_bytes = kDefaultMaxPendingBytes) {
    overlap_ = on;
    max_pending_bytes_ = max_pending_bytes;
  }
  static constexpr size_t kDefaultMaxPendingBytes = size_t{512} << 20;
  // Bytes of the gradients whose reduce-scatters are in flight (started, not yet waited for).
  size_t pending_grad_bytes() const;
  // With overlap, starts gathering parameter i over data in the background; the next
  // gather(params, i, ...) waits for it instead of gathering. Nothing to do without a gather.
  void prefetch(const ParameterSet& params, size_t i) const;
  // Waits for every background collective: the gradients given to close_grad are on their shards
  // after it, and prefetched gathers nobody took are dropped.
  void finish() const;

 private:
  struct Prefetch {
    const ParameterSet* params = nullptr;
    size_t i = 0;
    Tensor full;  // F32, whole over data once `done` has been waited for
    PendingCollective done;
  };

  bool gathers(const ParameterSet& params, size_t i) const;
  Tensor widened(const Tensor& shard) const;
  Tensor take_prefetched(const ParameterSet& params, size_t i) const;
  Tensor kv_head_rows(const Tensor& shard) const;
  Tensor kv_grad_shard(const Tensor& head) const;

  const Mesh* mesh_ = nullptr;
  const Backend* ops_ = nullptr;
  std::vector<char> kv_rows_;
  KvReplication kv_;
  bool overlap_ = false;
  // Background work in flight: the layers' interface is const (a gather reads the parameters),
  // what it has started is not part of the stream's value.
  mutable std::vector<Prefetch> prefetched_;
  struct PendingGrad {
    PendingCollective done;
    size_t bytes = 0;
  };
  size_t max_pending_bytes_ = kDefaultMaxPendingBytes;
  mutable std::vector<PendingGrad> grads_pending_;
};

}  // namespace magix
