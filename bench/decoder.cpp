// Forward + backward throughput and peak memory of the decoder on a ~110M-parameter Llama
// (hidden 768, 12 layers, 12 heads, intermediate 2048, vocab 32000, tied embeddings; batch 4 x
// seq 512; random init), with stored activations and with recompute. Each mode runs in its own
// child process so that its peak RSS (getrusage) is its own. The reference in the same run is
// the GEMM engine alone on a (2048 x 768) x (768 x 2048) product. --bf16 stores the weights in
// bf16 (DecoderOptions::weight_dtype; each layer widened to fp32 just before use).
//
//   OMP_NUM_THREADS=2 build/bin/bench_decoder [steps] [--bf16]
#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backends/cpu/gemm.hpp"
#include "magix/model.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double gemm_gflops() {
  const int64_t M = 2048, N = 2048, K = 768;
  std::vector<float> a(M * K, 0.01f), b(K * N, 0.02f), c(M * N);
  magix::cpu::gemm(false, false, M, N, K, 1.0f, a.data(), K, b.data(), N, 0.0f, c.data(), N);
  const int reps = 10;
  auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) {
    magix::cpu::gemm(false, false, M, N, K, 1.0f, a.data(), K, b.data(), N, 0.0f, c.data(), N);
  }
  return 2.0 * M * N * K * reps / seconds_since(t0) / 1e9;
}

int run_mode(bool recompute, int steps, magix::DType weight_dtype) {
  nlohmann::json j{{"model_type", "llama"},     {"vocab_size", 32000},
                   {"hidden_size", 768},        {"intermediate_size", 2048},
                   {"num_hidden_layers", 12},   {"num_attention_heads", 12},
                   {"num_key_value_heads", 12}, {"max_position_embeddings", 2048},
                   {"rms_norm_eps", 1e-5},      {"tie_word_embeddings", true}};
  magix::ModelConfig config = magix::parse_model_config(j, "bench");
  magix::Mesh mesh;
  std::vector<magix::ParamInfo> infos = magix::expected_parameters(config);
  magix::shard_parameters(infos, mesh);
  magix::ParameterSet params = magix::init_parameters(config, infos, 1, weight_dtype);
  int64_t n_params = 0;
  for (size_t i = 0; i < params.size(); ++i) n_params += params.tensor(i).numel();
  const double param_mib = static_cast<double>(params.nbytes()) / 1048576.0;
  magix::Decoder model(config, mesh, std::move(params),
                       {.recompute = recompute, .weight_dtype = weight_dtype});
  magix::ParameterSet grads = model.params().zeros_like();

  const int64_t B = 4, T = 512;
  std::vector<std::vector<int32_t>> rows(B, std::vector<int32_t>(T));
  uint64_t x = 12345;
  for (auto& row : rows) {
    for (auto& id : row) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      id = static_cast<int32_t>((x >> 33) % 32000);
    }
  }
  magix::TokenBatch batch = magix::make_causal_batch(rows);  // (B, T), targets ids[t + 1]
  const double count = static_cast<double>(batch.count_targets());
  model.loss_and_grad(batch, count, grads);  // warm-up
  auto t0 = Clock::now();
  double loss = 0;
  for (int s = 0; s < steps; ++s) loss = model.loss_and_grad(batch, count, grads).loss;
  const double dt = seconds_since(t0) / steps;
  const double tokens = static_cast<double>(batch.batch * batch.seq);
  // Matmul FLOPs of forward + backward: 6 per parameter per token, plus attention (causal:
  // half of 4 * T * C per token forward, x3 with backward).
  const double flops = 6.0 * n_params * tokens + 3.0 * 2.0 * tokens * batch.seq * 768 * 12;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  fmt::print(
      "{:<4} {:<19} {:>8.0f} tokens/s  {:6.2f} s/step  {:6.1f} GFLOP/s  peak RSS {:6.0f} MiB  "
      "weights {:4.0f} MiB  loss {:.4f}  ({} params)\n",
      magix::dtype_name(weight_dtype), recompute ? "recompute" : "stored activations", tokens / dt,
      dt, flops / dt / 1e9, ru.ru_maxrss / 1024.0, param_mib, loss, n_params);
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 2;
  magix::DType weight_dtype = magix::DType::kF32;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--bf16") == 0) {
      weight_dtype = magix::DType::kBF16;
    } else {
      steps = std::atoi(argv[i]);
    }
  }
  const char* threads = std::getenv("OMP_NUM_THREADS");
  fmt::print(
      "decoder bench: Llama hidden 768, 12 layers, 12 heads, vocab 32000, B=4, T=512, "
      "OMP_NUM_THREADS={}, GEMM: {}\n",
      threads ? threads : "(unset)", magix::cpu::gemm_backend_name());
  std::fflush(stdout);
  for (bool recompute : {false, true}) {
    pid_t pid = fork();
    if (pid == 0) _exit(run_mode(recompute, steps, weight_dtype));
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fmt::print(stderr, "mode {} failed\n", recompute ? "recompute" : "stored");
      return 1;
    }
  }
  fmt::print("reference: GEMM alone (2048x768 . 768x2048) {:.1f} GFLOP/s\n", gemm_gflops());
  return 0;
}
