// GEMM throughput: magix's gemm()/matmul_forward against each candidate BLAS called directly,
// fp32, square n = 512, 1024, 2048, in the same run. Every engine runs in its own child process
// (OpenBLAS reads OPENBLAS_CORETYPE only when it is loaded), rounds interleave the engines, and
// each figure is the median over rounds of the per-child median over repetitions. Two tables:
// GFLOP/s of wall time (what a user gets), and GFLOP per CPU-second of the process (per-core
// efficiency, much less disturbed when other processes share the cores). The last line of the
// table run is one JSON object with every figure.
//
//   bench_gemm [--threads 2] [--rounds 3] [--reps 5]      the table (docs/kernels.md)
//   bench_gemm --child ENGINE [--reps 5]                   one engine, machine-readable lines
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/blas_library.hpp"
#include "backends/cpu/gemm.hpp"
#include "backends/cpu/matmul.hpp"

namespace {

constexpr int64_t kSizes[] = {512, 1024, 2048};
constexpr const char* kOps[] = {"NN", "NT"};  // NT: C = A·B^T, the layout of matmul_forward

#if defined(__x86_64__)
#define MULTIARCH "/usr/lib/x86_64-linux-gnu/"
#else
#define MULTIARCH "/usr/lib/"
#endif
constexpr const char* kOpenblasPath = MULTIARCH "openblas-openmp/libopenblas.so.0";
constexpr const char* kBlisPath = MULTIARCH "blis-openmp/libblis.so.4";
constexpr const char* kDnnlPath = "libdnnl.so.2";

// Engines measured; "openblas:X" forces OPENBLAS_CORETYPE=X, "openblas" uses its detection.
const std::vector<std::string> kEngines = {
    "magix", "openblas", "openblas:Haswell", "openblas:SkylakeX", "openblas:Cooperlake",
    "blis",  "dnnl"};

using Gemm = std::function<void(bool trans_b, int64_t n, const float* A, const float* B, float* C)>;

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "bench_gemm: %s\n", message.c_str());
  std::exit(1);
}

void* open_or_die(const char* path) {
  void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) die(std::string("cannot open ") + path + ": " + dlerror());
  return handle;
}

// Returns the engine's gemm and prints its "name" line.
Gemm make_engine(const std::string& engine) {
  if (engine == "magix") {
    std::printf("name %s\n", magix::cpu::gemm_backend_name().c_str());
    return [](bool trans_b, int64_t n, const float* A, const float* B, float* C) {
      if (trans_b) {
        magix::cpu::matmul_forward(C, A, B, nullptr, n, n, n);
      } else {
        magix::cpu::gemm(false, false, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
      }
    };
  }
  if (engine.rfind("openblas", 0) == 0 || engine == "blis") {
    void* handle = open_or_die(engine == "blis" ? kBlisPath : kOpenblasPath);
    auto sgemm = reinterpret_cast<magix::cpu::BlasLibrary::Sgemm>(dlsym(handle, "cblas_sgemm"));
    if (sgemm == nullptr) die(engine + ": no cblas_sgemm");
    if (auto core = reinterpret_cast<char* (*)()>(dlsym(handle, "openblas_get_corename"))) {
      std::printf("name OpenBLAS %s\n", core());
    } else {
      std::printf("name %s\n", engine.c_str());
    }
    return [sgemm](bool trans_b, int64_t n, const float* A, const float* B, float* C) {
      const int m = static_cast<int>(n);
      sgemm(magix::cpu::kCblasRowMajor, magix::cpu::kCblasNoTrans,
            trans_b ? magix::cpu::kCblasTrans : magix::cpu::kCblasNoTrans, m, m, m, 1.0f, A, m, B,
            m, 0.0f, C, m);
    };
  }
  if (engine == "dnnl") {
    void* handle = open_or_die(kDnnlPath);
    using Sgemm = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
    auto sgemm = reinterpret_cast<Sgemm>(dlsym(handle, "dnnl_sgemm"));
    if (sgemm == nullptr) die("dnnl: no dnnl_sgemm");
    std::printf("name oneDNN dnnl_sgemm\n");
    return [sgemm](bool trans_b, int64_t n, const float* A, const float* B, float* C) {
      if (sgemm('N', trans_b ? 'T' : 'N', n, n, n, 1.0f, A, n, B, n, 0.0f, C, n) != 0) {
        die("dnnl_sgemm failed");
      }
    };
  }
  die("unknown engine " + engine);
}

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<float[], FreeDeleter>;

Buffer random_buffer(int64_t count, std::mt19937& rng) {
  Buffer buffer(static_cast<float*>(std::aligned_alloc(64, count * sizeof(float))));
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (int64_t i = 0; i < count; i++) buffer[i] = dist(rng);
  return buffer;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// CPU time of the whole process (all threads), in seconds.
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Child: for each op and size, median GFLOP/s over `reps` timed calls after one warm-up.
int run_child(const std::string& engine, int reps) {
  Gemm gemm = make_engine(engine);
  std::mt19937 rng(1234);
  for (const char* op : kOps) {
    for (int64_t n : kSizes) {
      Buffer A = random_buffer(n * n, rng), B = random_buffer(n * n, rng),
             C = random_buffer(n * n, rng);
      const bool trans_b = std::strcmp(op, "NT") == 0;
      gemm(trans_b, n, A.get(), B.get(), C.get());
      std::vector<double> wall, cpu;
      for (int r = 0; r < reps; r++) {
        // Small products repeat inside one timed sample (>= ~1e10 flop, about 0.1 s), so the
        // scheduler's wake-up of the second thread does not dominate the figure.
        const int iters = static_cast<int>(std::max(1.0, 1e10 / (2.0 * n * n * n)));
        const double c0 = cpu_seconds();
        auto t0 = std::chrono::steady_clock::now();
        for (int it = 0; it < iters; ++it) gemm(trans_b, n, A.get(), B.get(), C.get());
        std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
        const double flop = 2.0 * n * n * n * iters;
        wall.push_back(flop / dt.count() * 1e-9);
        cpu.push_back(flop / std::max(cpu_seconds() - c0, 1e-9) * 1e-9);
      }
      // A figure only counts if the product is right: spot-check entries against double sums.
      for (int probe = 0; probe < 16; probe++) {
        const int64_t i = (probe * 7919) % n, j = (probe * 104729) % n;
        double ref = 0.0;
        for (int64_t k = 0; k < n; k++) {
          ref += static_cast<double>(A[i * n + k]) * (trans_b ? B[j * n + k] : B[k * n + j]);
        }
        if (std::fabs(C[i * n + j] - ref) > 1e-4 * n) {
          std::fprintf(stderr, "bench_gemm: %s %s n=%lld gives a wrong product\n", engine.c_str(),
                       op, static_cast<long long>(n));
          return 1;
        }
      }
      std::printf("result wall %s %lld %.2f\n", op, static_cast<long long>(n), median(wall));
      std::printf("result cpu %s %lld %.2f\n", op, static_cast<long long>(n), median(cpu));
    }
  }
  return 0;
}

using Results = std::map<std::string, std::map<std::string, std::vector<double>>>;

std::string load_average() {
  FILE* f = std::fopen("/proc/loadavg", "r");
  char buf[128] = "?";
  if (f != nullptr) {
    if (std::fgets(buf, sizeof(buf), f) == nullptr) buf[0] = '\0';
    std::fclose(f);
  }
  return std::string(buf, std::strcspn(buf, "\n"));
}

// One table: a row per engine, a column per (op, n), then magix over the fastest candidate.
// Returns the same figures as {engine: {column: GFLOP/s}, "magix/fastest": {column: ratio}}.
nlohmann::json print_table(const char* title, const std::string& kind, Results& results,
                           std::map<std::string, std::string>& names) {
  nlohmann::json out = nlohmann::json::object();
  std::printf("\n%s\n%-44s", title, "engine");
  std::vector<std::string> columns;
  for (const char* op : kOps) {
    for (int64_t n : kSizes) {
      columns.push_back(std::string(op) + std::to_string(n));
      std::printf(" %8s", columns.back().c_str());
    }
  }
  std::printf("\n");
  std::map<std::string, double> best;
  for (const std::string& engine : kEngines) {
    std::string label = engine + " [" + names[engine] + "]";
    std::printf("%-44.44s", label.c_str());
    for (const std::string& column : columns) {
      const std::vector<double>& values = results[kind + " " + engine][column];
      if (values.empty()) {  // the engine's library is not installed, or it failed
        std::printf(" %8s", "n/a");
        continue;
      }
      const double value = median(values);
      out[engine][column] = value;
      if (engine != "magix") best[column] = std::max(best[column], value);
      std::printf(" %8.1f", value);
    }
    std::printf("\n");
  }
  std::printf("%-44s", "magix / fastest candidate");
  for (const std::string& column : columns) {
    double ratio = best[column] > 0 ? median(results[kind + " magix"][column]) / best[column] : 0.0;
    std::printf(" %8.3f", ratio);
    out["magix/fastest"][column] = ratio;
  }
  std::printf("\n");
  return out;
}

int run_driver(int threads, int rounds, int reps) {
  char self[4096];
  ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) die("cannot find /proc/self/exe");
  self[len] = '\0';
  const char* user_coretype = std::getenv("OPENBLAS_CORETYPE");
  // results["wall ENGINE" or "cpu ENGINE"][op + n] = per-round medians
  Results results;
  std::map<std::string, std::string> names;
  for (int round = 0; round < rounds; round++) {
    for (const std::string& engine : kEngines) {
      std::string env = "OMP_NUM_THREADS=" + std::to_string(threads) +
                        " BLIS_NUM_THREADS=" + std::to_string(threads);
      if (engine.rfind("openblas:", 0) == 0) {
        env += " OPENBLAS_CORETYPE=" + engine.substr(9);
      } else if (engine != "magix" || user_coretype == nullptr) {
        env = "env -u OPENBLAS_CORETYPE " + env;
      }
      std::string command =
          env + " '" + self + "' --child " + engine + " --reps " + std::to_string(reps);
      FILE* pipe = popen(command.c_str(), "r");
      if (pipe == nullptr) die("popen failed");
      char line[512];
      while (std::fgets(line, sizeof(line), pipe)) {
        char kind[8], op[8];
        long long n = 0;
        double value = 0;
        if (std::strncmp(line, "name ", 5) == 0) {
          names[engine] = std::string(line + 5, std::strcspn(line + 5, "\n"));
        } else if (std::sscanf(line, "result %7s %7s %lld %lf", kind, op, &n, &value) == 4) {
          results[std::string(kind) + " " + engine][std::string(op) + std::to_string(n)].push_back(
              value);
        }
      }
      if (pclose(pipe) != 0) std::fprintf(stderr, "bench_gemm: engine %s failed\n", engine.c_str());
    }
  }
  const std::string load = load_average();
  std::printf(
      "fp32 GEMM, square n, %d threads, median of %d rounds x %d reps; load average "
      "at the end: %s\n",
      threads, rounds, reps, load.c_str());
  nlohmann::json json = {{"bench", "gemm"}, {"threads", threads},       {"rounds", rounds},
                         {"reps", reps},    {"load_average_end", load}, {"engines", names}};
  json["gflops_wall"] = print_table("GFLOP/s (wall time)", "wall", results, names);
  json["gflops_per_cpu_second"] =
      print_table("GFLOP per CPU-second of the process", "cpu", results, names);
  std::printf("%s\n", json.dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, rounds = 3, reps = 5;
  std::string child;
  for (int i = 1; i < argc; i++) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value after " + arg);
      return argv[++i];
    };
    if (arg == "--threads") {
      threads = std::atoi(value().c_str());
    } else if (arg == "--rounds") {
      rounds = std::atoi(value().c_str());
    } else if (arg == "--reps") {
      reps = std::atoi(value().c_str());
    } else if (arg == "--child") {
      child = value();
    } else {
      die("unknown argument " + arg + " (see the comment at the top of bench/gemm.cpp)");
    }
  }
  if (threads < 1 || rounds < 1 || reps < 1) die("--threads, --rounds and --reps must be >= 1");
  if (!child.empty()) return run_child(child, reps);
  return run_driver(threads, rounds, reps);
}
