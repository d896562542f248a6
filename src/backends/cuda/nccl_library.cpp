#include "backends/cuda/nccl_library.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <optional>

#include "magix/error.hpp"

#ifndef MAGIX_NCCL_DIR
#define MAGIX_NCCL_DIR ""
#endif

namespace magix::cuda {
namespace {

constexpr const char* kFile = "libnccl.so.2";

template <class F>
bool bind(void* lib, const char* name, F& f, std::string& missing) {
  void* sym = dlsym(lib, name);
  if (sym == nullptr) {
    missing += missing.empty() ? name : fmt::format(", {}", name);
    return false;
  }
  f = reinterpret_cast<F>(sym);
  return true;
}

struct Loaded {
  std::optional<NcclApi> api;
  std::string why;
};

}  // namespace

std::vector<std::string> nccl_candidates(const std::function<const char*(const char*)>& getenv) {
  std::vector<std::string> paths;
  if (const char* env = getenv("MAGIX_NCCL_LIBRARY"); env != nullptr && *env != '\0') {
    paths.emplace_back(env);
  }
  paths.emplace_back(kFile);
  if (std::string(MAGIX_NCCL_DIR).size() > 0) {
    paths.push_back(std::string(MAGIX_NCCL_DIR) + "/" + kFile);
  }
  return paths;
}

std::optional<NcclApi> load_nccl(const std::vector<std::string>& candidates, std::string* why) {
  std::string tried;
  for (const std::string& path : candidates) {
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* err = dlerror();
      tried += fmt::format("{}{}: {}", tried.empty() ? "" : "; ", path, err ? err : "not found");
      continue;
    }
    NcclApi api;  // the library stays loaded for the life of the process
    api.path = path;
    std::string missing;
    bind(lib, "ncclGetVersion", api.get_version, missing);
    bind(lib, "ncclGetErrorString", api.error_string, missing);
    bind(lib, "ncclGetLastError", api.last_error, missing);
    bind(lib, "ncclGetUniqueId", api.get_unique_id, missing);
    bind(lib, "ncclCommInitRank", api.comm_init_rank, missing);
    bind(lib, "ncclCommDestroy", api.comm_destroy, missing);
    bind(lib, "ncclAllGather", api.all_gather, missing);
    bind(lib, "ncclAllReduce", api.all_reduce, missing);
    bind(lib, "ncclSend", api.send, missing);
    bind(lib, "ncclRecv", api.recv, missing);
    bind(lib, "ncclGroupStart", api.group_start, missing);
    bind(lib, "ncclGroupEnd", api.group_end, missing);
    if (!missing.empty()) {
      tried += fmt::format("{}{}: no symbol {} (NCCL 2.13 or later is needed)",
                           tried.empty() ? "" : "; ", path, missing);
      dlclose(lib);
      continue;
    }
    if (api.get_version(&api.version) != ncclSuccess) api.version = 0;
    return api;
  }
  if (why != nullptr) *why = fmt::format("NCCL {} cannot be loaded ({})", NCCL_MAJOR, tried);
  return std::nullopt;
}

const NcclApi* nccl_library(std::string* why) {
  static const Loaded loaded = [] {
    Loaded l;
    l.api = load_nccl(
        nccl_candidates([](const char* name) -> const char* { return std::getenv(name); }), &l.why);
    return l;
  }();
  if (!loaded.api && why != nullptr) *why = loaded.why;
  return loaded.api ? &*loaded.api : nullptr;
}

}  // namespace magix::cuda
