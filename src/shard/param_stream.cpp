#include "shard/param_stream.hpp"

#include "magix/error.hpp"
#include "shard/shard_ops.hpp"

namespace magix {

int data_sharded_dim(const PartitionSpec& spec) {
  for (size_t d = 0; d < spec.dims.size(); ++d) {
    if (spec.dims[d] == "data") return static_cast<int>(d);
  }
  return -1;
}

ParamStream::ParamStream(const Mesh& mesh, const Backend& ops, std::vector<char> kv_rows,
                         KvReplication kv)
    : mesh_(&mesh), ops_(&ops), kv_rows_(std::move(kv_rows)), kv_(kv) {}

bool ParamStream::gathers(const ParameterSet& params, size_t i) const {
  return mesh_->data_size() > 1 && data_sharded_dim(params.info(i).spec) >= 0;
}

// Collectives move fp32: a shard widened (exactly) where stored narrower.
Tensor ParamStream::widened(const Tensor& shard) const {
  if (shard.dtype() == DType::kF32) return shard;
  Tensor w = ops_->empty(shard.shape(), DType::kF32);
  ops_->copy(w, shard);
  return w;
}

void ParamStream::prefetch(const ParameterSet& params, size_t i) const {
  if (!overlap_ || !gathers(params, i)) return;
  for (const Prefetch& p : prefetched_) {
    if (p.params == &params && p.i == i) return;
  }
  const int dd = data_sharded_dim(params.info(i).spec);
  Shape shape = params.tensor(i).shape();
  shape[static_cast<size_t>(dd)] *= mesh_->data_size();
  Prefetch p{&params, i, ops_->empty(shape, DType::kF32), {}};
  if (model::collectives_on_device(mesh_->data(), params.tensor(i).device())) {
    // NCCL: enqueued on the device's stream now, in program order (it runs there while the
    // host goes on enqueuing the layers' kernels).
    model::gather_along_dim(mesh_->data(), widened(params.tensor(i)), dd, p.full);
  } else {
    p.done = mesh_->data().run_async(
        [w = widened(params.tensor(i)), dd, full = p.full](Communicator& comm) mutable {
          model::gather_along_dim(comm, w, dd, full);
        });
  }
  prefetched_.push_back(std::move(p));
}

// The whole F32 tensor of a prefetch of parameter i, or an undefined tensor.
Tensor ParamStream::take_prefetched(const ParameterSet& params, size_t i) const {
  for (auto it = prefetched_.begin(); it != prefetched_.end(); ++it) {
    if (it->params != &params || it->i != i) continue;
    Tensor full = it->full;
    PendingCollective done = std::move(it->done);
    prefetched_.erase(it);
    done.wait();
    return full;
  }
  return Tensor();
}

void ParamStream::finish() const {
  std::vector<PendingGrad> grads = std::move(grads_pending_);
  grads_pending_.clear();
  std::vector<Prefetch> unused = std::move(prefetched_);
  prefetched_.clear();
  for (PendingGrad& g : grads) g.done.wait();
  for (Prefetch& p : unused) p.done.wait();
}

Tensor ParamStream::gather(const ParameterSet& params, size_t i, DType dtype) const {
  const Tensor& shard = params.tensor(i);
  const bool kv = kv_rows_.at(i) != 0;
  if (!gathers(params, i) && !kv && shard.dtype() == dtype) return shard;
  // Widen, gather (or take the prefetched gather), take the KV head's rows, then narrow.
  Tensor w = gathers(params, i) ? take_prefetched(params, i) : Tensor();
  if (!w.defined()) {
    w = widened(shard);
    if (gathers(params, i)) {
      const int dd = data_sharded_dim(params.info(i).spec);
      Shape shape = w.shape();
      shape[static_cast<size_t>(dd)] *= mesh_->data_size();
      Tensor full = ops_->empty(shape, DType::kF32);
      model::gather_along_dim(mesh_->data(), w, dd, full);
      w = full;
    }
  }
  if (kv) w = kv_head_rows(w);
  if (dtype == DType::kF32) return w;
  Tensor out = ops_->empty(w.shape(), dtype);
  ops_->copy(out, w);
  return out;
}

size_t ParamStream::pending_grad_bytes() const {
  size_t bytes = 0;
  for (const PendingGrad& g : grads_pending_) bytes += g.bytes;
  return bytes;
}

DType ParamStream::unconverted_dtype(const ParameterSet& params, size_t i) const {
  const bool as_stored = !gathers(params, i) && kv_rows_.at(i) == 0;
  return as_stored && params.tensor(i).dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32;
}

Shape ParamStream::used_shape(const ParameterSet& params, size_t i) const {
  Shape shape = params.tensor(i).shape();
  if (gathers(params, i)) {
    shape[static_cast<size_t>(data_sharded_dim(params.info(i).spec))] *= mesh_->data_size();
  }
  if (kv_rows_.at(i)) shape[0] = kv_.head_rows;
  return shape;
}

Tensor ParamStream::open_grad(ParameterSet& grads, size_t i) const {
  if (mesh_->data_size() == 1 && !kv_rows_.at(i)) return grads.tensor(i);
  return ops_->zeros(used_shape(grads, i), DType::kF32);
}

void ParamStream::close_grad(ParameterSet& grads, size_t i, const Tensor& g_used) const {
  Tensor g = g_used;
  if (kv_rows_.at(i)) {
    g = kv_grad_shard(g);
  } else if (mesh_->data_size() == 1) {
    return;  // g is the shard
  }
  Tensor& shard = grads.tensor(i);
  const int dd = data_sharded_dim(grads.info(i).spec);
  if (mesh_->data_size() == 1) {
    ops_->add(shard, g);
  } else if (dd >= 0 && overlap_ && !model::collectives_on_device(mesh_->data(), g.device())) {
    const size_t bytes = g.nbytes();
    while (!grads_pending_.empty() && pending_grad_bytes() + bytes > max_pending_bytes_) {
      grads_pending_.front().done.wait();  // oldest first: the order they were started in
      grads_pending_.erase(grads_pending_.begin());
    }
    grads_pending_.push_back(
        PendingGrad{mesh_->data().run_async([g, dd, shard](Communicator& comm) mutable {
                      model::reduce_scatter_along_dim(comm, g, dd, shard);
                    }),
                    bytes});
  } else if (dd >= 0) {
    model::reduce_scatter_along_dim(mesh_->data(), g, dd, shard);
  } else {
    model::all_reduce_add(mesh_->data(), g, shard);
  }
}

// A k/v weight (rows, C) or bias (rows) sharded by rows over the model axis -> the head_rows rows
// of this rank's KV head, gathered whole first.
Tensor ParamStream::kv_head_rows(const Tensor& shard) const {
  Shape shape = shard.shape();
  shape[0] *= mesh_->model_size();  // num_key_value_heads * head_rows
  Tensor whole = ops_->empty(shape, DType::kF32);
  model::gather_along_dim(mesh_->model(), shard, 0, whole);
  Tensor head = whole.rows(kv_.head * kv_.head_rows, kv_.head_rows);
  Tensor out = ops_->empty(head.shape(), DType::kF32);
  ops_->copy(out, head);
  return out;
}

// The gradient of this rank's KV head rows (head_rows, ...) -> its row shard, summed over the
// model ranks (the replicas of a head each hold the part from their own query heads).
Tensor ParamStream::kv_grad_shard(const Tensor& head) const {
  Shape shape = head.shape();
  const int64_t heads = mesh_->model_size() / kv_.replicas;  // num_key_value_heads
  shape[0] *= heads;
  Tensor whole = ops_->zeros(shape, DType::kF32);
  Tensor mine = whole.rows(kv_.head * kv_.head_rows, kv_.head_rows);
  ops_->copy(mine, head);
  shape[0] /= mesh_->model_size();
  Tensor shard = ops_->zeros(shape, DType::kF32);
  model::reduce_scatter_along_dim(mesh_->model(), whole, 0, shard);
  return shard;
}

}  // namespace magix
