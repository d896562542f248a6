#include "backends/cuda/cublaslt_library.hpp"

#include <dlfcn.h>

#include <vector>

#include "magix/error.hpp"

#ifndef MAGIX_CUBLASLT_DIR
#define MAGIX_CUBLASLT_DIR ""
#endif

namespace magix::cuda {
namespace {

template <class F>
void bind(void* lib, const std::string& path, const char* name, F& f) {
  void* sym = dlsym(lib, name);
  MAGIX_CHECK(sym != nullptr, "{} has no symbol {}: is it cuBLASLt {}?", path, name,
              CUBLAS_VER_MAJOR);
  f = reinterpret_cast<F>(sym);
}

CublasLtApi load() {
  const std::string file = "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR);
  std::vector<std::string> candidates = {file};
  if (std::string(MAGIX_CUBLASLT_DIR).size() > 0) {
    candidates.push_back(std::string(MAGIX_CUBLASLT_DIR) + "/" + file);
  }
  std::string tried;
  for (const std::string& path : candidates) {
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* why = dlerror();
      tried += fmt::format("\n  {}: {}", path, why ? why : "not found");
      continue;
    }
    CublasLtApi api;  // the library stays loaded for the life of the process
    api.path = path;
    bind(lib, path, "cublasLtCreate", api.create);
    bind(lib, path, "cublasLtDestroy", api.destroy);
    bind(lib, path, "cublasLtGetVersion", api.get_version);
    bind(lib, path, "cublasLtGetStatusName", api.status_name);
    bind(lib, path, "cublasLtGetStatusString", api.status_string);
    bind(lib, path, "cublasLtMatmulDescCreate", api.desc_create);
    bind(lib, path, "cublasLtMatmulDescDestroy", api.desc_destroy);
    bind(lib, path, "cublasLtMatmulDescSetAttribute", api.desc_set);
    bind(lib, path, "cublasLtMatrixLayoutCreate", api.layout_create);
    bind(lib, path, "cublasLtMatrixLayoutDestroy", api.layout_destroy);
    bind(lib, path, "cublasLtMatmulPreferenceCreate", api.pref_create);
    bind(lib, path, "cublasLtMatmulPreferenceDestroy", api.pref_destroy);
    bind(lib, path, "cublasLtMatmulPreferenceSetAttribute", api.pref_set);
    bind(lib, path, "cublasLtMatmulAlgoGetHeuristic", api.heuristic);
    bind(lib, path, "cublasLtMatmul", api.matmul);
    return api;
  }
  MAGIX_FAIL(
      "the CUDA backend cannot load cuBLASLt {}:{}\nInstall the CUDA toolkit's cuBLAS "
      "libraries or add their folder to LD_LIBRARY_PATH.",
      CUBLAS_VER_MAJOR, tried);
}

}  // namespace

const CublasLtApi& cublaslt() {
  static const CublasLtApi api = load();
  return api;
}

}  // namespace magix::cuda
