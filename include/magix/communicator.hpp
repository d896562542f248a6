// Collectives over one group of ranks (a mesh axis or the world). Engines (MPI now, NCCL later)
// implement this interface; core code never includes their headers.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <span>

namespace magix {

enum class ReduceOp { kSum, kMax };

// Collectives of a group on device buffers (src/dist/device_collectives.hpp: NCCL for CUDA
// tensors), kept by the group's Communicator.
class DeviceCollectives;

// A task given to Communicator::run_async. wait() returns once it has run (at once when nothing
// is pending) and rethrows its error; a handle dropped without wait() waits in its destructor.
class PendingCollective {
 public:
  PendingCollective() = default;
  explicit PendingCollective(std::function<void()> wait) : wait_(std::move(wait)) {}
  PendingCollective(PendingCollective&& other) noexcept : wait_(std::move(other.wait_)) {
    other.wait_ = nullptr;
  }
  PendingCollective& operator=(PendingCollective&& other) noexcept;
  ~PendingCollective();
  bool pending() const { return static_cast<bool>(wait_); }
  void wait();

 private:
  std::function<void()> wait_;
};

class Communicator {
 public:
  Communicator();
  virtual ~Communicator();
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place over the group.
  virtual void all_reduce(std::span<float> data, ReduceOp op) = 0;
  virtual void all_reduce(std::span<double> data, ReduceOp op) = 0;
  // out = concatenation of every rank's `in`, in rank order; out.size() == size() * in.size().
  virtual void all_gather(std::span<const float> in, std::span<float> out) = 0;
  // in is size() equal chunks; out = sum over ranks of chunk rank(); in.size() ==
  // size()*out.size().
  virtual void reduce_scatter(std::span<const float> in, std::span<float> out) = 0;
  virtual void broadcast(std::span<std::byte> data, int root) = 0;
  virtual void barrier() = 0;
  // Wall seconds this rank has spent in this group's collectives (0 where not measured): in
  // blocking calls, and waiting in PendingCollective::wait for tasks of run_async.
  virtual double seconds_in_collectives() const { return 0.0; }

  // Runs task(c), where c is a communicator over the same group, in the background: on this
  // group's communication thread, tasks in the order they were given (every rank of the group
  // must give the same collectives in the same order). c is a duplicate of this group, so its
  // collectives never match the caller's; they are the same calls as this communicator's, so
  // they give the same bits. Returns at once; the task may use its buffers until wait() returns.
  // This default (and an engine without a thread) runs task(*this) before returning; its error
  // still comes from wait().
  virtual PendingCollective run_async(std::function<void(Communicator&)> task);

  // This group's collectives on device buffers, chosen on first use by the collectives of
  // tensors (src/dist/device_collectives.cpp) and destroyed with the communicator.
  struct DeviceSlot {
    bool decided = false;                       // whether the path was chosen
    std::unique_ptr<DeviceCollectives> engine;  // after the choice, null: host-staged
  };
  DeviceSlot& device_slot() { return device_slot_; }

 private:
  DeviceSlot device_slot_;
};

// The group of one rank: every collective is the identity.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce(std::span<float>, ReduceOp) override {}
  void all_reduce(std::span<double>, ReduceOp) override {}
  void all_gather(std::span<const float> in, std::span<float> out) override;
  void reduce_scatter(std::span<const float> in, std::span<float> out) override;
  void broadcast(std::span<std::byte>, int) override {}
  void barrier() override {}
};

}  // namespace magix
