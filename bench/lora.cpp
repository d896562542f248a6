// LoRA training on a Llama shape with random weights: the low-rank path (y = W·x + s·B·(A·x),
// adapter gradients only; docs/lora.md). Shapes: tinyllama-1.1b (the default: hidden 2048, 22
// layers, 32/4 heads, intermediate 5632, vocab 32000) and mistral-7b (hidden 4096, 32 layers,
// 32/8 heads, intermediate 14336, vocab 32000); untied. Adapters on q, k, v, o, gate, up, down.
// The base is drawn straight into its storage dtype (--bf16_model_weights: bf16, one fp32 tensor
// alive at a time). A step: forward + backward (adapter gradients), global norm, AdamW on the
// adapters; the first step warms up. The peer in the same run is PyTorch + PEFT
// (tools/reference/bench_lora_peft.py). The last line is one JSON object with every figure.
//
//   OMP_NUM_THREADS=2 build/bin/bench_lora [--shape tinyllama-1.1b|mistral-7b] [--rank 8]
//       [--alpha 16] [--batch 1] [--seq 128] [--steps 3] [--layers N] [--bf16]
//       [--bf16_model_weights] [--recompute]
#include <fmt/format.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/cpu/gemm.hpp"
#include "backends/cpu/gemm_bf16.hpp"
#include "magix/lora.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double peak_rss_gib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB
}

// CPU seconds (user + system) this process has used: a step's CPU time is much less disturbed
// than its wall time when other processes share the cores.
double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec * 1e-6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

std::string loadavg() {
  std::string load;
  std::getline(std::ifstream("/proc/loadavg"), load);
  return load;
}

struct Shape {
  int64_t hidden, layers, heads, kv_heads, intermediate, vocab;
};

}  // namespace

int main(int argc, char** argv) {
  bool bf16_base = false, bf16_compute = false, recompute = false;
  std::string shape_name = "tinyllama-1.1b";
  int steps = 3, layers = 0;
  int64_t batch_rows = 1, seq = 128, rank = 8;
  double alpha = 16;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        fmt::print(stderr, "{} needs a value\n", a);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--bf16_model_weights") {
      bf16_base = true;
    } else if (a == "--bf16") {
      bf16_compute = true;
    } else if (a == "--recompute") {
      recompute = true;
    } else if (a == "--shape") {
      shape_name = value();
    } else if (a == "--steps") {
      steps = std::atoi(value().c_str());
    } else if (a == "--batch") {
      batch_rows = std::atoll(value().c_str());
    } else if (a == "--seq") {
      seq = std::atoll(value().c_str());
    } else if (a == "--rank") {
      rank = std::atoll(value().c_str());
    } else if (a == "--alpha") {
      alpha = std::atof(value().c_str());
    } else if (a == "--layers") {
      layers = std::atoi(value().c_str());
    } else {
      fmt::print(stderr, "unknown argument {}\n", a);
      return 2;
    }
  }
  Shape shape{};
  if (shape_name == "tinyllama-1.1b") {
    shape = {2048, 22, 32, 4, 5632, 32000};
  } else if (shape_name == "mistral-7b") {
    shape = {4096, 32, 32, 8, 14336, 32000};
  } else {
    fmt::print(stderr, "--shape must be tinyllama-1.1b or mistral-7b, not {}\n", shape_name);
    return 2;
  }
  if (layers > 0) shape.layers = layers;
  if (steps < 1 || layers < 0 || batch_rows < 1 || seq < 1 || rank < 1) {
    fmt::print(stderr, "--steps, --layers, --batch, --seq and --rank must be >= 1\n");
    return 2;
  }
  const magix::DType compute = bf16_compute ? magix::DType::kBF16 : magix::DType::kF32;
  const magix::DType storage = bf16_base ? magix::DType::kBF16 : magix::DType::kF32;
  const char* threads = std::getenv("OMP_NUM_THREADS");
  const std::string load_start = loadavg();
  fmt::print(
      "LoRA bench: {} (hidden {}, {} layers, {}/{} heads, intermediate {}, vocab {}); rank {} "
      "alpha {} on q,k,v,o,gate,up,down; B={} T={}; base {}; compute {}; recompute {}; "
      "OMP_NUM_THREADS={}; GEMM {}{}; load average {}\n",
      shape_name, shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.intermediate,
      shape.vocab, rank, alpha, batch_rows, seq, magix::dtype_name(storage),
      magix::dtype_name(compute), recompute, threads ? threads : "(unset)",
      magix::cpu::gemm_backend_name(),
      bf16_compute ? ", bf16 GEMM " + std::string(magix::cpu::gemm_bf16_engine_name()) : "",
      load_start);
  std::fflush(stdout);
  nlohmann::json j{{"model_type", "llama"},
                   {"vocab_size", shape.vocab},
                   {"hidden_size", shape.hidden},
                   {"intermediate_size", shape.intermediate},
                   {"num_hidden_layers", shape.layers},
                   {"num_attention_heads", shape.heads},
                   {"num_key_value_heads", shape.kv_heads},
                   {"max_position_embeddings", std::max<int64_t>(2048, seq)},
                   {"rms_norm_eps", 1e-5},
                   {"tie_word_embeddings", false}};
  const magix::ModelConfig config = magix::parse_model_config(j, "bench");
  magix::Mesh mesh;
  auto t0 = Clock::now();
  std::vector<magix::ParamInfo> infos = magix::expected_parameters(config);
  magix::shard_parameters(infos, mesh);
  // Drawn straight into the storage dtype (never a whole fp32 copy of the model).
  magix::ParameterSet params = magix::init_parameters(config, infos, 1, storage);
  int64_t n_params = 0;
  for (size_t i = 0; i < params.size(); ++i) n_params += params.tensor(i).numel();
  magix::Decoder decoder(
      config, mesh, std::move(params),
      {.recompute = recompute, .weight_dtype = storage, .compute_dtype = compute});
  const magix::LoraConfig lora{rank, alpha, magix::kDefaultLoraTargets};
  const auto adapter_infos = magix::lora_adapter_infos(decoder.params().infos(), lora, mesh);
  magix::LoraModel model(std::move(decoder), lora, magix::init_lora_adapters(adapter_infos, 7));
  int64_t n_adapter = 0;
  for (size_t i = 0; i < model.adapters().size(); ++i) {
    n_adapter += model.adapters().tensor(i).numel();
  }
  const double init_s = seconds_since(t0), init_rss = peak_rss_gib();
  fmt::print(
      "init: {:.1f} s, {:.3f} B parameters, {:.2f} M adapter parameters, peak RSS {:.2f} GiB\n",
      init_s, n_params / 1e9, n_adapter / 1e6, init_rss);
  std::fflush(stdout);

  magix::AdamW opt = magix::initialize_lora_opt_state(magix::AdamWOptions{}, model.adapters());
  const magix::TokenBatch batch =
      magix::random_causal_batch(shape.vocab, batch_rows, seq + 1, 99, 0, 1);
  const double count = static_cast<double>(batch.count_targets());
  magix::ParameterSet grads = model.adapters().zeros_like();
  double t_fb = 0, t_opt = 0, t_all = 0, t_cpu = 0;
  nlohmann::json step_figures = nlohmann::json::array();
  for (int s = 0; s < steps; ++s) {
    auto ts = Clock::now();
    const double cpu0 = cpu_seconds();
    grads.fill_zero();
    auto t = Clock::now();
    const double loss = model.loss_and_grad(batch, count, grads).loss;
    const double fb = seconds_since(t);
    t = Clock::now();
    const double norm = magix::global_grad_norm(grads, mesh);
    std::vector<magix::Tensor> p, g;
    for (size_t i = 0; i < grads.size(); ++i) {
      p.push_back(model.adapters().tensor(i));
      g.push_back(grads.tensor(i));
    }
    opt.step(p, g, 1e-3, norm);
    const double o = seconds_since(t);
    const double all = seconds_since(ts);
    const double cpu = cpu_seconds() - cpu0;
    fmt::print(
        "step {}: loss {:.4f}  {:.2f} s (forward+backward {:.2f}, norm+AdamW {:.3f}, CPU {:.2f} s)  "
        "{:.1f} tokens/s  peak RSS {:.2f} GiB  load {}\n",
        s + 1, loss, all, fb, o, cpu, count / all, peak_rss_gib(), loadavg());
    std::fflush(stdout);
    step_figures.push_back({{"step", s + 1},
                            {"loss", loss},
                            {"s", all},
                            {"forward_backward_s", fb},
                            {"adamw_s", o},
                            {"cpu_s", cpu},
                            {"tokens_per_s", count / all}});
    if (s > 0 || steps == 1) {  // the first step warms up
      t_fb += fb;
      t_opt += o;
      t_all += all;
      t_cpu += cpu;
    }
  }
  const int timed = steps > 1 ? steps - 1 : 1;
  fmt::print("{}: {:.2f} s/step, {:.2f} tokens/s; forward+backward {:.2f} s, AdamW {:.3f} s\n",
             steps > 1 ? fmt::format("mean of steps 2..{}", steps)
                       : std::string("step 1 (includes the warm-up)"),
             t_all / timed, count * timed / t_all, t_fb / timed, t_opt / timed);
  const double gib = 1073741824.0;
  const double rss = peak_rss_gib();
  const double base_gib = model.decoder().params().nbytes() / gib;
  const double adapters_gib = model.adapters().nbytes() / gib;
  fmt::print("peak RSS {:.2f} GiB (base {:.2f} GiB, adapters {:.4f} GiB + grads and 2 moments)\n",
             rss, base_gib, adapters_gib);
  const nlohmann::json out{
      {"bench", "lora"},
      {"shape", shape_name},
      {"threads", threads ? threads : ""},
      {"gemm", magix::cpu::gemm_backend_name()},
      {"gemm_bf16_engine", bf16_compute ? magix::cpu::gemm_bf16_engine_name() : ""},
      {"layers", shape.layers},
      {"batch", batch_rows},
      {"seq", seq},
      {"steps", steps},
      {"recompute", recompute},
      {"bf16_model_weights", bf16_base},
      {"bf16", bf16_compute},
      {"base_dtype", magix::dtype_name(storage)},
      {"compute", magix::dtype_name(compute)},
      {"lora_rank", rank},
      {"lora_alpha", alpha},
      {"params", n_params},
      {"adapter_params", n_adapter},
      {"init_s", init_s},
      {"init_peak_rss_gib", init_rss},
      {"step_times", step_figures},
      {"timed_steps", timed},
      {"s_per_step", t_all / timed},
      {"tokens_per_s", count * timed / t_all},
      {"forward_backward_s", t_fb / timed},
      {"adamw_s", t_opt / timed},
      {"cpu_s_per_step", t_cpu / timed},
      {"peak_rss_gib", rss},
      {"base_gib", base_gib},
      {"adapters_gib", adapters_gib},
      {"load_average_start", load_start},
      {"load_average_end", loadavg()}};
  fmt::print("{}\n", out.dump());
  return 0;
}
