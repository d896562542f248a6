// run_generation: prompts file -> batches over the data axis -> JSONL results in input order,
// written by world rank 0 as each round of batches finishes.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "backends/backend.hpp"
#include "magix/checkpoint.hpp"
#include "magix/dataset.hpp"
#include "magix/error.hpp"
#include "magix/generate.hpp"
#include "magix/generation_config.hpp"
#include "magix/hf_files.hpp"
#include "magix/lora.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;

void check_args(const GenerateArgs& a) {
  MAGIX_CHECK(!a.prompts.empty(), "--prompts is required");
  MAGIX_CHECK(!a.model_name_or_path.empty(), "--model_name_or_path is required");
  MAGIX_CHECK(!a.output_file.empty(), "--output_file must not be empty");
  MAGIX_CHECK(a.batch_size > 0, "--batch_size must be positive, got {}", a.batch_size);
  MAGIX_CHECK(a.pad_to_multiple_of > 0, "--pad_to_multiple_of must be positive, got {}",
              a.pad_to_multiple_of);
}

Decoder load_model(const GenerateArgs& a, const Mesh& mesh) {
  DecoderOptions options;
  options.compute_dtype = a.bf16 ? DType::kBF16 : DType::kF32;
  options.device = use_device(a.device);
  Decoder model = is_checkpoint_step(a.model_name_or_path)
                      ? load_checkpoint_decoder(a.model_name_or_path, mesh, options)
                      : load_decoder(a.model_name_or_path, mesh, options);
  // --lora: a train-lora step's or a PEFT folder's adapters merged into the weights (each rank
  // its boxes), with their saved alpha unless --lora_alpha overrides it.
  if (!a.lora.empty()) merge_lora_adapters(a.lora, model, a.lora_alpha);
  const ModelConfig& c = model.config();
  MAGIX_CHECK(a.model_type.empty() || a.model_type == family_name(c.family),
              "--model_type {} does not match the model's config.json (model_type {})",
              a.model_type, family_name(c.family));
  if (!a.model_config_name.empty()) {
    const fs::path path = resolve_model_dir(a.model_config_name) / "config.json";
    const ModelConfig want = load_model_config(path);
    MAGIX_CHECK(want.family == c.family && want.vocab_size == c.vocab_size &&
                    want.hidden_size == c.hidden_size && want.num_layers == c.num_layers &&
                    want.num_heads == c.num_heads && want.num_kv_heads == c.num_kv_heads,
                "--model_config_name {}: its config ({} {} layers, hidden {}) does not describe "
                "the model in {} ({} {} layers, hidden {})",
                path.string(), family_name(want.family), want.num_layers, want.hidden_size,
                a.model_name_or_path, family_name(c.family), c.num_layers, c.hidden_size);
  }
  return model;
}

struct Prompt {
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<Prompt> read_and_encode(const GenerateArgs& a, const Tokenizer& tok) {
  ReadOptions read;
  read.field = a.data_field;
  read.allow_messages = false;
  read.skip_bad_records = a.skip_bad_records;
  read.config = a.hf_data_config;
  read.split = a.hf_data_split;
  ReadStats stats;
  std::vector<Record> records = read_records(a.prompts, read, &stats);
  if (stats.skipped > 0) {
    std::fprintf(stderr, "generate: skipped %lld bad records of '%s'\n",
                 static_cast<long long>(stats.skipped), a.prompts.c_str());
    for (const std::string& e : stats.skipped_errors) std::fprintf(stderr, "  %s\n", e.c_str());
  }
  std::optional<std::string> template_name;
  if (!a.chat_template_name.empty()) template_name = a.chat_template_name;
  // Before the first prompt: a tokenizer without a template is one error, not one per line.
  if (a.use_chat_template) check_chat_template(tok, template_name);
  std::vector<Prompt> out;
  for (Record& r : records) {
    Prompt p;
    try {
      p.ids = encode_prompt(tok, r.text, a.use_chat_template, template_name);
    } catch (const Error& e) {
      MAGIX_FAIL("{}:{}: cannot encode the prompt: {}", a.prompts, r.line, e.what());
    }
    MAGIX_CHECK(!p.ids.empty(), "{}:{}: the prompt encodes to no tokens", a.prompts, r.line);
    p.text = std::move(r.text);
    out.push_back(std::move(p));
  }
  MAGIX_CHECK(!out.empty(), "--prompts '{}' holds no prompts", a.prompts);
  return out;
}

// Sends `text` and `tokens` of data rank `root` to every model-rank-0 rank (world rank 0 among
// them); collective over mesh.data() of the model-rank-0 ranks.
void share(const Mesh& mesh, int root, std::string& text, int64_t& tokens) {
  int64_t head[2] = {static_cast<int64_t>(text.size()), tokens};
  mesh.data().broadcast(std::as_writable_bytes(std::span<int64_t>(head, 2)), root);
  text.resize(static_cast<size_t>(head[0]));
  tokens = head[1];
  mesh.data().broadcast(std::as_writable_bytes(std::span<char>(text.data(), text.size())), root);
}

void draw_progress(int64_t done, int64_t total, int64_t tokens, double seconds) {
  const int width = 30;
  const int filled = static_cast<int>(width * done / std::max<int64_t>(total, 1));
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "\rgenerate [%s] %lld/%lld prompts, %.1f tok/s", bar.c_str(),
               static_cast<long long>(done), static_cast<long long>(total),
               seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0);
  if (done == total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

}  // namespace

GenerationSummary run_generation(const GenerateArgs& a, const Mesh& mesh) {
  check_args(a);
  const bool writer = mesh.world_rank() == 0;
  const std::string tok_source =
      a.tokenizer_name_or_path.empty() ? a.model_name_or_path : a.tokenizer_name_or_path;
  verify_if_checkpoint_step(tok_source);  // a step's tokenizer files match its index
  const Tokenizer tok = Tokenizer::load(tok_source);
  const std::vector<Prompt> prompts = read_and_encode(a, tok);
  // Results go to OUTPUT.partial, flushed per round of batches, renamed to OUTPUT at the end: a
  // crash keeps every finished batch there, and never leaves a short file looking complete.
  const fs::path out_path = a.output_file;
  const fs::path partial = out_path.string() + ".partial";
  const fs::path parent = out_path.parent_path().empty() ? "." : out_path.parent_path();
  MAGIX_CHECK(fs::is_directory(parent), "--output_file '{}': folder '{}' does not exist",
              out_path.string(), parent.string());
  GenerateOptions options = a.generation;
  options.pad_to_multiple_of = a.pad_to_multiple_of;
  options.pad_id = tok.pad_id().value_or(tok.eos_id().value_or(0));
  // The model folder's (or checkpoint step's) generation_config.json: defaults for the flags
  // not given.
  const fs::path model_dir = is_checkpoint_step(a.model_name_or_path)
                                 ? fs::path(a.model_name_or_path)
                                 : resolve_model_dir(a.model_name_or_path);
  if (const std::optional<GenerationConfig> g = load_generation_config(model_dir)) {
    const std::vector<std::string> taken = apply_generation_config(*g, a.given, options);
    if (writer && !taken.empty()) {
      std::string list;
      for (const std::string& t : taken) list += (list.empty() ? "" : ", ") + t;
      std::fprintf(stderr, "generate: defaults from %s: %s (flags given explicitly win)\n",
                   (model_dir / "generation_config.json").c_str(), list.c_str());
    }
  }
  check_generate_options(options, true);
  // The generator keeps its own (gathered) weights: the decoder's shards go out of scope.
  Generator gen = [&] {
    const Decoder model = load_model(a, mesh);
    MAGIX_CHECK(tok.vocab_size() <= model.config().vocab_size,
                "the tokenizer has {} tokens but the model's vocabulary is {}", tok.vocab_size(),
                model.config().vocab_size);
    const int64_t vocab = model.config().vocab_size;
    MAGIX_CHECK(options.pad_id >= 0 && options.pad_id < vocab,
                "the pad id {} is outside the model's vocabulary [0, {}) (generation_config.json's "
                "pad_token_id?)",
                options.pad_id, vocab);
    return Generator(model, &tok);
  }();
  std::ofstream out;
  if (writer) {
    out.open(partial, std::ios::binary | std::ios::trunc);
    MAGIX_CHECK(out.good(), "cannot write --output_file: cannot create '{}'", partial.string());
  }

  const auto start = std::chrono::steady_clock::now();
  const int64_t n = std::ssize(prompts), bs = a.batch_size, D = mesh.data_size();
  const int64_t batches = (n + bs - 1) / bs;
  GenerationSummary summary;
  summary.prompts = n;
  const bool progress = writer && a.progress && isatty(fileno(stderr));
  for (int64_t round = 0; round * D < batches; ++round) {
    // This data rank's batch of the round: prompts [first, last).
    const int64_t batch = round * D + mesh.data_rank();
    const int64_t first = std::min(n, batch * bs), last = std::min(n, first + bs);
    std::vector<std::vector<int32_t>> ids;
    std::vector<int64_t> index;
    for (int64_t i = first; i < last; ++i) {
      ids.push_back(prompts[i].ids);
      index.push_back(i);
    }
    const std::vector<GenerationResult> results = gen.generate(ids, options, index);
    std::string lines;
    int64_t tokens = 0;
    for (size_t r = 0; r < results.size(); ++r) {
      nlohmann::ordered_json line{{"prompt", prompts[first + static_cast<int64_t>(r)].text},
                                  {"generated", results[r].text}};
      lines += line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
      tokens += std::ssize(results[r].tokens);
    }
    if (mesh.model_rank() != 0) continue;  // model ranks hold the same results
    for (int d = 0; d < D; ++d) {
      std::string text = d == mesh.data_rank() ? lines : std::string();
      int64_t count = tokens;
      share(mesh, d, text, count);
      summary.generated_tokens += count;
      if (writer) out << text;
    }
    if (writer) {
      out.flush();
      MAGIX_CHECK(out.good(), "writing '{}' failed (disk full?)", partial.string());
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (progress)
      draw_progress(std::min(n, (round + 1) * D * bs), n, summary.generated_tokens, seconds);
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (writer) {
    out.close();
    MAGIX_CHECK(!out.fail(), "closing '{}' failed", partial.string());
    std::error_code ec;
    fs::rename(partial, out_path, ec);
    MAGIX_CHECK(!ec, "cannot rename '{}' to '{}': {}", partial.string(), out_path.string(),
                ec.message());
  }
  return summary;
}

}  // namespace magix
