// NCCL, loaded with dlopen at the first collective of CUDA tensors over a group of several ranks
// rather than linked: libnccl.so.2 is about 200 MB, a process that never makes such a collective
// (CPU runs, one GPU, the CLI's other commands) should not map it, and a machine without NCCL
// still runs magix (its collectives then stage through host memory). The table holds the few
// functions nccl_collectives.cpp calls, with the header's own types.
#pragma once

#include <nccl.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace magix::cuda {

struct NcclApi {
  decltype(&::ncclGetVersion) get_version;
  decltype(&::ncclGetErrorString) error_string;
  decltype(&::ncclGetLastError) last_error;
  decltype(&::ncclGetUniqueId) get_unique_id;
  decltype(&::ncclCommInitRank) comm_init_rank;
  decltype(&::ncclCommDestroy) comm_destroy;
  decltype(&::ncclAllGather) all_gather;
  decltype(&::ncclAllReduce) all_reduce;
  decltype(&::ncclSend) send;
  decltype(&::ncclRecv) recv;
  decltype(&::ncclGroupStart) group_start;
  decltype(&::ncclGroupEnd) group_end;
  std::string path;  // the file loaded
  int version = 0;   // ncclGetVersion: major * 10000 + minor * 100 + patch
};

// The files tried, in order: $MAGIX_NCCL_LIBRARY (a path, e.g. the libnccl.so.2 of PyTorch's
// nvidia-nccl wheel) when set, then libnccl.so.2 from the library path, then the CUDA toolkit's
// folder found at configure time.
std::vector<std::string> nccl_candidates(const std::function<const char*(const char*)>& getenv);

// The first of `candidates` that dlopen loads and that has every function of the table, or
// nullopt with `why` (each file tried and why it failed).
std::optional<NcclApi> load_nccl(const std::vector<std::string>& candidates, std::string* why);

// Loads NCCL (load_nccl of nccl_candidates with the process environment) once per process: the
// table, or null with `why` (every file tried and dlopen's reason) when none loads.
const NcclApi* nccl_library(std::string* why);

}  // namespace magix::cuda
