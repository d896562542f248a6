// Forward + backward throughput and peak memory of the decoder on a ~110M-parameter Llama
// (hidden 768, 12 layers, 12 heads, intermediate 2048, vocab 32000, tied embeddings unless
// --untied; batch 4 x seq 512; random init), in fp32 and in bf16 mixed precision
// (DecoderOptions::compute_dtype, the CLI's --bf16), with stored activations and with recompute.
// Each run is its own child process so that its peak RSS (getrusage) is its own. The
// references in the same run are the GEMM engines alone on a (2048 x 768) x (768 x 2048)
// product, fp32 and bf16: the step's achieved GFLOP/s as a fraction of them. --bf16_model_weights
// stores the weights in bf16 too. The last line is one JSON object with every figure.
//
//   OMP_NUM_THREADS=2 build/bin/bench_decoder [steps] [--untied] [--bf16_model_weights]
//       [--compute f32,bf16] [--no_recompute]
#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "backends/cpu/gemm.hpp"
#include "backends/cpu/gemm_bf16.hpp"
#include "magix/model.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// GFLOP/s of (2048 x 768) x (768 x 2048), fp32 or bf16 inputs (best of 3 rounds of 10).
double gemm_gflops(bool bf16) {
  const int64_t M = 2048, N = 2048, K = 768;
  std::vector<float> a(M * K, 0.01f), b(K * N, 0.02f), c(M * N);
  std::vector<uint16_t> a16(M * K, 0x3c23), b16(K * N, 0x3ca3);
  auto run = [&] {
    if (bf16) {
      magix::cpu::gemm_bf16(false, false, M, N, K, 1.0f, a16.data(), K, b16.data(), N, 0.0f,
                            c.data(), N);
    } else {
      magix::cpu::gemm(false, false, M, N, K, 1.0f, a.data(), K, b.data(), N, 0.0f, c.data(), N);
    }
  };
  run();
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    const int reps = 10;
    auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i) run();
    best = std::max(best, 2.0 * M * N * K * reps / seconds_since(t0) / 1e9);
  }
  return best;
}

struct Mode {
  magix::DType compute = magix::DType::kF32;
  magix::DType weights = magix::DType::kF32;
  bool recompute = false;
  bool tied = true;
};

nlohmann::json run_mode(const Mode& m, int steps) {
  nlohmann::json j{{"model_type", "llama"},     {"vocab_size", 32000},
                   {"hidden_size", 768},        {"intermediate_size", 2048},
                   {"num_hidden_layers", 12},   {"num_attention_heads", 12},
                   {"num_key_value_heads", 12}, {"max_position_embeddings", 2048},
                   {"rms_norm_eps", 1e-5},      {"tie_word_embeddings", m.tied}};
  magix::ModelConfig config = magix::parse_model_config(j, "bench");
  magix::Mesh mesh;
  std::vector<magix::ParamInfo> infos = magix::expected_parameters(config);
  magix::shard_parameters(infos, mesh);
  magix::ParameterSet params = magix::init_parameters(config, infos, 1, m.weights);
  int64_t n_params = 0;
  for (size_t i = 0; i < params.size(); ++i) n_params += params.tensor(i).numel();
  const double param_mib = static_cast<double>(params.nbytes()) / 1048576.0;
  magix::Decoder model(
      config, mesh, std::move(params),
      {.recompute = m.recompute, .weight_dtype = m.weights, .compute_dtype = m.compute});
  magix::ParameterSet grads = model.params().zeros_like();

  const int64_t B = 4, T = 512;
  const magix::TokenBatch batch = magix::random_causal_batch(32000, B, T, 12345, 0, 1);
  const double count = static_cast<double>(batch.count_targets());
  model.loss_and_grad(batch, count, grads);  // warm-up
  std::vector<double> times;
  double loss = 0;
  for (int s = 0; s < steps; ++s) {
    auto t0 = Clock::now();
    loss = model.loss_and_grad(batch, count, grads).loss;
    times.push_back(seconds_since(t0));
  }
  std::sort(times.begin(), times.end());
  const double dt = times[times.size() / 2];  // median
  const double tokens = static_cast<double>(B * T);
  // Matmul FLOPs of forward + backward: 6 per parameter per token (the tied table counted once,
  // as the LM head; the embedding lookup is no matmul), plus attention (causal: half of
  // 4 * T * C per token forward, x3 with backward).
  const double flops = 6.0 * n_params * tokens + 3.0 * 2.0 * tokens * T * 768 * 12;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return {{"compute", magix::dtype_name(m.compute)},
          {"weights", magix::dtype_name(m.weights)},
          {"recompute", m.recompute},
          {"tokens_per_s", tokens / dt},
          {"s_per_step", dt},
          {"step_times_s", times},
          {"gflops", flops / dt / 1e9},
          {"peak_rss_gib", ru.ru_maxrss / 1048576.0},
          {"weights_mib", param_mib},
          {"loss", loss},
          {"params", n_params}};
}

// Runs a mode in a child process (its own peak RSS); its JSON comes back through a pipe.
nlohmann::json run_child(const Mode& m, int steps) {
  int fd[2];
  if (pipe(fd) != 0) std::abort();
  const pid_t pid = fork();
  if (pid == 0) {
    close(fd[0]);
    const std::string out = run_mode(m, steps).dump();
    if (write(fd[1], out.data(), out.size()) != static_cast<ssize_t>(out.size())) _exit(2);
    close(fd[1]);
    _exit(0);
  }
  close(fd[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(fd[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || text.empty()) return nullptr;
  return nlohmann::json::parse(text);
}

std::string loadavg() {
  std::string load;
  std::getline(std::ifstream("/proc/loadavg"), load);
  return load;
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 2;
  bool tied = true, recompute_too = true;
  magix::DType weights = magix::DType::kF32;
  std::vector<magix::DType> computes = {magix::DType::kF32, magix::DType::kBF16};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--bf16_model_weights") == 0) {
      weights = magix::DType::kBF16;
    } else if (std::strcmp(argv[i], "--untied") == 0) {
      tied = false;
    } else if (std::strcmp(argv[i], "--no_recompute") == 0) {
      recompute_too = false;
    } else if (std::strcmp(argv[i], "--compute") == 0 && i + 1 < argc) {
      computes.clear();
      std::stringstream list(argv[++i]);
      for (std::string c; std::getline(list, c, ',');) {
        computes.push_back(c == "bf16" ? magix::DType::kBF16 : magix::DType::kF32);
      }
    } else {
      steps = std::max(1, std::atoi(argv[i]));
    }
  }
  const char* threads = std::getenv("OMP_NUM_THREADS");
  fmt::print(
      "decoder bench: Llama hidden 768, 12 layers, 12 heads, vocab 32000 ({}), B=4, T=512, "
      "OMP_NUM_THREADS={}\n  fp32 GEMM: {}\n  bf16 GEMM: {}\n  load average at start: {}\n",
      tied ? "tied" : "untied", threads ? threads : "(unset)", magix::cpu::gemm_backend_name(),
      magix::cpu::gemm_bf16_engine_name(), loadavg());
  std::fflush(stdout);
  nlohmann::json runs = nlohmann::json::array();
  for (bool recompute : {false, true}) {
    if (recompute && !recompute_too) continue;
    for (magix::DType compute : computes) {
      const Mode m{compute, weights, recompute, tied};
      nlohmann::json r = run_child(m, steps);
      if (r.is_null()) {
        fmt::print(stderr, "mode compute {} recompute {} failed\n", magix::dtype_name(compute),
                   recompute);
        return 1;
      }
      fmt::print(
          "compute {:<4} weights {:<4} {:<19} {:8.1f} tokens/s  {:6.2f} s/step  {:6.1f} GFLOP/s  "
          "peak RSS {:5.2f} GiB  loss {:.4f}\n",
          r["compute"].get<std::string>(), r["weights"].get<std::string>(),
          recompute ? "recompute" : "stored activations", r["tokens_per_s"].get<double>(),
          r["s_per_step"].get<double>(), r["gflops"].get<double>(), r["peak_rss_gib"].get<double>(),
          r["loss"].get<double>());
      std::fflush(stdout);
      runs.push_back(r);
    }
  }
  const double f32_peak = gemm_gflops(false), bf16_peak = gemm_gflops(true);
  fmt::print(
      "reference: GEMM alone (2048x768 . 768x2048) fp32 {:.1f} GFLOP/s, bf16 {:.1f} GFLOP/s\n",
      f32_peak, bf16_peak);
  nlohmann::json out{{"bench", "decoder"},
                     {"threads", threads ? threads : ""},
                     {"tied", tied},
                     {"gemm_f32_gflops", f32_peak},
                     {"gemm_bf16_gflops", bf16_peak},
                     {"gemm_bf16_engine", magix::cpu::gemm_bf16_engine_name()},
                     {"load_average_end", loadavg()},
                     {"runs", runs}};
  // Per run: the fraction of its compute dtype's GEMM peak; bf16 over fp32 where both ran.
  for (auto& r : out["runs"]) {
    const double peak = r["compute"] == "BF16" ? bf16_peak : f32_peak;
    r["fraction_of_gemm_peak"] = r["gflops"].get<double>() / peak;
    for (const auto& f : out["runs"]) {
      if (r["compute"] == "BF16" && f["compute"] == "F32" && f["recompute"] == r["recompute"]) {
        r["speedup_over_f32"] = r["tokens_per_s"].get<double>() / f["tokens_per_s"].get<double>();
      }
    }
  }
  fmt::print("{}\n", out.dump());
  return 0;
}
