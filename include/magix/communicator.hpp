// Collectives over one group of ranks (a mesh axis or the world). Engines (MPI now, NCCL later)
// implement this interface; core code never includes their headers.
#pragma once

#include <cstddef>
#include <memory>
#include <span>

namespace magix {

enum class ReduceOp { kSum, kMax };

class Communicator {
 public:
  virtual ~Communicator() = default;
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
  // Wall seconds this rank has spent in this group's collectives (0 where not measured).
  virtual double seconds_in_collectives() const { return 0.0; }
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
