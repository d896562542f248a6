// The demo's workflow (include/magix/demo.hpp): files, then `magix train` and `magix generate`
// through their library entry points (run_training, run_generation), then exact match.
#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <memory>

#include "demo/demo_files.hpp"
#include "io/safetensors_util.hpp"
#include "magix/demo.hpp"
#include "magix/error.hpp"
#include "magix/generate.hpp"
#include "magix/json_parse.hpp"
#include "magix/model.hpp"
#include "magix/trainer.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;

// Where the demo writes, all under one work directory.
struct DemoPaths {
  explicit DemoPaths(const fs::path& root)
      : root(root),
        model(root / "model"),
        train_file(root / "data" / "train.jsonl"),
        test_file(root / "data" / "test.jsonl"),
        checkpoints(root / "checkpoints"),
        generations(root / "generated.jsonl"),
        scored(root / "exact_match.jsonl"),
        metrics(root / "metrics.jsonl"),
        report(root / "demo_report.json") {}
  fs::path root, model, train_file, test_file, checkpoints, generations, scored, metrics, report;
  // The entries a demo run and its printed commands create: the only ones --overwrite removes.
  std::vector<fs::path> entries() const {
    return {model,
            root / "data",
            checkpoints,
            generations,
            scored,
            metrics,
            report,
            root / "checkpoints_train",
            root / "metrics_train.jsonl",
            root / "generated_again.jsonl",
            root / "hf_model"};
  }
};

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

void write_text(const fs::path& path, const std::string& text) {
  io::write_file_atomically(
      path, [&](int fd, const fs::path& tmp) { io::write_all(fd, text.data(), text.size(), tmp); });
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
  const std::string text = read_text_file_bounded(o.model_config, 4 << 20, "--model_config");
  const std::string source = o.model_config.string();
  nlohmann::ordered_json j = parse_ordered_json(text, source);
  MAGIX_CHECK(j.is_object(), "--model_config '{}' is not a JSON object, found {}", source,
              json_found(j));
  parse_model_config(parse_json(text, source), source);  // validates
  const int64_t v = json_get<int64_t>(j, "vocab_size", source);
  MAGIX_CHECK(v >= tokenizer_vocab,
              "--model_config '{}': vocab_size {} is smaller than the demo tokenizer's {} tokens",
              o.model_config.string(), v, tokenizer_vocab);
  return j;
}

void write_demo_files(const DemoOptions& o, const DemoPaths& paths, const DemoData& data) {
  if (o.overwrite) {
    for (const fs::path& p : paths.entries()) fs::remove_all(p);
  }
  // The config first (a bad --model_config leaves nothing behind), config.json written last.
  const std::string tokenizer_json = demo_tokenizer_json();
  const Tokenizer tok = Tokenizer::from_json_string(tokenizer_json);
  const std::string config = model_config_json(o, tok.vocab_size()).dump(2) + "\n";
  fs::create_directories(paths.model);
  fs::create_directories(paths.train_file.parent_path());
  write_text(paths.model / "tokenizer.json", tokenizer_json);
  write_text(paths.model / "tokenizer_config.json", demo_tokenizer_config().dump(2) + "\n");
  write_text(paths.train_file, jsonl(data.train, demo_train_record));
  write_text(paths.test_file, jsonl(data.test, demo_test_record));
  write_text(paths.model / "config.json", config);
}

// The flags of `magix train` that this demo run stands for.
TrainArgs demo_train_args(const DemoOptions& o, const DemoPaths& paths) {
  TrainArgs a;
  a.model_config = (paths.model / "config.json").string();
  a.tokenizer_name = paths.model.string();
  a.train_file = paths.train_file.string();
  a.train_data_field = "messages";
  a.use_chat_template = true;
  a.train_on = "assistant";
  // A conversation is <|user|> \n a + b </s> <|assistant|> \n sum </s>: 3·digits + 8 tokens.
  a.max_length = 3 * o.task.digits + 7;
  a.max_steps = o.steps;
  a.batch_size = o.batch_size;
  a.learning_rate = o.learning_rate;
  a.lr_schedule = "warmup_cosine";
  // The trainer takes floor(ratio × steps) warmup steps: + 0.5 keeps rounding from losing one.
  const int64_t warmup = std::clamp<int64_t>(o.warmup_steps, 0, o.steps);
  a.warmup_ratio =
      warmup == o.steps ? 1.0 : (static_cast<double>(warmup) + 0.5) / static_cast<double>(o.steps);
  a.weight_decay = o.weight_decay;
  a.checkpoint_dir = paths.checkpoints.string();
  a.save_steps = 0;  // only the last step
  a.log_steps = o.log_every;
  a.metrics_file = paths.metrics.string();
  a.progress = o.quiet ? "none" : "log";
  a.seed = o.seed;
  a.mesh_shape = o.mesh_shape;
  a.bf16 = o.bf16;
  return a;
}

GenerateArgs demo_generate_args(const DemoOptions& o, const DemoPaths& paths,
                                const std::string& checkpoint) {
  GenerateArgs g;
  g.prompts = paths.test_file.string();
  g.data_field = "prompt";
  g.use_chat_template = true;
  g.output_file = paths.generations.string();
  g.batch_size = 64;
  g.pad_to_multiple_of = 8;
  g.model_name_or_path = checkpoint;
  g.mesh_shape = o.mesh_shape;
  g.generation.max_new_tokens = o.task.digits + 2;  // the answer and </s>, one spare
  g.bf16 = o.bf16;
  return g;
}

// How to go on from the work dir: answer the prompts again, export the checkpoint as an HF
// folder, and the same training run through `magix train` (it gives the same losses).
std::vector<std::string> continue_commands(const DemoPaths& paths, const TrainArgs& t,
                                           const fs::path& ckpt, int digits) {
  return {
      fmt::format("magix generate --model_name_or_path {} --prompts {} --use_chat_template "
                  "--max_new_tokens {} --output_file {}{}",
                  ckpt.string(), paths.test_file.string(), digits + 2,
                  (paths.root / "generated_again.jsonl").string(), t.bf16 ? " --bf16" : ""),
      fmt::format("magix export --checkpoint {} --output_dir {}", ckpt.string(),
                  (paths.root / "hf_model").string()),
      fmt::format("magix train --model_config {} --train_file {} --train_data_field {} "
                  "--use_chat_template --train_on {} --max_length {} --max_steps {} "
                  "--batch_size {} --learning_rate {} --warmup_ratio {} --weight_decay {} "
                  "--seed {} --save_steps 0 --checkpoint_dir {} --metrics_file {}{}",
                  t.model_config, t.train_file, t.train_data_field, t.train_on, t.max_length,
                  t.max_steps, t.batch_size, t.learning_rate, t.warmup_ratio, t.weight_decay,
                  t.seed, (paths.root / "checkpoints_train").string(),
                  (paths.root / "metrics_train.jsonl").string(), t.bf16 ? " --bf16" : ""),
  };
}

int64_t count_parameters(const ModelConfig& config) {
  int64_t total = 0;
  for (const ParamInfo& p : expected_parameters(config)) {
    int64_t n = 1;
    for (int64_t d : p.global_shape) n *= d;
    total += n;
  }
  return total;
}

}  // namespace

DemoReport run_demo(const DemoOptions& o, const Mesh& mesh) {
  MAGIX_CHECK(o.steps > 0, "--steps must be positive, got {}", o.steps);
  MAGIX_CHECK(o.batch_size > 0, "--batch_size must be positive, got {}", o.batch_size);
  MAGIX_CHECK(o.log_every > 0, "--log_every must be positive, got {}", o.log_every);
  const DemoPaths paths(o.work_dir);
  check_work_dir(o, paths);
  const DemoData data = make_demo_data(o.task);
  const bool rank0 = mesh.world_rank() == 0;
  const bool talk = rank0 && !o.quiet;
  mesh.world().barrier();  // every rank has checked the work dir before rank 0 writes into it
  if (rank0) write_demo_files(o, paths, data);
  mesh.world().barrier();

  const ModelConfig config = load_model_config(paths.model / "config.json");
  const int64_t num_params = count_parameters(config);
  if (talk) {
    fmt::print(
        "magix demo: {}-digit addition, {} training / {} held-out problems; a {}-parameter "
        "Llama ({} layers, hidden {}) trained from scratch on a {}x{} mesh\n",
        o.task.digits, data.train.size(), data.test.size(), num_params, config.num_layers,
        config.hidden_size, mesh.data_size(), mesh.model_size());
    fmt::print(
        "a training conversation: user \"{}\" -> assistant \"{}\" ({} + {} = {}, the "
        "sum's digits reversed)\n",
        data.train[0].prompt, data.train[0].answer, data.train[0].a, data.train[0].b,
        data.train[0].a + data.train[0].b);
    std::fflush(stdout);
  }

  // 1. Train through the library entry point of `magix train`, with a checkpoint at the end.
  const TrainArgs train_args = demo_train_args(o, paths);
  const double cpu0 = cpu_seconds();
  TrainSummary ts;
  {
    std::unique_ptr<Trainable> model = make_full_trainable(train_args, mesh);
    ts = run_training(train_args, mesh, *model);
  }
  const double train_cpu = cpu_seconds() - cpu0;
  MAGIX_CHECK(!ts.losses.empty() && !ts.last_checkpoint.empty(),
              "the demo's training took no step or saved no checkpoint");
  DemoReport rep;
  rep.work_dir = paths.root;
  rep.checkpoint = ts.last_checkpoint;
  rep.steps = ts.end_step;
  rep.loss_first = ts.losses.front();
  const size_t tail = std::min<size_t>(ts.losses.size(), 50);
  for (size_t i = ts.losses.size() - tail; i < ts.losses.size(); ++i) rep.loss_last += ts.losses[i];
  rep.loss_last /= static_cast<double>(tail);
  rep.train_seconds = ts.seconds;
  rep.train_tokens_per_second = ts.tokens_per_s;
  rep.train_row_tokens_per_second =
      static_cast<double>(ts.losses.size() * o.batch_size * train_args.max_length) / ts.seconds;

  // 2. Answer the held-out prompts from the checkpoint through `magix generate`'s entry point.
  const GenerationSummary gs = run_generation(demo_generate_args(o, paths, rep.checkpoint), mesh);
  rep.generate_seconds = gs.seconds;
  rep.generate_tokens_per_second =
      gs.seconds > 0 ? static_cast<double>(gs.generated_tokens) / gs.seconds : 0.0;

  // 3. Exact match (every rank reads the file world rank 0 wrote, so all return the same).
  mesh.world().barrier();
  const std::vector<std::string> answers =
      demo::read_generations(paths.generations, data.test.size());
  rep.test_examples = static_cast<int64_t>(data.test.size());
  std::string scored;
  for (size_t i = 0; i < data.test.size(); ++i) {
    const bool ok = answers[i] == data.test[i].answer;
    rep.correct += ok;
    nlohmann::ordered_json line = demo_test_record(data.test[i]);
    line["generated"] = answers[i];
    line["correct"] = ok;
    scored += line.dump() + "\n";
  }
  rep.accuracy = static_cast<double>(rep.correct) / static_cast<double>(rep.test_examples);
  rep.commands = continue_commands(paths, train_args, rep.checkpoint, o.task.digits);

  if (rank0) {
    write_text(paths.scored, scored);
    const nlohmann::ordered_json j = {
        {"task",
         {{"digits", o.task.digits},
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
    fmt::print(
        "trained {} steps in {:.1f} s ({:.1f} s CPU on rank 0): loss {:.4f} -> {:.4f} "
        "(first step -> mean of the last {}), {:.0f} tokens/s ({:.0f} counted assistant "
        "tokens/s)\n",
        rep.steps, rep.train_seconds, train_cpu, rep.loss_first, rep.loss_last, tail,
        rep.train_row_tokens_per_second, rep.train_tokens_per_second);
    fmt::print("checkpoint: {}\n", rep.checkpoint.string());
    fmt::print("generated answers to {} held-out prompts in {:.2f} s ({:.0f} tokens/s)\n",
               rep.test_examples, rep.generate_seconds, rep.generate_tokens_per_second);
    for (size_t i = 0; i < std::min<size_t>(3, data.test.size()); ++i) {
      const DemoProblem& p = data.test[i];
      fmt::print("  {} -> {} (expected {}: {} + {} = {})\n", p.prompt, answers[i], p.answer, p.a,
                 p.b, p.a + p.b);
    }
  }
  if (rank0) {
    fmt::print("exact match on held-out prompts: {}/{} = {:.1f}%\n", rep.correct, rep.test_examples,
               100.0 * rep.accuracy);
    fmt::print("work dir: {}\n", paths.root.string());
    std::fflush(stdout);
  }
  mesh.world().barrier();
  return rep;
}

}  // namespace magix
