#include "dist/device_collectives.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backends/backend.hpp"
#include "magix/error.hpp"

namespace magix {
namespace {

// Why a rank takes the host-staged path, as a number its group agrees on by all-reduce (max).
enum Verdict : int { kUse = 0, kEnvOff = 1, kUnavailable = 2 };

// MAGIX_NCCL: unset, empty or 1: the device engine where it can run; 0: host staging.
bool engine_allowed(const DeviceCollectivesContext& c) {
  const char* v = c.getenv ? c.getenv("MAGIX_NCCL") : nullptr;
  if (v == nullptr || *v == '\0' || std::strcmp(v, "1") == 0) return true;
  if (std::strcmp(v, "0") == 0) return false;
  MAGIX_FAIL(
      "MAGIX_NCCL='{}' is not 0 or 1 (0: collectives of device tensors go through host memory; "
      "1, the default: NCCL where it loads)",
      v);
}

// Whether this process is rank 0 of the world, from the launcher's variables (no MPI here).
bool world_rank_zero(const DeviceCollectivesContext& c) {
  if (!c.getenv) return true;
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    const char* v = c.getenv(var);
    if (v != nullptr && *v != '\0') return std::strcmp(v, "0") == 0;
  }
  return true;
}

DeviceCollectivesContext process_context(Device device) {
  static std::atomic<bool> said{false};
  DeviceCollectivesContext c;
  c.engine = collectives_engine_for(device);
  c.getenv = [](const char* name) -> const char* { return std::getenv(name); };
  c.say = [](const std::string& note) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s\n", note.c_str());
    std::fflush(stderr);
  };
  c.said = &said;
  return c;
}

}  // namespace

std::string host_staging_note(const std::string& why, Device device) {
  return fmt::format(
      "magix: {}; collectives of {} tensors go through host memory (MPI). Set MAGIX_NCCL_LIBRARY "
      "to a libnccl.so.2 to use NCCL, or MAGIX_NCCL=0 to choose host memory without this note.",
      why, device_name(device));
}

DeviceCollectives* device_collectives(Communicator& comm, Device device) {
  if (device == Device::kCpu || comm.size() <= 1) return nullptr;
  Communicator::DeviceSlot& slot = comm.device_slot();
  if (slot.decided) return slot.engine.get();
  return device_collectives(comm, device, process_context(device));
}

DeviceCollectives* device_collectives(Communicator& comm, Device device,
                                      const DeviceCollectivesContext& context) {
  if (device == Device::kCpu || comm.size() <= 1) return nullptr;
  Communicator::DeviceSlot& slot = comm.device_slot();
  if (slot.decided) return slot.engine.get();
  std::string why;
  int verdict = kUse;
  if (context.engine == nullptr) {
    // No engine for this device in this build: nothing to agree on, every rank has the same build.
    slot.decided = true;
    return nullptr;
  }
  if (!engine_allowed(context)) {
    verdict = kEnvOff;
  } else {
    why = context.engine->unavailable_reason();
    if (!why.empty()) verdict = kUnavailable;
  }
  // Every rank of the group takes the same path (one rank without the library moves them all).
  double agreed = verdict;
  comm.all_reduce(std::span<double>(&agreed, 1), ReduceOp::kMax);
  verdict = static_cast<int>(agreed);
  if (verdict == kUnavailable) {
    if (why.empty()) why = context.engine->name() + " cannot run on another rank of a group";
    if (world_rank_zero(context) && context.say &&
        (context.said == nullptr || !context.said->exchange(true))) {
      context.say(host_staging_note(why, device));
    }
  }
  if (verdict == kUse) slot.engine = context.engine->create(comm);
  slot.decided = true;
  return slot.engine.get();
}

}  // namespace magix
