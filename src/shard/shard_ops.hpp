// Collectives on tensors: moving parameter shards over the data axis (FSDP: gathering a weight
// before use, reduce-scattering its gradient back to the shard), and sums over an axis. Tensors
// are 1-D or 2-D (row-major) and F32, on any device.
//
// Communicator takes host spans (magix/communicator.hpp): a tensor on another device is staged
// through a host copy by HostStaged, in this file only. A device-aware communicator (NCCL) will
// take the device buffers instead, here, without a change to the callers.
#pragma once

#include "magix/communicator.hpp"
#include "magix/tensor.hpp"

namespace magix::model {

// full = concatenation along `dim` of every rank's `local` (rank order); full is preallocated.
void gather_along_dim(Communicator& comm, const Tensor& local, int dim, Tensor& full);

// local += this rank's block along `dim` of the sum over ranks of `full`.
void reduce_scatter_along_dim(Communicator& comm, const Tensor& full, int dim, Tensor& local);

// local += sum over ranks of `full` (same shape): gradients of replicated parameters.
void all_reduce_add(Communicator& comm, const Tensor& full, Tensor& local);

// x = op over ranks of x, in place (nothing on a communicator of one rank).
void all_reduce(Communicator& comm, Tensor& x, ReduceOp op);

// A tensor's values in host memory for the length of a collective: a host tensor itself, or a
// host copy of a device tensor (Backend::copy), written back by write_back().
class HostStaged {
 public:
  // `read`: the collective reads the values (false: it only writes them).
  HostStaged(const Tensor& t, bool read);
  Tensor& host() { return host_; }
  // The host values to the device tensor (nothing for a host tensor).
  void write_back();

 private:
  Tensor target_;
  Tensor host_;
};

}  // namespace magix::model
