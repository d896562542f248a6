#include "backends/cpu/blas_library.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "magix/error.hpp"

namespace magix::cpu {

namespace {

#if defined(__x86_64__)
constexpr const char* kOpenblasOpenmpPath =
    "/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0";
#elif defined(__aarch64__)
constexpr const char* kOpenblasOpenmpPath =
    "/usr/lib/aarch64-linux-gnu/openblas-openmp/libopenblas.so.0";
#else
constexpr const char* kOpenblasOpenmpPath = "libopenblas.so.0";
#endif

// Sets OPENBLAS_CORETYPE for the lifetime of the object, then restores the previous state.
// OpenBLAS reads the variable once, in its load-time constructor.
class ScopedCoretype {
 public:
  explicit ScopedCoretype(const char* coretype) {
    if (coretype == nullptr || std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
    set_ = setenv("OPENBLAS_CORETYPE", coretype, 0) == 0;
  }
  ~ScopedCoretype() {
    if (set_) unsetenv("OPENBLAS_CORETYPE");
  }
  ScopedCoretype(const ScopedCoretype&) = delete;
  ScopedCoretype& operator=(const ScopedCoretype&) = delete;

 private:
  bool set_ = false;
};

// "OpenBLAS 0.3.21 (SkylakeX, OpenMP)", "BLIS 0.9.0 (skx)", or "cblas_sgemm from PATH".
std::string describe(void* handle, const std::string& path) {
  using CharFn = char* (*)();
  using IntFn = int (*)();
  if (auto config = reinterpret_cast<CharFn>(dlsym(handle, "openblas_get_config"))) {
    std::string text = config();  // "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Cooperlake ..."
    std::string version = "OpenBLAS";
    size_t first = text.find(' ');
    if (first != std::string::npos) {
      size_t second = text.find(' ', first + 1);
      version = text.substr(0, second);
    }
    std::string core = "?";
    if (auto corename = reinterpret_cast<CharFn>(dlsym(handle, "openblas_get_corename"))) {
      core = corename();
    }
    std::string threading;
    if (auto parallel = reinterpret_cast<IntFn>(dlsym(handle, "openblas_get_parallel"))) {
      int mode = parallel();
      threading = mode == 2 ? ", OpenMP" : mode == 1 ? ", pthreads" : ", sequential";
    }
    return version + " (" + core + threading + ")";
  }
  if (auto version = reinterpret_cast<CharFn>(dlsym(handle, "bli_info_get_version_str"))) {
    std::string name = std::string("BLIS ") + version();
    using ArchId = int (*)();
    using ArchString = const char* (*)(int);
    auto id = reinterpret_cast<ArchId>(dlsym(handle, "bli_arch_query_id"));
    auto str = reinterpret_cast<ArchString>(dlsym(handle, "bli_arch_string"));
    if (id && str) name += std::string(" (") + str(id()) + ")";
    return name;
  }
  return "cblas_sgemm from " + path;
}

BlasLibrary load() {
  std::vector<std::string> candidates;
  const char* user = std::getenv("MAGIX_BLAS_LIBRARY");
  if (user != nullptr && *user != '\0') {
    candidates.push_back(user);
  } else {
    candidates.push_back(kOpenblasOpenmpPath);
    candidates.push_back("libopenblas.so.0");
  }
  std::string tried;
  for (const std::string& path : candidates) {
    void* handle = nullptr;
    {
      ScopedCoretype coretype(cpu_has_avx512() ? blas_avx512_coretype() : nullptr);
      handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    }
    if (handle == nullptr) {
      const char* why = dlerror();
      tried += fmt::format("\n  {}: {}", path, why ? why : "cannot be opened");
      continue;
    }
    // The handle is never closed: the library stays loaded for the life of the process.
    auto sgemm = reinterpret_cast<BlasLibrary::Sgemm>(dlsym(handle, "cblas_sgemm"));
    if (sgemm == nullptr) {
      tried += fmt::format("\n  {}: has no cblas_sgemm", path);
      continue;
    }
    return BlasLibrary{sgemm, describe(handle, path), path};
  }
  MAGIX_FAIL(
      "no BLAS library could be loaded for matrix products; tried:{}\n"
      "Install OpenBLAS (Debian: apt-get install libopenblas0-openmp, see scripts/setup.sh) or "
      "set MAGIX_BLAS_LIBRARY to a library that exports cblas_sgemm",
      tried);
}

}  // namespace

const char* blas_avx512_coretype() {
  return "SkylakeX";
}

bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

const BlasLibrary& blas_library() {
  // A function-local static: initialised exactly once even with concurrent callers; if loading
  // throws, the next call tries again.
  static const BlasLibrary library = load();
  return library;
}

}  // namespace magix::cpu
