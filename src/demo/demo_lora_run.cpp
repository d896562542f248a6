// The pretrained-model demo's workflow (include/magix/demo_lora.hpp): files, answers before
// training (run_generation), LoRA training (make_lora_trainable + run_training), answers after,
// a few chat answers, and the merged model exported as GGUF and as an HF folder.
#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>

#include "demo/demo_files.hpp"
#include "io/safetensors_util.hpp"
#include "magix/checkpoint.hpp"
#include "magix/dataset.hpp"
#include "magix/demo_lora.hpp"
#include "magix/error.hpp"
#include "magix/generate.hpp"
#include "magix/gguf_export.hpp"
#include "magix/lora.hpp"
#include "magix/model.hpp"
#include "magix/tokenizer.hpp"
#include "magix/trainer.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;

// A few prompts to chat with after training: the task in other words and outside it.
const char* const kChatPrompts[] = {
    "Write this date in ISO 8601 form (YYYY-MM-DD): July 20, 1969",
    "What is the ISO 8601 form of the date 1 January 2000?",
    "What is the capital of France?",
};
constexpr int64_t kChatMaxNewTokens = 40;

// Where the demo writes, all under one work directory.
struct LoraDemoPaths {
  explicit LoraDemoPaths(const fs::path& root)
      : root(root),
        train_file(root / "data" / "train.jsonl"),
        test_file(root / "data" / "test.jsonl"),
        chat_file(root / "data" / "chat.jsonl"),
        checkpoints(root / "checkpoints"),
        before(root / "generated_before.jsonl"),
        after(root / "generated_after.jsonl"),
        chat(root / "chat.jsonl"),
        metrics(root / "metrics.jsonl"),
        exports(root / "export"),
        report(root / "demo_report.json") {}
  fs::path root, train_file, test_file, chat_file, checkpoints, before, after, chat, metrics,
      exports, report;
  // The entries a demo run creates: the only ones --overwrite removes.
  std::vector<fs::path> entries() const {
    return {root / "data", checkpoints, before, after, chat, metrics, root / "metrics.svg",
            exports, report};
  }
};

void write_text(const fs::path& path, const std::string& text) {
  io::write_file_atomically(
      path, [&](int fd, const fs::path& tmp) { io::write_all(fd, text.data(), text.size(), tmp); });
}

// Every rank checks (so that all fail alike); world rank 0 then clears and writes.
void check_inputs(const LoraDemoOptions& o, const LoraDemoPaths& paths) {
  MAGIX_CHECK(o.steps > 0, "--steps must be positive, got {}", o.steps);
  MAGIX_CHECK(o.batch_size > 0, "--batch_size must be positive, got {}", o.batch_size);
  MAGIX_CHECK(o.log_every > 0, "--log_every must be positive, got {}", o.log_every);
  MAGIX_CHECK(o.warmup_steps >= 0, "--warmup_steps must be >= 0, got {}", o.warmup_steps);
  MAGIX_CHECK(o.max_new_tokens > 0, "--max_new_tokens must be positive, got {}", o.max_new_tokens);
  parse_gguf_outtype(o.outtype);  // a bad --outtype fails before the training, not after
  MAGIX_CHECK(fs::is_regular_file(o.gguf),
              "the demo's model {} is not a file: run scripts/fetch_smollm2.sh (it downloads "
              "SmolLM2-135M-Instruct once into magix's cache, where the demo looks by "
              "default), or pass --gguf FILE.gguf",
              o.gguf.string());
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

void write_demo_files(const LoraDemoOptions& o, const LoraDemoPaths& paths, const DateData& data) {
  if (o.overwrite) {
    for (const fs::path& p : paths.entries()) fs::remove_all(p);
  }
  fs::create_directories(paths.train_file.parent_path());
  std::string train, test, chat;
  for (const DateProblem& p : data.train) train += date_train_record(p).dump() + "\n";
  for (const DateProblem& p : data.test) test += date_test_record(p).dump() + "\n";
  for (const char* p : kChatPrompts) chat += nlohmann::ordered_json{{"prompt", p}}.dump() + "\n";
  write_text(paths.train_file, train);
  write_text(paths.test_file, test);
  write_text(paths.chat_file, chat);
}

// The longest training conversation in tokens, less one (the trainer's rows hold max_length + 1
// tokens): no example is cut, and no row is longer than needed.
int64_t training_max_length(const Tokenizer& tok, const DateData& data) {
  EncodeOptions enc;
  enc.use_chat_template = true;
  enc.train_on = TrainOn::kAssistant;
  enc.max_length = 1 << 20;
  check_chat_template(tok, std::nullopt);
  int64_t longest = 0;
  for (const DateProblem& p : data.train) {
    Record r;
    r.is_messages = true;
    r.messages = date_train_record(p)["messages"];
    longest = std::max<int64_t>(longest, static_cast<int64_t>(
                                             encode_record(r, tok, enc).ids.size()));
  }
  return std::max<int64_t>(1, longest - 1);
}

TrainArgs demo_train_args(const LoraDemoOptions& o, const LoraDemoPaths& paths,
                          int64_t max_length) {
  TrainArgs a;
  a.model_type.clear();  // the GGUF file's architecture, whichever it is
  a.model_name = o.gguf.string();
  a.train_file = paths.train_file.string();
  a.train_data_field = "messages";
  a.use_chat_template = true;
  a.train_on = "assistant";
  a.max_length = max_length;
  a.max_steps = o.steps;
  a.batch_size = o.batch_size;
  a.learning_rate = o.learning_rate;
  a.lr_schedule = "warmup_cosine";
  // The trainer takes floor(ratio × steps) warmup steps: + 0.5 keeps rounding from losing one.
  const int64_t warmup = std::clamp<int64_t>(o.warmup_steps, 0, o.steps);
  a.warmup_ratio =
      warmup == o.steps ? 1.0 : (static_cast<double>(warmup) + 0.5) / static_cast<double>(o.steps);
  a.checkpoint_dir = paths.checkpoints.string();
  a.save_steps = 0;  // only the last step
  a.log_steps = o.log_every;
  a.metrics_file = paths.metrics.string();
  a.progress = o.quiet ? "none" : "auto";  // a one-line bar on a terminal, else log lines
  a.seed = o.seed;
  a.mesh_shape = o.mesh_shape;
  a.bf16 = o.bf16;
  return a;
}

// Greedy answers to the prompts of `prompts` (field "prompt") with the chat template, from the
// base model with `lora` merged at load when given.
GenerationSummary answer(const LoraDemoOptions& o, const fs::path& prompts, const fs::path& out,
                         const std::string& lora, int64_t max_new_tokens, const Mesh& mesh) {
  GenerateArgs g;
  g.prompts = prompts.string();
  g.data_field = "prompt";
  g.use_chat_template = true;
  g.output_file = out.string();
  g.batch_size = 64;
  g.pad_to_multiple_of = 8;
  g.model_name_or_path = o.gguf.string();
  g.lora = lora;
  g.mesh_shape = o.mesh_shape;
  g.bf16 = o.bf16;
  g.generation.max_new_tokens = max_new_tokens;
  // Greedy and this length whatever the model's generation_config.json says.
  g.given = {"sample", "temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens",
             "max_length"};
  return run_generation(g, mesh);
}


int64_t count_correct(const std::vector<std::string>& answers, const DateData& data) {
  int64_t n = 0;
  for (size_t i = 0; i < data.test.size(); ++i) n += date_answer_correct(answers[i], data.test[i]);
  return n;
}

// Answers that hold the ISO date somewhere (with other text around it): not counted as right.
int64_t count_containing(const std::vector<std::string>& answers, const DateData& data) {
  int64_t n = 0;
  for (size_t i = 0; i < data.test.size(); ++i) {
    n += answers[i].find(data.test[i].answer) != std::string::npos;
  }
  return n;
}

// One line for the console: newlines shown as \n, cut to `width` characters.
std::string one_line(const std::string& s, size_t width = 60) {
  std::string out;
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  if (out.size() > width) {
    while (width > 0 && (static_cast<unsigned char>(out[width]) & 0xC0) == 0x80) --width;
    out = out.substr(0, width) + "...";  // cut before a UTF-8 continuation byte, never in it
  }
  return out;
}

void print_examples(const std::vector<std::string>& answers, const DateData& data) {
  for (size_t i = 0; i < std::min<size_t>(3, data.test.size()); ++i) {
    const DateProblem& p = data.test[i];
    fmt::print("  {} -> \"{}\" ({})\n", date_in_words(p.year, p.month, p.day, p.style),
               one_line(answers[i]), date_answer_correct(answers[i], p) ? "right" : "wrong");
  }
}

// The merged model (base + adapters) as an HF folder, as `magix export` writes it.
void export_hf(const fs::path& step, const fs::path& out) {
  ModelConfig config;
  const ParameterSet params = load_lora_merged_parameters(step, "", std::nullopt, &config);
  const CheckpointReader reader(step);
  std::vector<fs::path> files;
  for (const std::string& name : reader.extra_files()) {
    if (name != "config.json") files.push_back(reader.checked_file(name));
  }
  HfExportOptions options;
  options.overwrite = true;
  write_hf_folder(out, reader.checked_file("config.json"), files, params, options);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

fs::path default_smollm2_gguf() {
  fs::path cache;
  if (const char* c = std::getenv("MAGIX_CACHE"); c && *c) {
    cache = c;
  } else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) {
    cache = fs::path(x) / "magix";
  } else if (const char* h = std::getenv("HOME"); h && *h) {
    cache = fs::path(h) / ".cache" / "magix";
  } else {
    MAGIX_FAIL("cannot place magix's cache: MAGIX_CACHE, XDG_CACHE_HOME and HOME are all unset");
  }
  return cache / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf";
}

LoraDemoReport run_lora_demo(const LoraDemoOptions& o, const Mesh& mesh) {
  const auto t0 = std::chrono::steady_clock::now();
  const LoraDemoPaths paths(o.work_dir);
  check_inputs(o, paths);
  const DateData data = make_date_data(o.task);
  const bool rank0 = mesh.world_rank() == 0;
  const bool talk = rank0 && !o.quiet;
  mesh.world().barrier();  // every rank has checked the work dir before rank 0 writes into it
  if (rank0) write_demo_files(o, paths, data);
  mesh.world().barrier();

  LoraDemoReport rep;
  rep.work_dir = paths.root;
  rep.test_examples = static_cast<int64_t>(data.test.size());
  const Tokenizer tok = Tokenizer::load(o.gguf.string());
  rep.max_length = training_max_length(tok, data);
  if (talk) {
    const DateProblem& p = data.train[0];
    fmt::print(
        "magix demo --model smollm2: LoRA fine-tuning of {} on writing dates in ISO 8601 form; "
        "{} training / {} held-out dates, {}x{} mesh\n",
        o.gguf.filename().string(), data.train.size(), data.test.size(), mesh.data_size(),
        mesh.model_size());
    fmt::print("a training conversation: user \"{}\" -> assistant \"{}\"\n", p.prompt, p.answer);
    std::fflush(stdout);
  }

  // 1. The base model's answers to the held-out prompts.
  answer(o, paths.test_file, paths.before, "", o.max_new_tokens, mesh);
  mesh.world().barrier();
  const std::vector<std::string> before = demo::read_generations(paths.before, data.test.size());
  rep.correct_before = count_correct(before, data);
  rep.containing_before = count_containing(before, data);
  if (rank0) {
    fmt::print("held-out accuracy before training: {}/{}\n", rep.correct_before,
               rep.test_examples);
    fmt::print("  (exact: the ISO date alone; {}/{} answers hold it among other text)\n",
               rep.containing_before, rep.test_examples);
    if (talk) print_examples(before, data);
    std::fflush(stdout);
  }

  // 2. LoRA training through the library entry points of `magix train-lora`.
  const TrainArgs train_args = demo_train_args(o, paths, rep.max_length);
  LoraConfig lora;
  lora.rank = o.lora_rank;
  lora.alpha = o.lora_alpha;
  if (talk) {
    fmt::print("training LoRA adapters (rank {}, alpha {}): {} steps of {} conversations, "
               "max_length {}, learning rate {}{}\n",
               lora.rank, lora.alpha, o.steps, o.batch_size, rep.max_length, o.learning_rate,
               o.bf16 ? ", bf16" : "");
    std::fflush(stdout);
  }
  TrainSummary ts;
  {
    std::unique_ptr<LoraTrainable> model = make_lora_trainable(train_args, lora, mesh);
    ts = run_training(train_args, mesh, *model);
  }
  MAGIX_CHECK(!ts.losses.empty() && !ts.last_checkpoint.empty(),
              "the demo's training took no step or saved no checkpoint");
  rep.checkpoint = ts.last_checkpoint;
  rep.steps = ts.end_step;
  rep.loss_first = ts.losses.front();
  rep.loss_last = ts.losses.back();
  rep.train_seconds = ts.seconds;
  rep.train_input_tokens_per_second = ts.input_tokens_per_s;
  if (talk) {
    fmt::print("trained {} steps in {:.1f} s: loss {:.4f} -> {:.4f}, {:.0f} input tokens/s\n",
               rep.steps, rep.train_seconds, rep.loss_first, rep.loss_last,
               rep.train_input_tokens_per_second);
    std::fflush(stdout);
  }

  // 3. The same prompts with the adapters merged, then a few chat prompts.
  answer(o, paths.test_file, paths.after, rep.checkpoint.string(), o.max_new_tokens, mesh);
  answer(o, paths.chat_file, paths.chat, rep.checkpoint.string(), kChatMaxNewTokens, mesh);
  mesh.world().barrier();
  const std::vector<std::string> after = demo::read_generations(paths.after, data.test.size());
  rep.correct_after = count_correct(after, data);
  rep.containing_after = count_containing(after, data);
  const std::vector<std::string> chat = demo::read_generations(paths.chat, std::size(kChatPrompts));
  for (size_t i = 0; i < chat.size(); ++i) rep.chat.emplace_back(kChatPrompts[i], chat[i]);
  if (rank0) {
    fmt::print("held-out accuracy after training: {}/{}\n", rep.correct_after, rep.test_examples);
    fmt::print("  (exact: the ISO date alone; {}/{} answers hold it among other text)\n",
               rep.containing_after, rep.test_examples);
    if (talk) {
      print_examples(after, data);
      fmt::print("chat with the fine-tuned model:\n");
      for (const auto& [prompt, reply] : rep.chat) {
        fmt::print("  user: {}\n  assistant: {}\n", prompt, one_line(reply, 200));
      }
    }
    std::fflush(stdout);
  }

  // 4. The merged model as GGUF and as an HF folder (world rank 0: whole tensors, no mesh).
  rep.gguf_export = paths.exports / fmt::format("model-{}.gguf", o.outtype);
  rep.hf_export = paths.exports / "hf";
  if (rank0) {
    export_checkpoint_gguf(rep.checkpoint, rep.gguf_export, o.outtype, "", true);
    export_hf(rep.checkpoint, rep.hf_export);
  }
  mesh.world().barrier();
  rep.total_seconds = seconds_since(t0);

  if (rank0) {
    nlohmann::ordered_json chat_json = nlohmann::ordered_json::array();
    for (const auto& [prompt, reply] : rep.chat) {
      chat_json.push_back({{"prompt", prompt}, {"generated", reply}});
    }
    const nlohmann::ordered_json j = {
        {"model", o.gguf.string()},
        {"task",
         {{"train_examples", o.task.train_examples},
          {"test_examples", o.task.test_examples},
          {"seed", o.task.seed},
          {"years", {o.task.first_year, o.task.last_year}}}},
        {"mesh", {mesh.data_size(), mesh.model_size()}},
        {"steps", rep.steps},
        {"batch_size", o.batch_size},
        {"max_length", rep.max_length},
        {"learning_rate", o.learning_rate},
        {"lora_rank", o.lora_rank},
        {"lora_alpha", o.lora_alpha},
        {"bf16", o.bf16},
        {"loss_first", rep.loss_first},
        {"loss_last", rep.loss_last},
        {"train_seconds", rep.train_seconds},
        {"train_input_tokens_per_second", rep.train_input_tokens_per_second},
        {"correct_before", rep.correct_before},
        {"correct_after", rep.correct_after},
        {"containing_before", rep.containing_before},
        {"containing_after", rep.containing_after},
        {"test_examples", rep.test_examples},
        {"chat", chat_json},
        {"checkpoint", rep.checkpoint.string()},
        {"gguf_export", rep.gguf_export.string()},
        {"hf_export", rep.hf_export.string()},
        {"total_seconds", rep.total_seconds}};
    write_text(paths.report, j.dump(2) + "\n");
    fmt::print("exported the fine-tuned model: {} (GGUF {}) and {} (HF folder)\n",
               rep.gguf_export.string(), o.outtype, rep.hf_export.string());
    fmt::print("whole demo: {:.0f} s; work dir: {}\n", rep.total_seconds, paths.root.string());
    std::fflush(stdout);
  }
  mesh.world().barrier();
  return rep;
}

}  // namespace magix
