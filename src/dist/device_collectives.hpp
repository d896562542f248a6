// Collectives of a group on device buffers (NCCL for CUDA tensors: src/backends/cuda/
// nccl_collectives.cpp), behind the tensor collectives of src/shard/shard_ops.cpp, and the choice
// between them and staging through host memory (MPI on host copies).
//
// An engine (DeviceCollectivesEngine) belongs to a device kind (backend_for's
// collectives_engine_for); it makes one DeviceCollectives per group, bootstrapped over the group's
// Communicator, kept in the Communicator's device slot. The choice is made once per Communicator,
// the first time a collective of tensors on a device meets it, and is the same on every rank of the
// group.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "magix/communicator.hpp"
#include "magix/tensor.hpp"

namespace magix {

// Shapes as src/shard/shard_ops.hpp: F32 tensors, 1-D or 2-D row-major, all on the engine's
// device; n = group size. Every op is enqueued on the device's stream in the caller's order and
// returns without waiting (the next op on the stream sees its result).
class DeviceCollectives {
 public:
  virtual ~DeviceCollectives() = default;
  // full = concatenation along dim of every rank's local, rank order.
  virtual void gather(const Tensor& local, int dim, Tensor& full) = 0;
  // local += this rank's block along dim of the sum over ranks of full: an all-to-all of the
  // blocks, then the n blocks summed in rank order ((b0 + b1) + b2 ...), as the host path.
  virtual void reduce_scatter_add(const Tensor& full, int dim, Tensor& local) = 0;
  // local += sum over ranks of full (same shape).
  virtual void all_reduce_add(const Tensor& full, Tensor& local) = 0;
  // x = op over ranks of x, in place.
  virtual void all_reduce(Tensor& x, ReduceOp op) = 0;
};

class DeviceCollectivesEngine {
 public:
  virtual ~DeviceCollectivesEngine() = default;
  // "NCCL"
  virtual std::string name() const = 0;
  // Empty when the engine can run here; else why not (e.g. its library cannot be loaded). Cheap
  // after the first call.
  virtual std::string unavailable_reason() const = 0;
  // The collectives of `group`'s ranks (collective over the group: every rank calls it at the
  // same point). Throws magix::Error naming the engine's error when it cannot start.
  virtual std::unique_ptr<DeviceCollectives> create(Communicator& group) const = 0;
};

// What the choice reads, as arguments for tests.
struct DeviceCollectivesContext {
  const DeviceCollectivesEngine* engine = nullptr;  // null: none for this device in this build
  std::function<const char*(const char*)> getenv;   // MAGIX_NCCL, the launcher's rank variables
  std::function<void(const std::string&)> say;      // the fallback's note (stderr)
  std::atomic<bool>* said = nullptr;                // set once the note is said (once a process)
};

// The device collectives of comm's group for tensors on `device`, or null for the host-staged
// path: a host device, a group of one (nothing to exchange), MAGIX_NCCL=0, no engine, or an
// engine that cannot run here on some rank of the group (then world rank 0 says so once, on
// stderr). The first call for a communicator decides for good; when comm.size() > 1 it agrees
// with the group's other ranks (an all-reduce over comm), so that every rank takes one path.
DeviceCollectives* device_collectives(Communicator& comm, Device device);
DeviceCollectives* device_collectives(Communicator& comm, Device device,
                                      const DeviceCollectivesContext& context);

// The note said when the engine cannot run: "magix: <why>; collectives of <device> tensors go
// through host memory (MPI). Set MAGIX_NCCL_LIBRARY ...".
std::string host_staging_note(const std::string& why, Device device);

}  // namespace magix
