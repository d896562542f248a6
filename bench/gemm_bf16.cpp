// bf16 GEMM throughput: magix's gemm_bf16() against each candidate engine called directly and
// against the fp32 gemm() of the same shapes, in the same run; plus the fp32 <-> bf16
// conversions' GB/s. Shapes: square n = 512, 1024, 2048 (NN, NT); the products of the
// decoder's linear layers (torch layout W (OC, C), N = 2048 rows): forward out = inp·W^T (NT),
// dinp += dout·W (NN), dW += dout^T·inp (TN), for OC = C = 768, OC = 2048 (C 768), the LM head in
// chunks of 256 rows (V = 32000, C 768) and a 1.1B model's MLP (C 2048, I 5632); and (--shapes
// lora) the frozen weights' products of a 1.1B LoRA step on 128 tokens and a 7B MLP's on 512.
//
// Every engine runs in its own child process (oneDNN reads ONEDNN_MAX_CPU_ISA once; "X:isa"
// caps it to show what CPUs without AMX or without AVX512-BF16 get), rounds interleave the
// engines, and each figure is the median over rounds of the per-child median over repetitions.
// Tables: GFLOP/s of wall time, and GFLOP per CPU-second of the process (per-core efficiency,
// much less disturbed when other processes share the cores). The last line is one JSON object.
//
// Usage (engines: the names in kEngines below; none: the conversions only):
//   bench_gemm_bf16 [--threads 2] [--rounds 3] [--reps 3] [--engines a,b,...|none]
//                   [--shapes all|square|decoder|lora]
//   bench_gemm_bf16 --child ENGINE [--reps 3] [--shapes ...]    one engine, machine-readable
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
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/amx_gemm.hpp"
#include "backends/cpu/blas_library.hpp"
#include "backends/cpu/convert.hpp"
#include "backends/cpu/gemm.hpp"
#include "backends/cpu/gemm_bf16.hpp"
#include "magix/dtype_convert.hpp"

namespace {

struct Shape {
  const char* name;
  bool trans_a, trans_b;
  int64_t M, N, K;
  const char* group;  // "square", "decoder" or "lora"
};

constexpr Shape kShapes[] = {
    {"NN512", false, false, 512, 512, 512, "square"},
    {"NN1024", false, false, 1024, 1024, 1024, "square"},
    {"NN2048", false, false, 2048, 2048, 2048, "square"},
    {"NT512", false, true, 512, 512, 512, "square"},
    {"NT1024", false, true, 1024, 1024, 1024, "square"},
    {"NT2048", false, true, 2048, 2048, 2048, "square"},
    // C = OC = 768 (attention projections of a ~110M model)
    {"fwd768", false, true, 2048, 768, 768, "decoder"},
    {"dinp768", false, false, 2048, 768, 768, "decoder"},
    {"dW768", true, false, 768, 768, 2048, "decoder"},
    // C 768 -> OC 2048 (MLP up/gate)
    {"fwd768x2048", false, true, 2048, 2048, 768, "decoder"},
    {"dinp768x2048", false, false, 2048, 768, 2048, "decoder"},
    {"dW768x2048", true, false, 2048, 768, 2048, "decoder"},
    // LM head, one chunk of 256 rows: (256, 768) x (32000, 768)^T
    {"fwdLM", false, true, 256, 32000, 768, "decoder"},
    {"dinpLM", false, false, 256, 768, 32000, "decoder"},
    {"dWLM", true, false, 32000, 768, 256, "decoder"},
    // 1.1B model's MLP: C 2048 -> I 5632
    {"fwd2048x5632", false, true, 2048, 5632, 2048, "decoder"},
    {"dinp2048x5632", false, false, 2048, 2048, 5632, "decoder"},
    {"dW2048x5632", true, false, 5632, 2048, 2048, "decoder"},
    // A LoRA step of a 1.1B Llama (hidden 2048, kv 256, MLP 5632, vocab 32000) on 128 tokens:
    // the frozen weights' forward products (NT) and input gradients (NN); and a 7B MLP on 512.
    {"lqFwd", false, true, 128, 2048, 2048, "lora"},
    {"lkvFwd", false, true, 128, 256, 2048, "lora"},
    {"lupFwd", false, true, 128, 5632, 2048, "lora"},
    {"ldownFwd", false, true, 128, 2048, 5632, "lora"},
    {"lheadFwd", false, true, 128, 32000, 2048, "lora"},
    {"lqDinp", false, false, 128, 2048, 2048, "lora"},
    {"lkvDinp", false, false, 128, 2048, 256, "lora"},
    {"lupDinp", false, false, 128, 2048, 5632, "lora"},
    {"ldownDinp", false, false, 128, 5632, 2048, "lora"},
    {"lheadDinp", false, false, 128, 2048, 32000, "lora"},
    {"l7upFwd", false, true, 512, 14336, 4096, "lora"},
    {"l7upDinp", false, false, 512, 4096, 14336, "lora"},
};

// "fp32": gemm() on fp32 copies (the baseline). "magix": gemm_bf16() as chosen at run time;
// "magix:fp32" forces its widening engine (what CPUs without AMX run). "amx": magix's AMX kernels
// (amx_gemm.hpp) called directly, gemm_bf16() for the shapes they do not take. "onednn": the matmul
// primitive created once per shape and called directly; "onednn-gemm": oneDNN's
// dnnl_gemm_bf16bf16f32 (exported, not in its public headers); "openblas-sbgemm": OpenBLAS's
// cblas_sbgemm where the library has it.
// ":isa" sets ONEDNN_MAX_CPU_ISA for that child.
const std::vector<std::string> kEngines = {"fp32",
                                           "magix",
                                           "amx",
                                           "magix:fp32",
                                           "onednn",
                                           "onednn-gemm",
                                           "openblas-sbgemm",
                                           "onednn:avx512_core_bf16",
                                           "onednn:avx512_core"};

#if defined(__x86_64__)
constexpr const char* kOpenblasPath = "/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0";
#else
constexpr const char* kOpenblasPath = "libopenblas.so.0";
#endif

// One product on prepared operands: A, B as bf16 and as fp32 (the same values), C fp32.
struct Operands {
  const Shape* shape;
  std::vector<uint16_t> a, b;
  std::vector<float> a32, b32, c;
};
using Product = std::function<void(Operands&)>;
using Engine = std::function<Product(const Shape&)>;  // prepares a shape, returns its product

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "bench_gemm_bf16: %s\n", message.c_str());
  std::exit(1);
}

int64_t lda(const Shape& s) {
  return s.trans_a ? s.M : s.K;
}
int64_t ldb(const Shape& s) {
  return s.trans_b ? s.K : s.N;
}

// The engine's product maker; prints its "name" line.
Engine make_engine(const std::string& engine) {
  const std::string base = engine.substr(0, engine.find(':'));
  if (base == "fp32") {
    std::printf("name fp32 %s\n", magix::cpu::gemm_backend_name().c_str());
    return [](const Shape&) -> Product {
      return [](Operands& o) {
        const Shape& s = *o.shape;
        magix::cpu::gemm(s.trans_a, s.trans_b, s.M, s.N, s.K, 1.0f, o.a32.data(), lda(s),
                         o.b32.data(), ldb(s), 0.0f, o.c.data(), s.N);
      };
    };
  }
  if (base == "magix") {
    std::printf("name %s\n", magix::cpu::gemm_bf16_engine_name().c_str());
    return [](const Shape&) -> Product {
      return [](Operands& o) {
        const Shape& s = *o.shape;
        magix::cpu::gemm_bf16(s.trans_a, s.trans_b, s.M, s.N, s.K, 1.0f, o.a.data(), lda(s),
                              o.b.data(), ldb(s), 0.0f, o.c.data(), s.N);
      };
    };
  }
  if (base == "amx") {
    if (!magix::cpu::amx_gemm_available()) {
      std::printf("absent this CPU (or OS) has no AMX-BF16\n");
      std::exit(0);
    }
    std::printf("name magix AMX kernels\n");
    return [](const Shape&) -> Product {
      return [](Operands& o) {
        const Shape& s = *o.shape;
        if (!magix::cpu::amx_gemm_takes(s.trans_a, s.M, s.N, s.K)) {
          magix::cpu::gemm_bf16(s.trans_a, s.trans_b, s.M, s.N, s.K, 1.0f, o.a.data(), lda(s),
                                o.b.data(), ldb(s), 0.0f, o.c.data(), s.N);
          return;
        }
        magix::cpu::amx_gemm_bf16(s.trans_b, s.M, s.N, s.K, 1.0f, o.a.data(), lda(s), o.b.data(),
                                  ldb(s), nullptr, false, o.c.data(), s.N, false);
      };
    };
  }
  if (base == "onednn") {
    static dnnl::engine cpu(dnnl::engine::kind::cpu, 0);
    static dnnl::stream stream(cpu);
    const dnnl_version_t* v = dnnl::version();
    std::printf("name oneDNN %d.%d.%d matmul, direct\n", v->major, v->minor, v->patch);
    return [](const Shape& s) -> Product {
      using dt = dnnl::memory::data_type;
      using dims = dnnl::memory::dims;
      const dnnl::memory::desc a({s.M, s.K}, dt::bf16, s.trans_a ? dims{1, s.M} : dims{s.K, 1});
      const dnnl::memory::desc b({s.K, s.N}, dt::bf16, s.trans_b ? dims{1, s.K} : dims{s.N, 1});
      const dnnl::memory::desc c({s.M, s.N}, dt::f32, dims{s.N, 1});
#if DNNL_VERSION_MAJOR >= 3
      const dnnl::matmul::primitive_desc pd(cpu, a, b, c);
#else
      const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), cpu);
#endif
      std::printf("impl %s %s\n", s.name, pd.impl_info_str());
      auto primitive = std::make_shared<dnnl::matmul>(pd);
      return [primitive, a, b, c](Operands& o) {
        dnnl::memory ma(a, cpu, o.a.data()), mb(b, cpu, o.b.data()), mc(c, cpu, o.c.data());
        primitive->execute(stream,
                           {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
        stream.wait();
      };
    };
  }
  if (engine == "onednn-gemm") {
    using Gemm = int (*)(char, char, int64_t, int64_t, int64_t, float, const uint16_t*, int64_t,
                         const uint16_t*, int64_t, float, float*, int64_t);
    auto gemm = reinterpret_cast<Gemm>(dlsym(RTLD_DEFAULT, "dnnl_gemm_bf16bf16f32"));
    if (gemm == nullptr) die("onednn-gemm: no dnnl_gemm_bf16bf16f32 in the loaded oneDNN");
    std::printf("name oneDNN dnnl_gemm_bf16bf16f32 (%s)\n",
                dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx512_core_amx ? "amx host"
                                                                                : "non-amx host");
    return [gemm](const Shape&) -> Product {
      return [gemm](Operands& o) {
        const Shape& s = *o.shape;  // row-major, like dnnl_sgemm
        if (gemm(s.trans_a ? 'T' : 'N', s.trans_b ? 'T' : 'N', s.M, s.N, s.K, 1.0f, o.a.data(),
                 lda(s), o.b.data(), ldb(s), 0.0f, o.c.data(), s.N) != 0) {
          die("dnnl_gemm_bf16bf16f32 failed");
        }
      };
    };
  }
  if (engine == "openblas-sbgemm") {
    void* handle = dlopen(kOpenblasPath, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) die(std::string("cannot open ") + kOpenblasPath);
    using Sbgemm = void (*)(int, int, int, int, int, int, float, const uint16_t*, int,
                            const uint16_t*, int, float, float*, int);
    auto sbgemm = reinterpret_cast<Sbgemm>(dlsym(handle, "cblas_sbgemm"));
    if (sbgemm == nullptr) {
      std::printf("absent %s exports no cblas_sbgemm\n", kOpenblasPath);
      std::exit(0);
    }
    std::printf("name OpenBLAS cblas_sbgemm\n");
    return [sbgemm](const Shape&) -> Product {
      return [sbgemm](Operands& o) {
        const Shape& s = *o.shape;
        using namespace magix::cpu;
        sbgemm(kCblasRowMajor, s.trans_a ? kCblasTrans : kCblasNoTrans,
               s.trans_b ? kCblasTrans : kCblasNoTrans, static_cast<int>(s.M),
               static_cast<int>(s.N), static_cast<int>(s.K), 1.0f, o.a.data(),
               static_cast<int>(lda(s)), o.b.data(), static_cast<int>(ldb(s)), 0.0f, o.c.data(),
               static_cast<int>(s.N));
      };
    };
  }
  die("unknown engine " + engine);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

double cpu_seconds() {  // all threads of the process
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Times fn over `reps` samples of enough calls for ~`work` units; prints median rates.
void time_samples(const std::string& label, int reps, double work_per_call, double min_work,
                  double unit, const std::function<void()>& fn) {
  fn();  // warm-up (primitive creation, page faults)
  const int iters = static_cast<int>(std::max(1.0, min_work / work_per_call));
  std::vector<double> wall, cpu;
  for (int r = 0; r < reps; r++) {
    const double c0 = cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    for (int it = 0; it < iters; it++) fn();
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    wall.push_back(work_per_call * iters / dt.count() / unit);
    cpu.push_back(work_per_call * iters / std::max(cpu_seconds() - c0, 1e-9) / unit);
  }
  std::printf("result wall %s %.2f\n", label.c_str(), median(wall));
  std::printf("result cpu %s %.2f\n", label.c_str(), median(cpu));
}

bool wanted(const Shape& s, const std::string& shapes) {
  return shapes == "all" || shapes == s.group;
}

int run_gemm_child(const std::string& engine_name, int reps, const std::string& shapes) {
  Engine engine = make_engine(engine_name);
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (const Shape& s : kShapes) {
    if (!wanted(s, shapes)) continue;
    Operands o{&s, {}, {}, {}, {}, std::vector<float>(s.M * s.N)};
    o.a.resize(s.M * s.K);
    o.b.resize(s.K * s.N);
    for (uint16_t& x : o.a) x = magix::float_to_bf16(dist(rng));
    for (uint16_t& x : o.b) x = magix::float_to_bf16(dist(rng));
    o.a32.resize(o.a.size());
    o.b32.resize(o.b.size());
    magix::cpu::bf16_to_f32(o.a.data(), o.a32.data(), static_cast<int64_t>(o.a.size()));
    magix::cpu::bf16_to_f32(o.b.data(), o.b32.data(), static_cast<int64_t>(o.b.size()));
    Product product = engine(s);
    const double flop = 2.0 * s.M * s.N * s.K;
    time_samples(s.name, reps, flop, 1e10, 1e9, [&] { product(o); });
    // A figure only counts if the product is right: spot-check entries against double sums.
    for (int probe = 0; probe < 16; probe++) {
      const int64_t i = (probe * 7919) % s.M, j = (probe * 104729) % s.N;
      double ref = 0.0;
      for (int64_t k = 0; k < s.K; k++) {
        const float a = s.trans_a ? o.a32[k * s.M + i] : o.a32[i * s.K + k];
        const float b = s.trans_b ? o.b32[j * s.K + k] : o.b32[k * s.N + j];
        ref += static_cast<double>(a) * b;
      }
      if (std::fabs(o.c[i * s.N + j] - ref) > 1e-4 * s.K) {
        std::fprintf(stderr, "bench_gemm_bf16: %s %s gives a wrong product (%g, want %g)\n",
                     engine_name.c_str(), s.name, o.c[i * s.N + j], ref);
        return 1;
      }
    }
  }
  return 0;
}

// Conversions: GB/s of bytes read + written, next to memcpy of the fp32 array split between the
// threads the same way; 16M values (from memory) and 256K values (from the cores' L2 caches).
constexpr int64_t kConvertSizes[] = {int64_t{1} << 24, int64_t{1} << 18};
constexpr const char* kConvertOps[] = {"f32_to_bf16", "bf16_to_f32", "scalar_f32_to_bf16",
                                       "scalar_bf16_to_f32", "memcpy_f32"};

int run_convert_child(int reps) {
  std::printf("name conversions (%s kernels)\n",
              magix::cpu::convert_isa_name(magix::cpu::convert_isa()));
  for (const int64_t n : kConvertSizes) {
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> dist(-10.0f, 10.0f);
    std::vector<float> f(n), g(n);
    std::vector<uint16_t> h(n);
    for (float& x : f) x = dist(rng);
    const double f2b = 6.0 * n, copy = 8.0 * n;
    const std::string size = std::to_string(n);
    time_samples("f32_to_bf16@" + size, reps, f2b, 2e9, 1e9,
                 [&] { magix::cpu::f32_to_bf16(f.data(), h.data(), n); });
    time_samples("bf16_to_f32@" + size, reps, f2b, 2e9, 1e9,
                 [&] { magix::cpu::bf16_to_f32(h.data(), g.data(), n); });
    time_samples("scalar_f32_to_bf16@" + size, reps, f2b, 2e9, 1e9,
                 [&] { magix::float_to_bf16(std::span<const float>(f), std::span<uint16_t>(h)); });
    time_samples("scalar_bf16_to_f32@" + size, reps, f2b, 2e9, 1e9,
                 [&] { magix::bf16_to_float(std::span<const uint16_t>(h), std::span<float>(g)); });
    time_samples("memcpy_f32@" + size, reps, copy, 2e9, 1e9, [&] {
      constexpr int64_t kBlock = int64_t{1} << 14;
#pragma omp parallel for schedule(static)
      for (int64_t b = 0; b < n / kBlock; b++) {
        std::memcpy(g.data() + b * kBlock, f.data() + b * kBlock, kBlock * sizeof(float));
      }
    });
    for (int64_t i = 0; i < n; i += 4099) {
      if (h[i] != magix::float_to_bf16(f[i])) die("f32_to_bf16 disagrees with float_to_bf16");
    }
  }
  return 0;
}

// --- driver ---

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

std::string self_exe() {
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) die("cannot find /proc/self/exe");
  self[len] = '\0';
  return self;
}

// Runs one child; appends its results[kind + " " + engine][label] and its name/notes.
void run_child_process(const std::string& engine, int threads, int reps, const std::string& shapes,
                       Results& results, std::map<std::string, std::string>& names) {
  std::string env = "env -u ONEDNN_MAX_CPU_ISA -u DNNL_MAX_CPU_ISA -u MAGIX_GEMM_BF16_ENGINE";
  env += " OMP_NUM_THREADS=" + std::to_string(threads);
  const size_t colon = engine.find(':');
  if (colon != std::string::npos) {
    std::string isa = engine.substr(colon + 1);
    if (isa == "fp32") {
      env += " MAGIX_GEMM_BF16_ENGINE=fp32";
    } else {
      std::transform(isa.begin(), isa.end(), isa.begin(), ::toupper);
      env += " ONEDNN_MAX_CPU_ISA=" + isa;
    }
  }
  const std::string command = env + " '" + self_exe() + "' --child " + engine + " --reps " +
                              std::to_string(reps) + " --shapes " + shapes;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) die("popen failed");
  char line[512];
  while (std::fgets(line, sizeof(line), pipe)) {
    char kind[8], label[64];
    double value = 0;
    const std::string text(line, std::strcspn(line, "\n"));
    if (text.rfind("name ", 0) == 0) {
      names[engine] = text.substr(5);
    } else if (text.rfind("absent ", 0) == 0) {
      names[engine] = "absent: " + text.substr(7);
    } else if (std::sscanf(line, "result %7s %63s %lf", kind, label, &value) == 3) {
      results[std::string(kind) + " " + engine][label].push_back(value);
    }
  }
  if (pclose(pipe) != 0)
    std::fprintf(stderr, "bench_gemm_bf16: engine %s failed\n", engine.c_str());
}

double figure(Results& results, const std::string& kind, const std::string& engine,
              const std::string& label) {
  auto& values = results[kind + " " + engine][label];
  return values.empty() ? 0.0 : median(values);
}

// A row per shape, a column per engine, then magix / fp32 and magix / fastest bf16 candidate
// (candidates: the uncapped engines other than magix and fp32).
nlohmann::json print_table(const char* title, const std::string& kind,
                           const std::vector<std::string>& engines, const std::string& shapes,
                           Results& results) {
  nlohmann::json out = nlohmann::json::object();
  std::printf("\n%s\n%-14s", title, "shape");
  for (const std::string& e : engines) std::printf(" %12.12s", e.c_str());
  std::printf(" %12s %12s\n", "magix/fp32", "magix/best");
  for (const Shape& s : kShapes) {
    if (!wanted(s, shapes)) continue;
    std::printf("%-14s", s.name);
    double best = 0.0;
    for (const std::string& e : engines) {
      const double v = figure(results, kind, e, s.name);
      if (v > 0) out[e][s.name] = v;
      const bool candidate = e != "fp32" && e.rfind("magix", 0) != 0 && e.find(':') == e.npos;
      if (candidate) best = std::max(best, v);
      v > 0 ? std::printf(" %12.1f", v) : std::printf(" %12s", "n/a");
    }
    const double magix = figure(results, kind, "magix", s.name);
    const double fp32 = figure(results, kind, "fp32", s.name);
    const double r_fp32 = fp32 > 0 ? magix / fp32 : 0.0, r_best = best > 0 ? magix / best : 0.0;
    std::printf(" %12.2f %12.3f\n", r_fp32, r_best);
    out["magix/fp32"][s.name] = r_fp32;
    out["magix/best"][s.name] = r_best;
  }
  return out;
}

int run_driver(int threads, int rounds, int reps, std::vector<std::string> engines,
               const std::string& shapes) {
  Results results;
  std::map<std::string, std::string> names;
  for (int round = 0; round < rounds; round++) {
    for (const std::string& engine : engines) {
      run_child_process(engine, threads, reps, shapes, results, names);
    }
    run_child_process("convert", threads, reps, shapes, results, names);
  }
  const std::string load = load_average();
  std::printf(
      "bf16 GEMM vs fp32, %d threads, median of %d rounds x %d reps; load average at the "
      "end: %s\n\nengines:\n",
      threads, rounds, reps, load.c_str());
  for (const std::string& e : engines) std::printf("  %-26s %s\n", e.c_str(), names[e].c_str());
  nlohmann::json json = {{"bench", "gemm_bf16"}, {"threads", threads}, {"rounds", rounds},
                         {"reps", reps},         {"loadavg", load},    {"engines", names}};
  if (!engines.empty()) {
    json["gflops_wall"] = print_table("GFLOP/s (wall time)", "wall", engines, shapes, results);
    json["gflops_per_cpu_second"] =
        print_table("GFLOP per CPU-second of the process", "cpu", engines, shapes, results);
  }
  std::printf("\n%s: GB/s (bytes read + written)\n%-20s", names["convert"].c_str(), "op");
  for (const int64_t n : kConvertSizes) {
    std::printf(" %13s %13s", ("wall@" + std::to_string(n)).c_str(),
                ("cpu@" + std::to_string(n)).c_str());
  }
  std::printf("\n");
  for (const char* op : kConvertOps) {
    std::printf("%-20s", op);
    for (const int64_t n : kConvertSizes) {
      const std::string label = std::string(op) + "@" + std::to_string(n);
      const double wall = figure(results, "wall", "convert", label);
      const double cpu = figure(results, "cpu", "convert", label);
      std::printf(" %13.1f %13.1f", wall, cpu);
      json["convert_gbs"][label] = {{"wall", wall}, {"per_cpu_second", cpu}};
    }
    std::printf("\n");
  }
  std::printf("%s\n", json.dump().c_str());
  return 0;
}

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = list.find(',', start);
    const size_t end = comma == std::string::npos ? list.size() : comma;
    if (end > start) out.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, rounds = 3, reps = 3;
  std::string child, shapes = "all";
  std::vector<std::string> engines = kEngines;
  for (int i = 1; i < argc; i++) {
    const std::string arg = argv[i];
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
    } else if (arg == "--engines") {
      const std::string list = value();
      engines = list == "none" ? std::vector<std::string>{} : split(list);
    } else if (arg == "--shapes") {
      shapes = value();
    } else if (arg == "--child") {
      child = value();
    } else {
      die("unknown argument " + arg + " (see the comment at the top of bench/gemm_bf16.cpp)");
    }
  }
  if (threads < 1 || rounds < 1 || reps < 1) die("--threads, --rounds and --reps must be >= 1");
  if (shapes != "all" && shapes != "square" && shapes != "decoder" && shapes != "lora")
    die("--shapes: all|square|decoder|lora");
  if (child == "convert") return run_convert_child(reps);
  if (!child.empty()) return run_gemm_child(child, reps, shapes);
  return run_driver(threads, rounds, reps, engines, shapes);
}
