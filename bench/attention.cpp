// Attention throughput on the CPU: the fp32 attention_forward / attention_backward, the bf16
// kernel on the same inputs rounded to bf16, and a naive fp32 implementation (full (T, T) score
// matrix per head, plain loops, the same OpenMP split), all timed in the same run; fp32 and bf16
// alternate within each repetition so that both see the same load. Prints tokens/s (B*T per
// wall second), GFLOP/s per CPU-second (the visible pairs' share of 4*T*T*D forward and
// 10*T*T*D backward flops per head; CPU time is robust on a shared machine), the naive/fp32
// CPU-time ratio and the largest fp32-naive difference; then fp32/bf16 ratios of CPU and wall
// time and the bf16-fp32 differences relative to the largest fp32 value. The last line is one
// JSON object with every figure and the load average at start and end.
//
//   bench_attention [--reps 5] [--no_naive] [--cases mha,gqa]   (case keys: the "key" column)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/attention.hpp"
#include "backends/cpu/convert.hpp"
#include "backends/cpu/gemm.hpp"
#include "backends/cpu/gemm_bf16.hpp"

namespace {

using magix::cpu::AttentionMask;

struct Config {
  const char* key;
  const char* name;
  int64_t B, T, Hq, Hkv, D, window;
};

const Config kConfigs[] = {
    {"mha", "MHA  H=12 D=64", 4, 512, 12, 12, 64, 0},
    {"gqa", "GQA  Hq=12 Hkv=4 D=64", 4, 512, 12, 4, 64, 0},
    {"mha128", "MHA  H=6 D=128", 4, 512, 6, 6, 128, 0},
    {"gqa128", "GQA  Hq=8 Hkv=2 D=128", 4, 512, 8, 2, 128, 0},
    {"window", "MHA  H=12 D=64 window=128", 4, 512, 12, 12, 64, 128},
    {"mqa", "MQA  B=1 Hq=12 Hkv=1 D=64", 1, 512, 12, 1, 64, 0},
};

// The visible-pair count of a causal (optionally windowed) T x T mask.
double visible_pairs(int64_t T, int64_t window) {
  double n = 0;
  for (int64_t i = 0; i < T; ++i) n += window > 0 ? std::min(i + 1, window) : i + 1;
  return n;
}

// Naive forward: per (b, h) the full (T, T) probability matrix.
void naive_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                   const Config& c, float scale) {
  const int64_t T = c.T, D = c.D, group = c.Hq / c.Hkv;
#pragma omp parallel
  {
    std::vector<float> p(T * T);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < c.B * c.Hq; ++bh) {
      const int64_t b = bh / c.Hq, h = bh % c.Hq, g = h / group;
      for (int64_t i = 0; i < T; ++i) {
        const float* qi = q + ((b * T + i) * c.Hq + h) * D;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < T; ++j) {
          const bool vis = j <= i && (c.window <= 0 || i - j < c.window);
          float s = -std::numeric_limits<float>::infinity();
          if (vis) {
            const float* kj = k + ((b * T + j) * c.Hkv + g) * D;
            s = 0.0f;
            for (int64_t d = 0; d < D; ++d) s += qi[d] * kj[d];
            s *= scale;
          }
          p[i * T + j] = s;
          m = std::max(m, s);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < T; ++j) sum += p[i * T + j] = std::exp(p[i * T + j] - m);
        float* oi = out + ((b * T + i) * c.Hq + h) * D;
        std::fill(oi, oi + D, 0.0f);
        for (int64_t j = 0; j < T; ++j) {
          const float pj = p[i * T + j] / sum;
          const float* vj = v + ((b * T + j) * c.Hkv + g) * D;
          for (int64_t d = 0; d < D; ++d) oi[d] += pj * vj[d];
        }
        lse[(b * c.Hq + h) * T + i] = m + std::log(sum);
      }
    }
  }
}

// Naive backward: per (b, kv head), each query head of the group with full (T, T) P and dS.
void naive_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                    const float* lse, const float* q, const float* k, const float* v,
                    const Config& c, float scale) {
  const int64_t T = c.T, D = c.D, group = c.Hq / c.Hkv;
#pragma omp parallel
  {
    std::vector<float> p(T * T), ds(T * T);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bg = 0; bg < c.B * c.Hkv; ++bg) {
      const int64_t b = bg / c.Hkv, g = bg % c.Hkv;
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        auto qrow = [&](auto* x, int64_t i) { return x + ((b * T + i) * c.Hq + h) * D; };
        auto krow = [&](auto* x, int64_t j) { return x + ((b * T + j) * c.Hkv + g) * D; };
        for (int64_t i = 0; i < T; ++i) {
          float di = 0.0f;
          for (int64_t d = 0; d < D; ++d) di += qrow(dout, i)[d] * qrow(out, i)[d];
          for (int64_t j = 0; j < T; ++j) {
            const bool vis = j <= i && (c.window <= 0 || i - j < c.window);
            float s = 0.0f, dp = 0.0f;
            if (vis) {
              for (int64_t d = 0; d < D; ++d) s += qrow(q, i)[d] * krow(k, j)[d];
              for (int64_t d = 0; d < D; ++d) dp += qrow(dout, i)[d] * krow(v, j)[d];
              s = std::exp(s * scale - lse[(b * c.Hq + h) * T + i]);
            }
            p[i * T + j] = s;
            ds[i * T + j] = s * (dp - di);
          }
        }
        for (int64_t i = 0; i < T; ++i)
          for (int64_t j = 0; j < T; ++j)
            for (int64_t d = 0; d < D; ++d) {
              krow(dv, j)[d] += p[i * T + j] * qrow(dout, i)[d];
              krow(dk, j)[d] += scale * ds[i * T + j] * qrow(q, i)[d];
              qrow(dq, i)[d] += scale * ds[i * T + j] * krow(k, j)[d];
            }
      }
    }
  }
}

double cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Wall and process-CPU seconds of calls of f, one sample per call.
struct Samples {
  std::vector<double> wall, cpu;
  template <class F>
  void add(F&& f) {
    const double c0 = cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    wall.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    cpu.push_back(cpu_seconds() - c0);
  }
};

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x[x.size() / 2];
}

// Median wall and process-CPU seconds of one call.
struct Timing {
  double wall, cpu;
};

Timing median_of(const Samples& s) {
  return {median(s.wall), median(s.cpu)};
}

template <class F>
Timing median_time(int reps, F&& f) {
  Samples s;
  for (int r = 0; r < reps; ++r) s.add(f);
  return median_of(s);
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::abs(a[i] - b[i])));
  return m;
}

double max_abs(const std::vector<float>& a) {
  double m = 0;
  for (float x : a) m = std::max(m, double(std::abs(x)));
  return m;
}

std::vector<uint16_t> to_bf16(const std::vector<float>& x) {
  std::vector<uint16_t> y(x.size());
  magix::cpu::f32_to_bf16(x.data(), y.data(), int64_t(x.size()));
  return y;
}

std::vector<float> to_f32(const std::vector<uint16_t>& x) {
  std::vector<float> y(x.size());
  magix::cpu::bf16_to_f32(x.data(), y.data(), int64_t(x.size()));
  return y;
}

// Whether key is one of the comma-separated names in list.
bool listed(const std::string& list, const char* key) {
  size_t start = 0;
  while (start <= list.size()) {
    const size_t end = std::min(list.find(',', start), list.size());
    if (list.compare(start, end - start, key) == 0) return true;
    start = end + 1;
  }
  return false;
}

std::string loadavg() {
  std::string load;
  std::getline(std::ifstream("/proc/loadavg"), load);
  return load;
}

nlohmann::json timing_json(const Timing& f, const Timing& b, double fwd_flop, double bwd_flop) {
  return {{"fwd_cpu_ms", f.cpu * 1e3},
          {"fwd_wall_ms", f.wall * 1e3},
          {"bwd_cpu_ms", b.cpu * 1e3},
          {"bwd_wall_ms", b.wall * 1e3},
          {"fwd_gflop_per_cpu_s", fwd_flop / f.cpu * 1e-9},
          {"bwd_gflop_per_cpu_s", bwd_flop / b.cpu * 1e-9}};
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 5;
  bool naive = true;
  std::string cases;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--no_naive") == 0) {
      naive = false;
    } else if (std::strcmp(argv[i], "--cases") == 0 && i + 1 < argc) {
      cases = argv[++i];
    } else {
      std::fprintf(stderr, "usage: bench_attention [--reps N] [--no_naive] [--cases k1,k2]\n");
      return 2;
    }
  }
  const std::string load_start = loadavg();
  std::printf("threads %d, reps %d (median), BLAS %s, bf16 GEMM %s\nload average at start: %s\n",
              omp_get_max_threads(), reps, magix::cpu::gemm_backend_name().c_str(),
              magix::cpu::gemm_bf16_engine_name().c_str(), load_start.c_str());
  std::printf(
      "tok/s = B*T / wall time; GFLOP/s per CPU-second (visible pairs only); naive x = CPU time "
      "of the naive implementation / CPU time of the fp32 attention_*\n");
  std::printf("%-7s %-26s %-4s %10s %8s %7s %10s %8s %7s %8s %8s %9s\n", "key",
              "case (B=4 T=512 unless said)", "type", "fwd tok/s", "GF/cpu-s", "cpu ms",
              "bwd tok/s", "GF/cpu-s", "cpu ms", "naive x", "naive x", "max|diff|");
  nlohmann::json results = nlohmann::json::array();
  struct Ratios {
    std::string key, name;
    double fwd_cpu, bwd_cpu, fwd_wall, bwd_wall, rel_out, rel_dq, rel_dk, rel_dv;
  };
  std::vector<Ratios> ratios;
  for (const Config& c : kConfigs) {
    if (!cases.empty() && !listed(cases, c.key)) continue;
    std::mt19937 gen(42);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> q(c.B * c.T * c.Hq * c.D), k(c.B * c.T * c.Hkv * c.D), v(k.size());
    std::vector<float> dout(q.size());
    for (auto* x : {&q, &k, &v, &dout})
      for (auto& e : *x) e = u(gen);
    const float scale = 1.0f / std::sqrt(float(c.D));
    AttentionMask mask;
    mask.sliding_window = c.window;
    std::vector<float> out(q.size()), lse(c.B * c.Hq * c.T), out_n(q.size()), lse_n(lse.size());
    std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
    std::vector<float> dq_n(q.size()), dk_n(k.size()), dv_n(v.size());
    // bf16: the same inputs rounded; gradients fp32.
    const std::vector<uint16_t> q16 = to_bf16(q), k16 = to_bf16(k), v16 = to_bf16(v),
                                dout16 = to_bf16(dout);
    std::vector<uint16_t> out16(q.size());
    std::vector<float> lse16(lse.size()), dq16(q.size()), dk16(k.size()), dv16(v.size());

    auto fwd = [&] {
      magix::cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), c.B, c.T,
                                    c.Hq, c.Hkv, c.D, scale, mask);
    };
    auto bwd = [&] {
      magix::cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(),
                                     lse.data(), q.data(), k.data(), v.data(), c.B, c.T, c.Hq,
                                     c.Hkv, c.D, scale, mask);
    };
    auto fwd16 = [&] {
      magix::cpu::attention_forward(out16.data(), lse16.data(), q16.data(), k16.data(), v16.data(),
                                    c.B, c.T, c.Hq, c.Hkv, c.D, scale, mask);
    };
    auto bwd16 = [&] {
      magix::cpu::attention_backward(dq16.data(), dk16.data(), dv16.data(), dout16.data(),
                                     out16.data(), lse16.data(), q16.data(), k16.data(), v16.data(),
                                     c.B, c.T, c.Hq, c.Hkv, c.D, scale, mask);
    };
    auto fwd_n = [&] {
      naive_forward(out_n.data(), lse_n.data(), q.data(), k.data(), v.data(), c, scale);
    };
    auto bwd_n = [&] {
      naive_backward(dq_n.data(), dk_n.data(), dv_n.data(), dout.data(), out.data(), lse.data(),
                     q.data(), k.data(), v.data(), c, scale);
    };
    fwd();  // warm-up (and the bf16 GEMM primitives of every block shape)
    fwd16();
    bwd();
    bwd16();
    Samples sf, sb, sf16, sb16;
    for (int r = 0; r < reps; ++r) {  // alternating, so that fp32 and bf16 share the load
      sf.add(fwd);
      sf16.add(fwd16);
      sb.add(bwd);
      sb16.add(bwd16);
    }
    const Timing tf = median_of(sf), tb = median_of(sb), tf16 = median_of(sf16),
                 tb16 = median_of(sb16);
    Timing tfn{0, 0}, tbn{0, 0};
    if (naive) {
      tfn = median_time(1, fwd_n);
      tbn = median_time(1, bwd_n);
    }
    // One clean backward each for the comparisons.
    for (auto* x : {&dq, &dk, &dv, &dq_n, &dk_n, &dv_n, &dq16, &dk16, &dv16}) {
      std::fill(x->begin(), x->end(), 0.0f);
    }
    bwd();
    bwd16();
    double diff = 0;
    if (naive) {
      bwd_n();
      diff = std::max(
          {max_diff(out, out_n), max_diff(dq, dq_n), max_diff(dk, dk_n), max_diff(dv, dv_n)});
    }
    const std::vector<float> out16f = to_f32(out16);
    const double rel_out = max_diff(out16f, out) / max_abs(out);
    const double rel_dq = max_diff(dq16, dq) / max_abs(dq);
    const double rel_dk = max_diff(dk16, dk) / max_abs(dk);
    const double rel_dv = max_diff(dv16, dv) / max_abs(dv);

    const double pairs = c.B * c.Hq * visible_pairs(c.T, c.window);
    const double tokens = double(c.B * c.T);
    const double fwd_flop = 4 * pairs * c.D, bwd_flop = 10 * pairs * c.D;
    std::printf("%-7s %-26s %-4s %10.0f %8.1f %7.1f %10.0f %8.1f %7.1f %8.1f %8.1f %9.2g\n", c.key,
                c.name, "fp32", tokens / tf.wall, fwd_flop / tf.cpu * 1e-9, tf.cpu * 1e3,
                tokens / tb.wall, bwd_flop / tb.cpu * 1e-9, tb.cpu * 1e3,
                naive ? tfn.cpu / tf.cpu : 0.0, naive ? tbn.cpu / tb.cpu : 0.0, diff);
    std::printf("%-7s %-26s %-4s %10.0f %8.1f %7.1f %10.0f %8.1f %7.1f\n", c.key, c.name, "bf16",
                tokens / tf16.wall, fwd_flop / tf16.cpu * 1e-9, tf16.cpu * 1e3, tokens / tb16.wall,
                bwd_flop / tb16.cpu * 1e-9, tb16.cpu * 1e3);
    std::fflush(stdout);
    const Ratios r{c.key,
                   c.name,
                   tf.cpu / tf16.cpu,
                   tb.cpu / tb16.cpu,
                   tf.wall / tf16.wall,
                   tb.wall / tb16.wall,
                   rel_out,
                   rel_dq,
                   rel_dk,
                   rel_dv};
    ratios.push_back(r);
    nlohmann::json j{{"key", c.key},
                     {"name", c.name},
                     {"B", c.B},
                     {"T", c.T},
                     {"Hq", c.Hq},
                     {"Hkv", c.Hkv},
                     {"D", c.D},
                     {"window", c.window},
                     {"fp32", timing_json(tf, tb, fwd_flop, bwd_flop)},
                     {"bf16", timing_json(tf16, tb16, fwd_flop, bwd_flop)},
                     {"fp32_over_bf16",
                      {{"fwd_cpu", r.fwd_cpu},
                       {"bwd_cpu", r.bwd_cpu},
                       {"fwd_wall", r.fwd_wall},
                       {"bwd_wall", r.bwd_wall}}},
                     {"bf16_vs_fp32_max_rel_diff",
                      {{"out", rel_out}, {"dq", rel_dq}, {"dk", rel_dk}, {"dv", rel_dv}}}};
    if (naive) {
      j["naive"] = timing_json(tfn, tbn, fwd_flop, bwd_flop);
      j["naive_over_fp32_cpu"] = {{"fwd", tfn.cpu / tf.cpu}, {"bwd", tbn.cpu / tb.cpu}};
      j["fp32_vs_naive_max_abs_diff"] = diff;
    }
    results.push_back(j);
  }
  std::printf(
      "\nfp32 / bf16 (> 1: bf16 faster), and max |bf16 - fp32| / max |fp32| per output\n"
      "%-7s %-26s %8s %8s %8s %8s %9s %9s %9s %9s\n",
      "key", "case", "fwd cpu", "bwd cpu", "fwd wall", "bwd wall", "out", "dq", "dk", "dv");
  for (const Ratios& r : ratios) {
    std::printf("%-7s %-26s %8.2f %8.2f %8.2f %8.2f %9.2g %9.2g %9.2g %9.2g\n", r.key.c_str(),
                r.name.c_str(), r.fwd_cpu, r.bwd_cpu, r.fwd_wall, r.bwd_wall, r.rel_out, r.rel_dq,
                r.rel_dk, r.rel_dv);
  }
  const std::string load_end = loadavg();
  std::printf("load average at end: %s\n", load_end.c_str());
  const char* threads = std::getenv("OMP_NUM_THREADS");
  const nlohmann::json summary{{"bench", "attention"},
                               {"threads", omp_get_max_threads()},
                               {"OMP_NUM_THREADS", threads ? threads : ""},
                               {"reps", reps},
                               {"blas", magix::cpu::gemm_backend_name()},
                               {"bf16_gemm", magix::cpu::gemm_bf16_engine_name()},
                               {"load_average_start", load_start},
                               {"load_average_end", load_end},
                               {"cases", results}};
  std::printf("%s\n", summary.dump().c_str());
  return 0;
}
