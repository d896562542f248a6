// Collectives on tensors: moving parameter shards over the data axis (FSDP: gathering a weight
// before use, reduce-scattering its gradient back to the shard), and sums over an axis. Tensors
// are 1-D or 2-D (row-major) and F32, on any device.
//
// Tensors on a device go one of three ways (the same results; dist/device_collectives.hpp):
// - a group of one: the device's own copy / add, nothing leaves the device;
// - the group's device collectives (NCCL for CUDA tensors), enqueued on the device's stream;
// - else staged through host copies (HostStaged) for the Communicator, which takes host spans:
//   MAGIX_NCCL=0, NCCL missing, a build without it, or a device of a test.
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

// Whether collectives of tensors on `device` over comm's group run on the device (NCCL): then
// they are enqueued on the device's stream in the caller's order, and must be given by the thread
// that owns comm, never by a task of comm.run_async (param_stream.cpp runs them in place). The
// first call for a group chooses its path (collective over the group).
bool collectives_on_device(Communicator& comm, Device device);

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
