// The demo's workflow (include/magix/demo.hpp): files, training, greedy answers, exact match.
#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>

#include "io/safetensors_util.hpp"
#include "magix/data_loader.hpp"
#include "magix/dataset.hpp"
#include "magix/demo.hpp"
#include "magix/error.hpp"
#include "magix/model.hpp"
#include "magix/sharding.hpp"
#include "magix/train_step.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Where the demo writes, all under one work directory.
struct DemoPaths {
  explicit DemoPaths(const fs::path& root)
      : root(root),
        model(root / "model"),
        train_file(root / "data" / "train.jsonl"),
        test_file(root / "data" / "test.jsonl"),
        checkpoints(root / "checkpoints"),
        generations(root / "generations.jsonl"),
        metrics(root / "metrics.jsonl"),
        report(root / "demo_report.json") {}
  fs::path root, model, train_file, test_file, checkpoints, generations, metrics, report;
  // The entries a demo run creates: the only ones --overwrite removes.
  std::vector<fs::path> entries() const {
    return {model, root / "data", checkpoints, generations, metrics, report};
  }
};

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void write_text(const fs::path& path, const std::string& text) {
  io::write_file_atomically(path, [&](int fd, const fs::path& tmp) {
    io::write_all(fd, text.data(), text.size(), tmp);
  });
}

std::string jsonl(const std::vector<DemoProblem>& problems,
                  nlohmann::ordered_json (*record)(const DemoProblem&)) {
  std::string out;
  for (const DemoProblem& p : problems) out += record(p).dump() + "\n";
  return out;
}

// Every rank checks (so that all fail alike); world rank 0 then clears and writes.
void check_work_dir(const DemoOptions& o, const DemoPaths& paths) {
  MAGIX_CHECK(!o.work_dir.empty(), "--work_dir must not be empty");
  if (!fs::exists(o.work_dir)) return;
  MAGIX_CHECK(fs::is_directory(o.work_dir), "--work_dir '{}' exists and is not a folder",
              o.work_dir.string());
  if (o.overwrite) return;
  for (const fs::path& p : paths.entries()) {
    MAGIX_CHECK(!fs::exists(p),
                "--work_dir '{}' already holds a demo run ({} exists); pass --overwrite to "
                "replace it or choose another folder",
                o.work_dir.string(), p.filename().string());
  }
}

// The model config: the user's file (its vocabulary must cover the tokenizer's) or the default.
nlohmann::ordered_json model_config_json(const DemoOptions& o, int64_t tokenizer_vocab) {
  // Rounded up to a multiple of 64 so that the vocabulary splits over model axes up to 64.
  const int64_t vocab = (tokenizer_vocab + 63) / 64 * 64;
  if (o.model_config.empty()) return demo_model_config(vocab);
  std::ifstream in(o.model_config);
  MAGIX_CHECK(in.good(), "cannot open --model_config '{}'", o.model_config.string());
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(in, nullptr, false);
  MAGIX_CHECK(!j.is_discarded() && j.is_object(), "--model_config '{}' is not a JSON object",
              o.model_config.string());
  parse_model_config(nlohmann::json::parse(j.dump()), o.model_config.string());  // validates
  const int64_t v = j.value("vocab_size", int64_t{0});
  MAGIX_CHECK(v >= tokenizer_vocab,
              "--model_config '{}': vocab_size {} is smaller than the demo tokenizer's {} tokens",
              o.model_config.string(), v, tokenizer_vocab);
  return j;
}

void write_demo_files(const DemoOptions& o, const DemoPaths& paths, const DemoData& data) {
  if (o.overwrite) {
    for (const fs::path& p : paths.entries()) fs::remove_all(p);
  }
  fs::create_directories(paths.model);
  fs::create_directories(paths.train_file.parent_path());
  const std::string tokenizer_json = demo_tokenizer_json();
  const Tokenizer tok = Tokenizer::from_json_string(tokenizer_json);
  write_text(paths.model / "tokenizer.json", tokenizer_json);
  write_text(paths.model / "tokenizer_config.json", demo_tokenizer_config().dump(2) + "\n");
  write_text(paths.model / "config.json", model_config_json(o, tok.vocab_size()).dump(2) + "\n");
  write_text(paths.train_file, jsonl(data.train, demo_train_record));
  write_text(paths.test_file, jsonl(data.test, demo_test_record));
}

struct TrainOutcome {
  std::vector<double> losses;
  int64_t counted_tokens = 0;
  int64_t row_tokens = 0;
  double seconds = 0;
};

// Phase-1 training loop: train_step over DataLoader batches with a warmup-cosine schedule.
TrainOutcome train_demo(const DemoOptions& o, const DemoPaths& paths, const Tokenizer& tok,
                        Decoder& model, const Mesh& mesh) {
  DatasetOptions d;
  d.path = paths.train_file;
  d.data_field = "messages";
  d.encode.use_chat_template = true;
  d.encode.train_on = TrainOn::kAssistant;
  d.encode.max_length = 4 * o.task.digits + 8;
  std::vector<Example> examples = load_examples(d, tok);
  int64_t longest = 0;
  for (const Example& e : examples) longest = std::max<int64_t>(longest, e.ids.size());

  LoaderOptions lo;
  lo.global_batch = o.batch_size;
  lo.seed = o.seed;
  lo.data_rank = mesh.data_rank();
  lo.data_size = mesh.data_size();
  lo.max_length = longest - 1;
  lo.pad_id = training_pad_id(tok);
  DataLoader loader(std::move(examples), lo);

  AdamWOptions ao;
  ao.weight_decay = o.weight_decay;
  AdamW opt = initialize_opt_state(ao, model.params(),
                                   default_partition_rules(std::string(family_name(
                                       model.config().family))),
                                   mesh);
  LrSchedule schedule;
  schedule.peak = o.learning_rate;
  schedule.warmup_steps = std::min(o.warmup_steps, o.steps);
  schedule.decay_end = o.steps;

  TrainOutcome out;
  const bool talk = mesh.world_rank() == 0 && !o.quiet;
  const auto t0 = Clock::now();
  for (int64_t step = 0; step < o.steps; ++step) {
    const TokenBatch batch = loader.next();
    const TrainStepResult r = train_step(model, opt, batch, schedule(step));
    out.losses.push_back(r.loss);
    out.counted_tokens += r.tokens;
    out.row_tokens += o.batch_size * batch.seq;
    if (talk && (step % o.log_every == 0 || step + 1 == o.steps)) {
      fmt::print("step {:5d}/{}  loss {:.4f}  lr {:.2e}  {:.0f} tok/s\n", step + 1, o.steps,
                 r.loss, schedule(step),
                 static_cast<double>(out.counted_tokens) / seconds_since(t0));
      std::fflush(stdout);
    }
  }
  out.seconds = seconds_since(t0);
  return out;
}

// Phase-1 greedy answers: the whole prompt re-run each step (prompts are a dozen tokens).
// Data rank r answers prompts r, r + D, ...; results are summed over the world.
std::vector<std::string> greedy_answers(const DemoOptions& o, const Tokenizer& tok,
                                        Decoder& model, const std::vector<DemoProblem>& test,
                                        const Mesh& mesh, int64_t* generated_tokens) {
  const int64_t n = static_cast<int64_t>(test.size()), D = mesh.data_size();
  const int64_t per_rank = (n + D - 1) / D;
  const int32_t eos = tok.eos_id().value();
  const int64_t max_new = o.task.digits + 2;
  std::vector<std::vector<int32_t>> rows, generated(per_rank);
  for (int64_t i = 0; i < per_rank; ++i) {
    const int64_t k = std::min(i * D + mesh.data_rank(), n - 1);  // past the end: a filler
    rows.push_back(encode_prompt(tok, test[k].prompt, /*use_chat_template=*/true));
  }
  std::vector<bool> done(per_rank, false);
  for (int64_t t = 0; t < max_new; ++t) {
    const Tensor logits = model.logits(make_causal_batch(rows, 0));  // (B, T, V)
    const int64_t T = logits.shape()[1], V = logits.shape()[2];
    const float* l = logits.data<float>();
    for (int64_t i = 0; i < per_rank; ++i) {
      const float* row = l + (i * T + static_cast<int64_t>(rows[i].size()) - 1) * V;
      const auto next = static_cast<int32_t>(std::max_element(row, row + V) - row);
      rows[i].push_back(next);  // finished rows keep growing, unread (shapes stay aligned)
      if (done[i]) continue;
      if (next == eos) {
        done[i] = true;
      } else {
        generated[i].push_back(next);
      }
    }
  }
  // Gather texts on every rank: a fixed-width byte buffer per prompt, summed over the world
  // from the model-rank-0 ranks (model ranks hold identical results).
  const int64_t width = max_new * 4;
  std::vector<double> bytes(static_cast<size_t>(n * width), 0.0);
  std::vector<double> count(1, 0.0);
  if (mesh.model_rank() == 0) {
    for (int64_t i = 0; i < per_rank; ++i) {
      const int64_t k = i * D + mesh.data_rank();
      if (k >= n) continue;
      const std::string text = tok.decode(generated[i]);
      for (int64_t c = 0; c < std::min<int64_t>(width, text.size()); ++c) {
        bytes[k * width + c] = static_cast<unsigned char>(text[c]);
      }
      count[0] += static_cast<double>(generated[i].size()) + (done[i] ? 1 : 0);
    }
  }
  mesh.world().all_reduce(bytes, ReduceOp::kSum);
  mesh.world().all_reduce(count, ReduceOp::kSum);
  *generated_tokens = static_cast<int64_t>(count[0]);
  std::vector<std::string> answers(n);
  for (int64_t k = 0; k < n; ++k) {
    for (int64_t c = 0; c < width && bytes[k * width + c] != 0; ++c) {
      answers[k] += static_cast<char>(static_cast<int>(bytes[k * width + c]));
    }
  }
  return answers;
}

std::vector<std::string> continue_commands(const DemoPaths& paths, const fs::path& ckpt) {
  return {
      fmt::format("magix generate --model_name_or_path {} --tokenizer_name_or_path {} "
                  "--prompts {} --use_chat_template --output_file {}",
                  ckpt.string(), paths.model.string(), paths.test_file.string(),
                  (paths.root / "generated.jsonl").string()),
      fmt::format("magix export --checkpoint {} --output_dir {}", ckpt.string(),
                  (paths.root / "hf_model").string()),
  };
}

}  // namespace

DemoReport run_demo(const DemoOptions& o, const Mesh& mesh) {
  MAGIX_CHECK(o.steps > 0, "--steps must be positive, got {}", o.steps);
  MAGIX_CHECK(o.batch_size > 0, "--batch_size must be positive, got {}", o.batch_size);
  MAGIX_CHECK(o.log_every > 0, "--log_every must be positive, got {}", o.log_every);
  const DemoPaths paths(o.work_dir);
  check_work_dir(o, paths);
  const DemoData data = make_demo_data(o.task);
  const bool talk = mesh.world_rank() == 0 && !o.quiet;
  if (mesh.world_rank() == 0) write_demo_files(o, paths, data);
  mesh.world().barrier();

  const Tokenizer tok = Tokenizer::load(paths.model.string());
  const ModelConfig config = load_model_config(paths.model / "config.json");
  std::vector<ParamInfo> infos = expected_parameters(config);
  shard_parameters(infos, mesh);
  int64_t num_params = 0;
  for (const ParamInfo& p : infos) {
    int64_t n = 1;
    for (int64_t d : p.global_shape) n *= d;
    num_params += n;
  }
  Decoder model(config, mesh, init_parameters(config, infos, o.seed));
  if (talk) {
    fmt::print(
        "magix demo: {}-digit addition, {} training / {} held-out problems, a {}-parameter "
        "Llama ({} layers, hidden {}) on mesh {}x{}\n",
        o.task.digits, data.train.size(), data.test.size(), num_params, config.num_layers,
        config.hidden_size, mesh.data_size(), mesh.model_size());
    fmt::print("example: user \"{}\" -> assistant \"{}\" ({} + {} = {}, digits reversed)\n",
               data.train[0].prompt, data.train[0].answer, data.train[0].a, data.train[0].b,
               data.train[0].a + data.train[0].b);
    std::fflush(stdout);
  }

  DemoReport rep;
  rep.work_dir = paths.root;
  const double cpu0 = cpu_seconds();
  const TrainOutcome tr = train_demo(o, paths, tok, model, mesh);
  rep.steps = o.steps;
  rep.loss_first = tr.losses.front();
  const size_t tail = std::min<size_t>(tr.losses.size(), 50);
  for (size_t i = tr.losses.size() - tail; i < tr.losses.size(); ++i) rep.loss_last += tr.losses[i];
  rep.loss_last /= static_cast<double>(tail);
  rep.train_seconds = tr.seconds;
  rep.train_tokens_per_second = static_cast<double>(tr.counted_tokens) / tr.seconds;
  rep.train_row_tokens_per_second = static_cast<double>(tr.row_tokens) / tr.seconds;
  const double train_cpu = cpu_seconds() - cpu0;
  rep.checkpoint = paths.checkpoints / fmt::format("{:06d}", o.steps);

  const auto g0 = Clock::now();
  int64_t gen_tokens = 0;
  const std::vector<std::string> answers =
      greedy_answers(o, tok, model, data.test, mesh, &gen_tokens);
  rep.generate_seconds = seconds_since(g0);
  rep.generate_tokens_per_second = static_cast<double>(gen_tokens) / rep.generate_seconds;
  rep.test_examples = static_cast<int64_t>(data.test.size());
  std::string gen_text;
  for (size_t i = 0; i < data.test.size(); ++i) {
    const bool ok = answers[i] == data.test[i].answer;
    rep.correct += ok;
    nlohmann::ordered_json line = demo_test_record(data.test[i]);
    line["generated"] = answers[i];
    line["correct"] = ok;
    gen_text += line.dump() + "\n";
  }
  rep.accuracy = static_cast<double>(rep.correct) / static_cast<double>(rep.test_examples);
  rep.commands = continue_commands(paths, rep.checkpoint);

  if (mesh.world_rank() == 0) {
    write_text(paths.generations, gen_text);
    const nlohmann::ordered_json j = {
        {"task", {{"digits", o.task.digits},
                  {"train_examples", o.task.train_examples},
                  {"test_examples", o.task.test_examples},
                  {"seed", o.task.seed}}},
        {"mesh", {mesh.data_size(), mesh.model_size()}},
        {"parameters", num_params},
        {"steps", rep.steps},
        {"batch_size", o.batch_size},
        {"learning_rate", o.learning_rate},
        {"loss_first", rep.loss_first},
        {"loss_last", rep.loss_last},
        {"train_seconds", rep.train_seconds},
        {"train_cpu_seconds_rank0", train_cpu},
        {"train_tokens_per_second", rep.train_tokens_per_second},
        {"train_row_tokens_per_second", rep.train_row_tokens_per_second},
        {"generate_seconds", rep.generate_seconds},
        {"generate_tokens_per_second", rep.generate_tokens_per_second},
        {"correct", rep.correct},
        {"accuracy", rep.accuracy},
        {"checkpoint", rep.checkpoint.string()},
        {"commands", rep.commands}};
    write_text(paths.report, j.dump(2) + "\n");
  }
  if (talk) {
    fmt::print("trained {} steps in {:.1f} s ({:.1f} s CPU on rank 0): loss {:.4f} -> {:.4f}, "
               "{:.0f} assistant tokens/s ({:.0f} tokens/s over whole rows)\n",
               rep.steps, rep.train_seconds, train_cpu, rep.loss_first, rep.loss_last,
               rep.train_tokens_per_second, rep.train_row_tokens_per_second);
    fmt::print("generated {} held-out answers in {:.2f} s ({:.0f} tokens/s)\n",
               rep.test_examples, rep.generate_seconds, rep.generate_tokens_per_second);
  }
  if (mesh.world_rank() == 0) {
    fmt::print("exact match on held-out prompts: {}/{} = {:.1f}%\n", rep.correct,
               rep.test_examples, 100.0 * rep.accuracy);
    fmt::print("work dir: {}\n", paths.root.string());
  }
  mesh.world().barrier();
  return rep;
}

}  // namespace magix
