// Attention throughput on the CPU: attention_forward / attention_backward against a naive
// implementation (full (T, T) score matrix per head, plain loops, the same OpenMP split) timed
// in the same run, fp32. Prints tokens/s (B*T per wall second), GFLOP/s per CPU-second (the
// visible pairs' share of 4*T*T*D forward and 10*T*T*D backward flops per head; CPU time is
// robust on a shared machine), the naive/attention CPU-time ratio and the largest difference
// between the two implementations.
//
//   bench_attention [--reps 5]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/attention.hpp"
#include "backends/cpu/gemm.hpp"

namespace {

using magix::cpu::AttentionMask;

struct Config {
  const char* name;
  int64_t B, T, Hq, Hkv, D, window;
};

const Config kConfigs[] = {
    {"MHA  H=12 D=64", 4, 512, 12, 12, 64, 0},
    {"GQA  Hq=12 Hkv=4 D=64", 4, 512, 12, 4, 64, 0},
    {"MHA  H=6 D=128", 4, 512, 6, 6, 128, 0},
    {"GQA  Hq=8 Hkv=2 D=128", 4, 512, 8, 2, 128, 0},
    {"MHA  H=12 D=64 window=128", 4, 512, 12, 12, 64, 128},
    {"MQA  B=1 Hq=12 Hkv=1 D=64", 1, 512, 12, 1, 64, 0},
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

// Median wall and process-CPU seconds of one call of f.
struct Timing {
  double wall, cpu;
};

template <class F>
Timing median_time(int reps, F&& f) {
  std::vector<double> wall, cpu;
  for (int r = 0; r < reps; ++r) {
    const double c0 = cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    wall.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    cpu.push_back(cpu_seconds() - c0);
  }
  std::sort(wall.begin(), wall.end());
  std::sort(cpu.begin(), cpu.end());
  return {wall[wall.size() / 2], cpu[cpu.size() / 2]};
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::abs(a[i] - b[i])));
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 5;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::strcmp(argv[i], "--reps") == 0) reps = std::max(1, std::atoi(argv[i + 1]));
  std::printf("threads %d, reps %d (median), BLAS %s\n", omp_get_max_threads(), reps,
              magix::cpu::gemm_backend_name().c_str());
  std::printf(
      "tok/s = B*T / wall time; GFLOP/s per CPU-second (visible pairs only); naive x = CPU time "
      "of the naive implementation / CPU time of attention_*\n");
  std::printf("%-30s %10s %8s %7s %10s %8s %7s %8s %8s %9s\n", "case (B=4 T=512 unless said)",
              "fwd tok/s", "GF/cpu-s", "cpu ms", "bwd tok/s", "GF/cpu-s", "cpu ms", "naive x",
              "naive x", "max|diff|");
  for (const Config& c : kConfigs) {
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

    auto fwd = [&] {
      magix::cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), c.B, c.T,
                                    c.Hq, c.Hkv, c.D, scale, mask);
    };
    auto bwd = [&] {
      magix::cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(),
                                     lse.data(), q.data(), k.data(), v.data(), c.B, c.T, c.Hq,
                                     c.Hkv, c.D, scale, mask);
    };
    auto fwd_n = [&] {
      naive_forward(out_n.data(), lse_n.data(), q.data(), k.data(), v.data(), c, scale);
    };
    auto bwd_n = [&] {
      naive_backward(dq_n.data(), dk_n.data(), dv_n.data(), dout.data(), out.data(), lse.data(),
                     q.data(), k.data(), v.data(), c, scale);
    };
    fwd();  // warm-up
    const Timing tf = median_time(reps, fwd);
    const Timing tb = median_time(reps, bwd);
    const Timing tfn = median_time(1, fwd_n);
    const Timing tbn = median_time(1, bwd_n);
    // One clean backward each for the comparison.
    for (auto* x : {&dq, &dk, &dv, &dq_n, &dk_n, &dv_n}) std::fill(x->begin(), x->end(), 0.0f);
    bwd();
    bwd_n();
    const double diff = std::max(
        {max_diff(out, out_n), max_diff(dq, dq_n), max_diff(dk, dk_n), max_diff(dv, dv_n)});
    const double pairs = c.B * c.Hq * visible_pairs(c.T, c.window);
    const double tokens = double(c.B * c.T);
    std::printf("%-30s %10.0f %8.1f %7.1f %10.0f %8.1f %7.1f %8.1f %8.1f %9.2g\n", c.name,
                tokens / tf.wall, 4 * pairs * c.D / tf.cpu * 1e-9, tf.cpu * 1e3, tokens / tb.wall,
                10 * pairs * c.D / tb.cpu * 1e-9, tb.cpu * 1e3, tfn.cpu / tf.cpu, tbn.cpu / tb.cpu,
                diff);
  }
  return 0;
}
