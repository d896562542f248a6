// Generation throughput of a ~110M-parameter Llama (the shape of bench_decoder: hidden 768,
// 12 layers, 12 heads, intermediate 2048, vocab 32000, tied embeddings; random init), greedy:
//   prefill  tokens/s: B prompts of P tokens, one new token (the prefill dominates);
//   decode   tokens/s: B rows generating N tokens after a 16-token prompt, the prefill time
//            (measured alone) subtracted, over the N - 1 decode steps;
// at batch 1 and 32, in fp32 and with --bf16 (weights kept and streamed in bf16), and decode at
// batch 1 against the memory-bandwidth bound: every decode step reads all weights once (the tied
// embedding once, as the LM head), so the bound is bandwidth / weight bytes tokens/s, with the
// bandwidth of a large streaming read measured in the same run. The last line is one JSON
// object with every figure.
//
//   OMP_NUM_THREADS=2 build/bin/bench_generate [P] [N]
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <vector>

#include "magix/generate.hpp"
#include "magix/model.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Best of 5 streaming reads (a sum over 1 GiB of floats, all threads, 32 independent float
// lanes per thread so that the adds keep up with memory) in GB/s.
double read_bandwidth_gbs() {
  const int64_t n = int64_t(1) << 28;
  std::vector<float> buf(static_cast<size_t>(n));
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<float>(i & 7);
  double best = 0, sink = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    double sum = 0;
#pragma omp parallel reduction(+ : sum)
    {
      float acc[32] = {};
#pragma omp for
      for (int64_t i = 0; i < n; i += 32) {
        for (int k = 0; k < 32; ++k) acc[k] += buf[i + k];
      }
      for (float a : acc) sum += a;
    }
    best = std::max(best, static_cast<double>(n) * sizeof(float) / seconds_since(t0) / 1e9);
    sink += sum;
  }
  if (sink < 0) fmt::print("{}", sink);  // keeps the sums alive
  return best;
}

std::vector<std::vector<int32_t>> random_prompts(int64_t B, int64_t P, int64_t vocab) {
  std::vector<std::vector<int32_t>> rows(static_cast<size_t>(B), std::vector<int32_t>(P));
  uint64_t x = 12345;
  for (auto& row : rows) {
    for (auto& id : row) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      id = static_cast<int32_t>((x >> 33) % static_cast<uint64_t>(vocab));
    }
  }
  return rows;
}

// Seconds of one generate() call (best of `reps`).
double time_generate(magix::Generator& gen, const std::vector<std::vector<int32_t>>& prompts,
                     int64_t new_tokens, int reps) {
  magix::GenerateOptions o;
  o.max_length = 1 << 20;
  o.max_new_tokens = new_tokens;
  o.eos_ids = {-1};  // never stops early
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    const auto res = gen.generate(prompts, o);
    best = std::min(best, seconds_since(t0));
    if (std::ssize(res[0].tokens) != new_tokens) std::abort();
  }
  return best;
}

struct Figures {
  double prefill_tps[2] = {0, 0}, decode_tps[2] = {0, 0}, decode_ms[2] = {0, 0};
};

// Prefill and decode tokens/s at batch 1 and 32 (index 0 and 1).
Figures measure(magix::Generator& gen, int64_t P, int64_t N, int64_t vocab) {
  Figures f;
  const int64_t batches[2] = {1, 32};
  for (int i = 0; i < 2; ++i) {
    const int64_t B = batches[i];
    const auto prefill_prompts = random_prompts(B, P, vocab);
    const double t_prefill = time_generate(gen, prefill_prompts, 1, B == 1 ? 3 : 1);
    const auto short_prompts = random_prompts(B, 16, vocab);
    const double t_short = time_generate(gen, short_prompts, 1, 3);
    const double t_all = time_generate(gen, short_prompts, N, B == 1 ? 2 : 1);
    f.prefill_tps[i] = static_cast<double>(B * P) / t_prefill;
    f.decode_tps[i] = static_cast<double>(B * (N - 1)) / (t_all - t_short);
    f.decode_ms[i] = 1e3 * (t_all - t_short) / static_cast<double>(N - 1);
  }
  return f;
}

std::string loadavg() {
  std::string load;
  std::getline(std::ifstream("/proc/loadavg"), load);
  return load;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t P = argc > 1 ? std::atoll(argv[1]) : 128;
  const int64_t N = argc > 2 ? std::atoll(argv[2]) : 32;
  nlohmann::json j{{"model_type", "llama"},     {"vocab_size", 32000},
                   {"hidden_size", 768},        {"intermediate_size", 2048},
                   {"num_hidden_layers", 12},   {"num_attention_heads", 12},
                   {"num_key_value_heads", 12}, {"max_position_embeddings", 4096},
                   {"rms_norm_eps", 1e-5},      {"tie_word_embeddings", true}};
  const magix::ModelConfig config = magix::parse_model_config(j, "bench");
  magix::Mesh mesh;
  std::vector<magix::ParamInfo> infos = magix::expected_parameters(config);
  magix::shard_parameters(infos, mesh);
  const magix::ParameterSet params = magix::init_parameters(config, infos, 1);
  int64_t n_params = 0;
  for (size_t i = 0; i < params.size(); ++i) n_params += params.tensor(i).numel();

  fmt::print(
      "generate bench: Llama hidden 768, 12 layers, vocab 32000, {:.1f}M parameters, "
      "{} OpenMP threads, load average {}\n",
      n_params / 1e6, omp_get_max_threads(), loadavg());
  const double bw = read_bandwidth_gbs();
  fmt::print("memory read bandwidth (1 GiB streaming sum, best of 5): {:.1f} GB/s\n", bw);
  nlohmann::json out{{"bench", "generate"}, {"threads", omp_get_max_threads()},
                     {"prompt_tokens", P},  {"new_tokens", N},
                     {"params", n_params},  {"bandwidth_gbs", bw}};
  // Every decode step reads all weights once (the tied table once, as the LM head): 4 bytes
  // per parameter in fp32, 2 in bf16 (--bf16 keeps and streams the weights in bf16).
  for (const magix::DType compute : {magix::DType::kF32, magix::DType::kBF16}) {
    magix::Generator gen(config, mesh, params, nullptr, compute);
    const double weight_bytes =
        static_cast<double>(n_params) * (compute == magix::DType::kBF16 ? 2 : 4);
    const double bound = bw * 1e9 / weight_bytes;
    const Figures f = measure(gen, P, N, config.vocab_size);
    const std::string name = compute == magix::DType::kBF16 ? "bf16" : "fp32";
    fmt::print("{}: weights read per decode step {:.1f} MB -> batch-1 bound {:.1f} tokens/s\n",
               name, weight_bytes / 1e6, bound);
    for (int i = 0; i < 2; ++i) {
      fmt::print(
          "{}  batch {:2}: prefill {:7.1f} tokens/s; decode {:7.1f} tokens/s ({:.1f} ms per "
          "step)\n",
          name, i == 0 ? 1 : 32, f.prefill_tps[i], f.decode_tps[i], f.decode_ms[i]);
    }
    fmt::print("{}  batch  1 decode / bandwidth bound: {:.2f}\n", name, f.decode_tps[0] / bound);
    out[name] = {{"weight_bytes_per_step", weight_bytes},
                 {"batch1_bound_tokens_per_s", bound},
                 {"batch1_prefill_tokens_per_s", f.prefill_tps[0]},
                 {"batch1_decode_tokens_per_s", f.decode_tps[0]},
                 {"batch1_decode_over_bound", f.decode_tps[0] / bound},
                 {"batch32_prefill_tokens_per_s", f.prefill_tps[1]},
                 {"batch32_decode_tokens_per_s", f.decode_tps[1]}};
  }
  out["bf16_over_fp32_batch1_decode"] = out["bf16"]["batch1_decode_tokens_per_s"].get<double>() /
                                        out["fp32"]["batch1_decode_tokens_per_s"].get<double>();
  out["load_average_end"] = loadavg();
  fmt::print("{}\n", out.dump());
  return 0;
}
