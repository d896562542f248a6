// GPU throughput (docs/gpu.md), through the op table only, so that the same code runs on any
// device:
// - train: forward + backward (Decoder::loss_and_grad, no optimizer step) of a ~1.1B Llama
//   (hidden 2048, 22 layers, 32 query / 4 KV heads, intermediate 5632, vocab 32000, untied;
//   random weights made in memory, fp32 master weights, --bf16 compute), batch 8 x 1024 (with
//   stored activations; where that fails, with recompute, the first error recorded):
//   tokens/s and MFU = (6 N + attention) FLOPs per token x tokens/s / peak bf16 dense FLOP/s,
//   N the matmul parameters (all but the embedding table), attention 6 T C FLOPs per token
//   and layer (causal half of 4 T C forward, x3 with backward).
// - attention: the backend's attention_forward / attention_backward called directly, bf16,
//   causal, head dim 128 (B 4, T 4096, 16 heads): TFLOP/s (causal forward 2 B H T^2 D, backward
//   2.5 x forward).
// - decode: greedy generation with the KV cache (bf16 weights and compute), batch 1 and 16,
//   prompt 128, 128 new tokens: generated tokens/s.
// The peak is 989 TFLOP/s (bf16 dense) for an H100 SXM (HBM3) or an H200, read from the device
// name; other devices need --peak_tflops (else MFU is null). Each part's failure (out of memory,
// say) is recorded in the JSON and the others still run. After each part a line holds the JSON
// object so far (without "ok"); the last line is the whole JSON object, with "ok".
//
//   build/bin/bench_gpu [--device cuda|cpu] [--tiny] [--peak_tflops X] [--steps N]
//                       [--batch B] [--seq T] [--recompute]
// --tiny: a toy shape (hidden 64, 2 layers, vocab 256, ...) for a smoke test on the CPU.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "magix/error.hpp"
#include "magix/generate.hpp"
#include "magix/model.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Shape {
  int64_t hidden = 2048, layers = 22, heads = 32, kv_heads = 4, intermediate = 5632,
          vocab = 32000;
  int64_t batch = 8, seq = 1024;
  // attention op
  int64_t att_batch = 4, att_seq = 4096, att_heads = 16, head_dim = 128;
  // decode
  int64_t prompt = 128, new_tokens = 128;
  std::vector<int64_t> decode_batches = {1, 16};
};

Shape tiny_shape() {
  Shape s;
  s.hidden = 64;
  s.layers = 2;
  s.heads = 4;
  s.kv_heads = 2;
  s.intermediate = 128;
  s.vocab = 256;
  s.batch = 2;
  s.seq = 32;
  s.att_batch = 1;
  s.att_seq = 64;
  s.att_heads = 2;
  s.prompt = 8;
  s.new_tokens = 8;
  s.decode_batches = {1, 2};
  return s;
}

magix::ModelConfig llama_config(const Shape& s) {
  const json j{{"model_type", "llama"},
               {"vocab_size", s.vocab},
               {"hidden_size", s.hidden},
               {"intermediate_size", s.intermediate},
               {"num_hidden_layers", s.layers},
               {"num_attention_heads", s.heads},
               {"num_key_value_heads", s.kv_heads},
               {"max_position_embeddings", std::max<int64_t>(2048, s.seq + s.prompt + s.new_tokens)},
               {"rms_norm_eps", 1e-5},
               {"tie_word_embeddings", false}};
  return magix::parse_model_config(j, "bench_gpu");
}

magix::ParameterSet random_parameters(const magix::ModelConfig& config, const magix::Mesh& mesh,
                                      magix::DType dtype, int64_t* matmul_params) {
  std::vector<magix::ParamInfo> infos = magix::expected_parameters(config);
  magix::shard_parameters(infos, mesh);
  magix::ParameterSet p = magix::init_parameters(config, infos, 1, dtype);
  int64_t n = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p.info(i).name.find("embed_tokens") == std::string::npos) n += p.tensor(i).numel();
  }
  if (matmul_params) *matmul_params = n;
  return p;
}

// Runs a part; an error (magix::Error, std::bad_alloc, ...) becomes {"error": "..."}.
json guarded(const char* name, const std::function<json()>& part) {
  try {
    return part();
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_gpu: {} failed: {}\n", name, e.what());
    return json{{"error", e.what()}};
  }
}

json bench_train(const Shape& s, magix::Device device, bool recompute, int steps,
                 double peak_tflops) {
  const magix::ModelConfig config = llama_config(s);
  magix::Mesh mesh;
  int64_t n_matmul = 0;
  magix::ParameterSet params = random_parameters(config, mesh, magix::DType::kF32, &n_matmul);
  magix::Decoder model(config, mesh, std::move(params),
                       {.recompute = recompute, .compute_dtype = magix::DType::kBF16,
                        .device = device});
  magix::ParameterSet grads = model.params().zeros_like();
  const magix::TokenBatch batch = magix::random_causal_batch(s.vocab, s.batch, s.seq, 12345, 0, 1);
  const double count = static_cast<double>(batch.count_targets());
  model.loss_and_grad(batch, count, grads);  // warm-up (the loss comes back: synchronised)
  std::vector<double> times;
  double loss = 0;
  for (int i = 0; i < steps; ++i) {
    const auto t0 = Clock::now();
    loss = model.loss_and_grad(batch, count, grads).loss;
    times.push_back(seconds_since(t0));
  }
  std::sort(times.begin(), times.end());
  const double dt = times[times.size() / 2];  // median
  const double tokens = static_cast<double>(s.batch * s.seq);
  const double flops = 6.0 * static_cast<double>(n_matmul) * tokens +
                       6.0 * tokens * static_cast<double>(s.seq * s.hidden * s.layers);
  json r{{"matmul_params", n_matmul},
         {"batch", s.batch},
         {"seq", s.seq},
         {"recompute", recompute},
         {"tokens_per_s", tokens / dt},
         {"s_per_step", dt},
         {"step_times_s", times},
         {"tflops", flops / dt / 1e12},
         {"loss", loss},
         {"mfu", nullptr}};
  if (peak_tflops > 0) r["mfu"] = flops / dt / 1e12 / peak_tflops;
  return r;
}

// A host tensor of uniform values in [-1, 1) (a fixed LCG), in `dtype`, on `device`.
magix::Tensor random_tensor(const magix::Shape& shape, magix::DType dtype, magix::Device device,
                            uint64_t seed) {
  magix::Tensor t(shape, magix::DType::kF32);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    p[i] = static_cast<float>(static_cast<double>(seed >> 11) / 9007199254740992.0 * 2 - 1);
  }
  return magix::to_device(dtype == magix::DType::kF32 ? t : t.to(dtype), device);
}

json bench_attention(const Shape& s, magix::Device device, int reps) {
  const magix::Backend& ops = magix::backend_for(device);
  const int64_t B = s.att_batch, T = s.att_seq, H = s.att_heads, D = s.head_dim;
  const magix::DType bf16 = magix::DType::kBF16;
  const magix::Tensor q = random_tensor({B, T, H, D}, bf16, device, 1);
  const magix::Tensor k = random_tensor({B, T, H, D}, bf16, device, 2);
  const magix::Tensor v = random_tensor({B, T, H, D}, bf16, device, 3);
  const magix::Tensor dout = random_tensor({B, T, H, D}, bf16, device, 4);
  magix::Tensor out = ops.zeros({B, T, H, D}, bf16);
  magix::Tensor lse = ops.zeros({B, H, T}, magix::DType::kF32);
  magix::Tensor dq = ops.zeros({B, T, H, D}, magix::DType::kF32);
  magix::Tensor dk = ops.zeros({B, T, H, D}, magix::DType::kF32);
  magix::Tensor dv = ops.zeros({B, T, H, D}, magix::DType::kF32);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const magix::AttentionMask mask;
  // to_host of a small tensor waits for the device's queued work.
  const auto sync = [&] { (void)magix::to_host(lse.rows(0, 1)); };
  const auto time = [&](const std::function<void()>& op) {
    op();  // warm-up
    sync();
    const auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i) op();
    sync();
    return seconds_since(t0) / reps;
  };
  const double fwd_s = time([&] { ops.attention_forward(out, lse, q, k, v, scale, mask); });
  const double bwd_s = time(
      [&] { ops.attention_backward(dq, dk, dv, dout, out, lse, q, k, v, scale, mask); });
  const double fwd_flops = 2.0 * static_cast<double>(B * H * D) * static_cast<double>(T * T);
  return {{"batch", B},
          {"seq", T},
          {"heads", H},
          {"head_dim", D},
          {"causal", true},
          {"dtype", "bf16"},
          {"forward_s", fwd_s},
          {"backward_s", bwd_s},
          {"forward_tflops", fwd_flops / fwd_s / 1e12},
          {"backward_tflops", 2.5 * fwd_flops / bwd_s / 1e12}};
}

json bench_decode(const Shape& s, magix::Device device) {
  const magix::ModelConfig config = llama_config(s);
  magix::Mesh mesh;
  magix::ParameterSet params = random_parameters(config, mesh, magix::DType::kBF16, nullptr);
  const magix::Decoder model(config, mesh, std::move(params),
                             {.weight_dtype = magix::DType::kBF16,
                              .compute_dtype = magix::DType::kBF16,
                              .device = device});
  magix::Generator gen(model);
  json runs = json::array();
  for (int64_t b : s.decode_batches) {
    const magix::TokenBatch batch = magix::random_causal_batch(s.vocab, b, s.prompt, 7, 0, 1);
    std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(b));
    for (int64_t r = 0; r < b; ++r) {
      prompts[static_cast<size_t>(r)].assign(batch.input_ids.begin() + r * s.prompt,
                                             batch.input_ids.begin() + (r + 1) * s.prompt);
    }
    magix::GenerateOptions o;
    o.max_length = s.prompt + s.new_tokens;
    o.max_new_tokens = s.new_tokens;
    o.eos_ids = {static_cast<int32_t>(s.vocab - 1)};
    magix::GenerateOptions warm = o;
    warm.max_length = s.prompt + 4;
    warm.max_new_tokens = 4;
    (void)gen.generate(prompts, warm);  // warm-up
    const auto t0 = Clock::now();
    const std::vector<magix::GenerationResult> res = gen.generate(prompts, o);
    const double dt = seconds_since(t0);
    int64_t generated = 0;
    for (const auto& r : res) generated += static_cast<int64_t>(r.tokens.size());
    runs.push_back({{"batch", b},
                    {"prompt", s.prompt},
                    {"new_tokens", s.new_tokens},
                    {"generated", generated},
                    {"seconds", dt},
                    {"tokens_per_s", static_cast<double>(generated) / dt}});
  }
  return runs;
}

// Dense bf16 peak TFLOP/s from the device description, 0 when unknown.
double peak_from_name(const std::string& describe) {
  if (describe.find("H200") != std::string::npos) return 989;
  if (describe.find("H100") != std::string::npos && describe.find("PCIe") == std::string::npos &&
      describe.find("NVL") == std::string::npos) {
    return 989;  // SXM (HBM3)
  }
  return 0;
}

int64_t positive(const char* flag, const char* value) {
  char* end = nullptr;
  const long long v = std::strtoll(value, &end, 10);
  MAGIX_CHECK(end && *end == '\0' && v > 0 && v <= (1 << 20), "{}: expected a positive integer, "
              "got '{}'", flag, value);
  return v;
}

int run(int argc, char** argv) {
  std::string device_name;
  bool tiny = false, recompute = false;
  double peak = 0;
  int steps = 5;
  int64_t batch = 0, seq = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> const char* {
      MAGIX_CHECK(i + 1 < argc, "{} needs a value", a);
      return argv[++i];
    };
    if (a == "--device") {
      device_name = value();
    } else if (a == "--tiny") {
      tiny = true;
    } else if (a == "--recompute") {
      recompute = true;
    } else if (a == "--peak_tflops") {
      const char* v = value();
      char* end = nullptr;
      peak = std::strtod(v, &end);
      MAGIX_CHECK(end && *end == '\0' && peak > 0 && std::isfinite(peak),
                  "--peak_tflops: expected a positive number, got '{}'", v);
    } else if (a == "--steps") {
      steps = static_cast<int>(positive("--steps", value()));
    } else if (a == "--batch") {
      batch = positive("--batch", value());
    } else if (a == "--seq") {
      seq = positive("--seq", value());
    } else {
      MAGIX_FAIL("unknown argument '{}' (see the comment at the top of bench/gpu.cpp)", a);
    }
  }
  const magix::Device device = magix::use_device(device_name);
  Shape s = tiny ? tiny_shape() : Shape{};
  if (batch) s.batch = batch;
  if (seq) s.seq = seq;
  const std::string describe = magix::backend_for(device).describe();
  if (peak <= 0) peak = peak_from_name(describe);
  fmt::print("bench_gpu on {}\n  peak bf16 dense: {}\n", describe,
             peak > 0 ? fmt::format("{} TFLOP/s", peak) : "unknown (--peak_tflops)");
  std::fflush(stdout);

  json result{{"bench", "gpu"},
              {"device", std::string(magix::device_name(device))},
              {"describe", describe},
              {"tiny", tiny},
              {"peak_tflops", peak > 0 ? json(peak) : json(nullptr)}};
  result["train"] = guarded("train", [&] { return bench_train(s, device, recompute, steps, peak); });
  if (result["train"].contains("error") && !recompute) {
    // Stored activations did not fit (say): recompute keeps only each block's input.
    result["train_stored_activations_error"] = result["train"]["error"];
    result["train"] = guarded("train", [&] { return bench_train(s, device, true, steps, peak); });
  }
  if (!result["train"].contains("error")) {
    const json& t = result["train"];
    fmt::print("train (bf16, {} x {}): {:.0f} tokens/s, {:.3f} s/step, {:.1f} TFLOP/s, MFU {}\n",
               s.batch, s.seq, t["tokens_per_s"].get<double>(), t["s_per_step"].get<double>(),
               t["tflops"].get<double>(), t["mfu"].dump());
  }
  fmt::print("{}\n", result.dump());  // partial JSON lines: a run cut short keeps what it measured
  std::fflush(stdout);
  result["attention"] = guarded("attention", [&] { return bench_attention(s, device, 10); });
  if (!result["attention"].contains("error")) {
    fmt::print("attention (bf16, hd {}): forward {:.1f} TFLOP/s, backward {:.1f} TFLOP/s\n",
               s.head_dim, result["attention"]["forward_tflops"].get<double>(),
               result["attention"]["backward_tflops"].get<double>());
  }
  fmt::print("{}\n", result.dump());
  std::fflush(stdout);
  result["decode"] = guarded("decode", [&] { return bench_decode(s, device); });
  if (result["decode"].is_array()) {
    for (const json& r : result["decode"]) {
      fmt::print("decode batch {}: {:.1f} tokens/s\n", r["batch"].get<int64_t>(),
                 r["tokens_per_s"].get<double>());
    }
  }
  const bool ok = !result["train"].contains("error") && !result["attention"].contains("error") &&
                  result["decode"].is_array();
  result["ok"] = ok;
  fmt::print("{}\n", result.dump());
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_gpu: {}\n", e.what());
    return 2;
  }
}
