// Train-step time, communication time and per-rank memory of a ~110M-parameter Llama (hidden
// 768, 12 layers, 12 heads, intermediate 2048, vocab 32000, tied; global batch 4 x 512) on a
// mesh, with random weights drawn per shard (no rank builds the full model).
//
//   OMP_NUM_THREADS=2 build/bin/bench_mesh 1 1 [steps] [--bf16_model_weights] [--bf16]
//   OMP_NUM_THREADS=1 mpirun --oversubscribe -np 2 build/bin/bench_mesh 2 1 [steps]
//   OMP_NUM_THREADS=1 mpirun --oversubscribe -np 2 build/bin/bench_mesh 1 2 [steps]
//   ... bench_mesh D M STEPS MODEL_DIR   loads an HF folder (e.g. written by `magix init` from
//                                        the same config) instead of drawing random weights,
//                                        and reports the load time and each rank's peak RSS
//                                        right after loading
//   --bf16_model_weights (anywhere) stores the weights in bf16 (DecoderOptions::weight_dtype);
//   --bf16 (anywhere) runs bf16 mixed precision (DecoderOptions::compute_dtype, the CLI's
//   --bf16); they combine. AdamW moments and gradients stay fp32.
//   --overlap_comm true|false: FSDP collectives on the communication thread behind compute, or
//   all blocking (DecoderOptions::overlap_comm; default true). --rows B --seq T: the global batch
//   (default 4 x 512; bench/multihost_links.sh uses a smaller one to fit its many runs).
//
// Prints on rank 0: median step time over the steps after the first (the only step when there
// is one), the mean time in collectives per step (the slowest rank), and per rank: parameter +
// AdamW state bytes, the largest over ranks, and peak RSS (getrusage), the largest over ranks.
// The last line of the run (rank 0) is one JSON object with every figure.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "magix/magix.hpp"

namespace {

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

double comm_seconds(const magix::Mesh& mesh) {
  return mesh.world().seconds_in_collectives() + mesh.data().seconds_in_collectives() +
         mesh.model().seconds_in_collectives();
}

std::string loadavg() {
  std::string load;
  std::getline(std::ifstream("/proc/loadavg"), load);
  return load;
}

}  // namespace

int main(int argc, char** argv) {
  magix::Runtime runtime(&argc, &argv);
  try {
    std::vector<char*> args;  // positional arguments: D M [STEPS [MODEL_DIR]]
    magix::DType weight_dtype = magix::DType::kF32, compute_dtype = magix::DType::kF32;
    bool overlap = true;
    int64_t rows = 4, seq = 512;
    for (int i = 1; i < argc; ++i) {
      const bool has_value = i + 1 < argc;
      if (std::strcmp(argv[i], "--overlap_comm") == 0 && has_value) {
        overlap = std::strcmp(argv[++i], "false") != 0;
      } else if (std::strcmp(argv[i], "--rows") == 0 && has_value) {
        rows = std::atoll(argv[++i]);
      } else if (std::strcmp(argv[i], "--seq") == 0 && has_value) {
        seq = std::atoll(argv[++i]);
      } else if (std::strcmp(argv[i], "--bf16_model_weights") == 0) {
        weight_dtype = magix::DType::kBF16;
      } else if (std::strcmp(argv[i], "--bf16") == 0) {
        compute_dtype = magix::DType::kBF16;
      } else {
        args.push_back(argv[i]);
      }
    }
    const int d = args.size() > 1 ? std::atoi(args[0]) : 1;
    const int m = args.size() > 1 ? std::atoi(args[1]) : 1;
    const int steps = args.size() > 2 ? std::atoi(args[2]) : 3;
    const std::string load_start = loadavg();
    magix::Mesh mesh = magix::create_device_mesh({d, m});
    const nlohmann::json cfg = {{"model_type", "llama"},     {"vocab_size", 32000},
                                {"hidden_size", 768},        {"intermediate_size", 2048},
                                {"num_hidden_layers", 12},   {"num_attention_heads", 12},
                                {"num_key_value_heads", 12}, {"max_position_embeddings", 1024},
                                {"rms_norm_eps", 1e-5},      {"tie_word_embeddings", true}};
    const magix::ModelConfig config = magix::parse_model_config(cfg, "bench");
    const magix::PartitionRules rules = magix::default_partition_rules("llama");
    std::vector<magix::ParamInfo> infos = magix::expected_parameters(config);
    magix::apply_partition_rules(infos, rules, config);
    magix::shard_parameters(infos, mesh);
    const bool load = args.size() > 3;
    const magix::DecoderOptions options{.weight_dtype = weight_dtype,
                                        .compute_dtype = compute_dtype,
                                        .overlap_comm = overlap};
    mesh.world().barrier();
    const auto t_load = std::chrono::steady_clock::now();
    magix::Decoder model =
        load ? magix::load_model_hub("llama", args[3], rules, mesh)
             : magix::Decoder(config, mesh, magix::init_parameters(config, infos, 0, weight_dtype),
                              options);
    model.set_options(options);  // a loaded model: converted here
    // The slowest rank's load (or random init) time, and the largest peak RSS right after it.
    std::vector<double> load_figures = {
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count(),
        peak_rss_mib()};
    mesh.world().all_reduce(load_figures, magix::ReduceOp::kMax);
    if (load && mesh.world_rank() == 0) {
      std::printf(
          "mesh %dx%d: loaded %s in %.2f s, peak RSS after loading %.0f MiB/rank (largest)\n",
          mesh.data_size(), mesh.model_size(), args[3], load_figures[0], load_figures[1]);
    }
    magix::AdamW opt = magix::initialize_opt_state({}, model.params(), rules, mesh);
    std::vector<double> state_bytes = {0.0};
    for (size_t i = 0; i < model.params().size(); ++i) {  // parameters + fp32 moments
      state_bytes[0] += static_cast<double>(model.params().tensor(i).nbytes()) +
                        2.0 * static_cast<double>(opt.mu()[i].nbytes());
    }
    const magix::TokenBatch batch = magix::random_causal_batch(config.vocab_size, rows, seq, 42,
                                                               mesh.data_rank(), mesh.data_size());
    std::vector<double> times, all_times;
    double comm = 0.0, loss = 0.0;
    for (int s = 0; s < steps; ++s) {
      const double c0 = comm_seconds(mesh);
      const auto t0 = std::chrono::steady_clock::now();
      const magix::TrainStepResult r = magix::train_step(model, opt, batch, 1e-4);
      const double dt =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      all_times.push_back(dt);
      if (s > 0 || steps == 1) {  // the first step warms up, unless it is the only one
        times.push_back(dt);
        comm += comm_seconds(mesh) - c0;
      }
      loss = r.loss;
    }
    std::sort(times.begin(), times.end());
    std::vector<double> worst = {comm / std::max<size_t>(1, times.size()), state_bytes[0],
                                 peak_rss_mib()};
    mesh.world().all_reduce(worst, magix::ReduceOp::kMax);
    const std::string weights(magix::dtype_name(model.params().tensor(0).dtype()));
    const std::string compute(magix::dtype_name(compute_dtype));
    if (mesh.world_rank() == 0) {
      const char* threads = std::getenv("OMP_NUM_THREADS");
      nlohmann::json out{
          {"bench", "mesh"},
          {"mesh", {mesh.data_size(), mesh.model_size()}},
          {"ranks", mesh.world_size()},
          {"threads_per_rank", threads ? threads : ""},
          {"weights", weights},
          {"compute", compute},
          {"bf16_model_weights", weight_dtype == magix::DType::kBF16},
          {"bf16", compute_dtype == magix::DType::kBF16},
          {"model_dir", load ? args[3] : ""},
          {load ? "load_s" : "init_s", load_figures[0]},
          {load ? "peak_rss_after_load_mib" : "peak_rss_after_init_mib", load_figures[1]},
          {"steps", steps},
          {"tokens_per_step", rows * seq},
          {"overlap_comm", overlap},
          {"step_times_s", all_times},
          {"params_adamw_mib_per_rank", worst[1] / 1048576.0},
          {"peak_rss_mib_per_rank", worst[2]},
          {"load_average_start", load_start}};
      if (!times.empty()) {
        const double step = times[times.size() / 2];
        std::printf(
            "mesh %dx%d %s weights, %s compute: %.2f s/step (median of %zu%s), %.0f tokens/s, "
            "collectives %.2f s/step (%.0f%%), params+AdamW %.1f MiB/rank, peak RSS %.0f "
            "MiB/rank, loss %.4f\n",
            mesh.data_size(), mesh.model_size(), weights.c_str(), compute.c_str(), step,
            times.size(), steps == 1 ? ", includes the warm-up" : "",
            static_cast<double>(rows * seq) / step, worst[0],
            100.0 * worst[0] / step, worst[1] / 1048576.0, worst[2], loss);
        out["timed_steps"] = times.size();
        out["s_per_step"] = step;
        out["tokens_per_s"] = static_cast<double>(rows * seq) / step;
        out["collectives_s_per_step"] = worst[0];
        out["collectives_fraction"] = worst[0] / step;
        out["loss"] = loss;
      }
      out["load_average_end"] = loadavg();
      std::printf("%s\n", out.dump().c_str());
      std::fflush(stdout);
    }
    return 0;
  } catch (const std::exception& e) {
    runtime.abort(e.what());
  }
}
