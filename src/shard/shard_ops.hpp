// Moving parameter shards over the data axis (FSDP): gathering a weight before use and
// reduce-scattering its gradient back to the shard. Tensors are 1-D or 2-D (row-major).
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

}  // namespace magix::model
