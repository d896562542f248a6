// The NCCL engine of device collectives (dist/device_collectives.hpp) for the CUDA backend's
// tensors: one NCCL communicator per group, made over the group's Communicator (its rank 0 asks
// NCCL for a unique id, a broadcast over the group hands it to the others, each calls
// ncclCommInitRank), every collective enqueued on the backend's stream. Plain C++ (included by
// backends/backend.cpp, which sees no CUDA headers).
#pragma once

#include "dist/device_collectives.hpp"

namespace magix::cuda {

// The process's NCCL engine; NCCL itself is loaded by its first unavailable_reason() or create().
const DeviceCollectivesEngine& nccl_engine();

}  // namespace magix::cuda
