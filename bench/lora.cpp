// LoRA training on a 1.1B-parameter Llama shape (TinyLlama: hidden 2048, 22 layers, 32 heads,
// 4 KV heads, intermediate 5632, vocab 32000, untied; random init), adapters rank 8 on q, k, v,
// o, gate, up, down: peak RSS, tokens/s, and where a step's time goes: the decoder's dense
// forward + backward, the projection of dW onto the adapters, AdamW on the adapters, and the
// rebuild of W_eff = W + scale · B · A. The reference in the same run is the forward + backward
// alone (what a step of full fine-tuning costs before its optimizer). --bf16_model_weights keeps
// the frozen base copy in bf16 (LoraModelOptions::bf16_base; the decoder's W_eff stays fp32);
// --bf16 runs the decoder in bf16 mixed precision (DecoderOptions::compute_dtype, the CLI's
// --bf16); the two combine. --layers N shrinks the model (e.g. to try it quickly). The last line
// is one JSON object with every figure.
//
//   OMP_NUM_THREADS=2 build/bin/bench_lora [--bf16_model_weights] [--bf16] [--steps 3]
//                                          [--batch 1] [--seq 128] [--layers 22] [--recompute]
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

std::string loadavg() {
  std::string load;
  std::getline(std::ifstream("/proc/loadavg"), load);
  return load;
}

}  // namespace

int main(int argc, char** argv) {
  bool bf16_base = false, bf16_compute = false, recompute = false;
  int steps = 3, layers = 22;
  int64_t batch_rows = 1, seq = 128;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::atoll(argv[++i]) : 0; };
    if (a == "--bf16_model_weights") {
      bf16_base = true;
    } else if (a == "--bf16") {
      bf16_compute = true;
    } else if (a == "--recompute") {
      recompute = true;
    } else if (a == "--steps") {
      steps = static_cast<int>(next());
    } else if (a == "--batch") {
      batch_rows = next();
    } else if (a == "--seq") {
      seq = next();
    } else if (a == "--layers") {
      layers = static_cast<int>(next());
    } else {
      fmt::print(stderr, "unknown argument {}\n", a);
      return 2;
    }
  }
  if (steps < 1 || layers < 1 || batch_rows < 1 || seq < 1) {
    fmt::print(stderr, "--steps, --layers, --batch and --seq must be >= 1\n");
    return 2;
  }
  const magix::DType compute = bf16_compute ? magix::DType::kBF16 : magix::DType::kF32;
  const char* threads = std::getenv("OMP_NUM_THREADS");
  const std::string load_start = loadavg();
  fmt::print(
      "LoRA bench: Llama hidden 2048, {} layers, 32/4 heads, intermediate 5632, vocab 32000; "
      "rank 8 on q,k,v,o,gate,up,down; B={} T={}; base {}; compute {}; recompute {}; "
      "OMP_NUM_THREADS={}; GEMM {}{}; load average {}\n",
      layers, batch_rows, seq, bf16_base ? "bf16" : "fp32", bf16_compute ? "bf16" : "fp32",
      recompute, threads ? threads : "(unset)", magix::cpu::gemm_backend_name(),
      bf16_compute ? ", bf16 GEMM " + std::string(magix::cpu::gemm_bf16_engine_name()) : "",
      load_start);
  nlohmann::json j{{"model_type", "llama"},       {"vocab_size", 32000},
                   {"hidden_size", 2048},         {"intermediate_size", 5632},
                   {"num_hidden_layers", layers}, {"num_attention_heads", 32},
                   {"num_key_value_heads", 4},    {"max_position_embeddings", 2048},
                   {"rms_norm_eps", 1e-5},        {"tie_word_embeddings", false}};
  const magix::ModelConfig config = magix::parse_model_config(j, "bench");
  magix::Mesh mesh;
  auto t0 = Clock::now();
  std::vector<magix::ParamInfo> infos = magix::expected_parameters(config);
  magix::shard_parameters(infos, mesh);
  magix::ParameterSet params = magix::init_parameters(config, infos, 1);
  int64_t n_params = 0;
  for (size_t i = 0; i < params.size(); ++i) n_params += params.tensor(i).numel();
  magix::Decoder decoder(config, mesh, std::move(params),
                         {.recompute = recompute, .compute_dtype = compute});
  const magix::LoraConfig lora;  // rank 8, alpha 32, the default targets
  const auto adapter_infos = magix::lora_adapter_infos(decoder.params().infos(), lora, mesh);
  magix::LoraModel model(std::move(decoder), lora, magix::init_lora_adapters(adapter_infos, 7),
                         magix::LoraModelOptions{bf16_base});
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
  const magix::TokenBatch batch = magix::random_causal_batch(32000, batch_rows, seq + 1, 99, 0, 1);
  const double count = static_cast<double>(batch.count_targets());
  magix::ParameterSet dense = model.decoder().params().zeros_like();
  magix::ParameterSet grads = model.adapters().zeros_like();
  double t_fb = 0, t_proj = 0, t_opt = 0, t_refresh = 0, t_all = 0;
  nlohmann::json step_figures = nlohmann::json::array();
  for (int s = 0; s < steps; ++s) {
    auto ts = Clock::now();
    dense.fill_zero();
    grads.fill_zero();
    auto t = Clock::now();
    const double loss = model.decoder().loss_and_grad(batch, count, dense).loss;
    const double fb = seconds_since(t);
    t = Clock::now();
    magix::lora_project_grads(dense, model.adapters(), lora.scale(), mesh, grads);
    const double proj = seconds_since(t);
    t = Clock::now();
    const double norm = magix::global_grad_norm(grads, mesh);
    std::vector<magix::Tensor> p, g;
    for (size_t i = 0; i < grads.size(); ++i) {
      p.push_back(model.adapters().tensor(i));
      g.push_back(grads.tensor(i));
    }
    opt.step(p, g, 1e-3, norm);
    const double o = seconds_since(t);
    t = Clock::now();
    model.refresh_weights();
    const double rf = seconds_since(t);
    const double all = seconds_since(ts);
    fmt::print(
        "step {}: loss {:.4f}  {:.2f} s (forward+backward {:.2f}, projection {:.3f}, AdamW "
        "{:.3f}, W_eff rebuild {:.3f})  {:.1f} tokens/s\n",
        s + 1, loss, all, fb, proj, o, rf, count / all);
    std::fflush(stdout);
    step_figures.push_back({{"step", s + 1},
                            {"loss", loss},
                            {"s", all},
                            {"forward_backward_s", fb},
                            {"projection_s", proj},
                            {"adamw_s", o},
                            {"rebuild_s", rf},
                            {"tokens_per_s", count / all}});
    if (s > 0 || steps == 1) {  // the first step warms up
      t_fb += fb;
      t_proj += proj;
      t_opt += o;
      t_refresh += rf;
      t_all += all;
    }
  }
  const int timed = steps > 1 ? steps - 1 : 1;
  const double overhead = (t_proj + t_opt + t_refresh) / t_all;
  fmt::print(
      "{}: {:.2f} s/step, {:.1f} tokens/s; forward+backward alone {:.2f} s "
      "({:.1f} tokens/s); LoRA overhead (projection + AdamW + rebuild) {:.1f}% of the step\n",
      steps > 1 ? fmt::format("mean of steps 2..{}", steps)
                : std::string("step 1 (includes the warm-up)"),
      t_all / timed, count * timed / t_all, t_fb / timed, count * timed / t_fb, 100.0 * overhead);
  const double gib = 1073741824.0;
  const double rss = peak_rss_gib();
  const double weights_gib = model.decoder().params().nbytes() / gib;
  const double grads_gib = dense.nbytes() / gib;
  const double base_gib =
      (model.bytes_held() - static_cast<int64_t>(model.decoder().params().nbytes()) -
       2 * static_cast<int64_t>(model.adapters().nbytes())) /
      gib;
  fmt::print(
      "peak RSS {:.2f} GiB (fp32 decoder weights {:.2f} GiB + dense gradients {:.2f} GiB + "
      "base copy {:.2f} GiB)\n",
      rss, weights_gib, grads_gib, base_gib);
  const nlohmann::json out{
      {"bench", "lora"},
      {"threads", threads ? threads : ""},
      {"gemm", magix::cpu::gemm_backend_name()},
      {"gemm_bf16_engine", bf16_compute ? magix::cpu::gemm_bf16_engine_name() : ""},
      {"layers", layers},
      {"batch", batch_rows},
      {"seq", seq},
      {"steps", steps},
      {"recompute", recompute},
      {"bf16_model_weights", bf16_base},
      {"bf16", bf16_compute},
      {"base_dtype", bf16_base ? "BF16" : "F32"},
      {"compute", magix::dtype_name(compute)},
      {"lora_rank", lora.rank},
      {"params", n_params},
      {"adapter_params", n_adapter},
      {"init_s", init_s},
      {"init_peak_rss_gib", init_rss},
      {"step_times", step_figures},
      {"timed_steps", timed},
      {"s_per_step", t_all / timed},
      {"tokens_per_s", count * timed / t_all},
      {"forward_backward_s", t_fb / timed},
      {"forward_backward_tokens_per_s", count * timed / t_fb},
      {"projection_s", t_proj / timed},
      {"adamw_s", t_opt / timed},
      {"rebuild_s", t_refresh / timed},
      {"lora_overhead_fraction", overhead},
      {"peak_rss_gib", rss},
      {"decoder_weights_gib", weights_gib},
      {"dense_grads_gib", grads_gib},
      {"base_copy_gib", base_gib},
      {"load_average_start", load_start},
      {"load_average_end", loadavg()}};
  fmt::print("{}\n", out.dump());
  return 0;
}
