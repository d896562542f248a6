// magix score: per-example negative log-likelihood and perplexity of token sequences.
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>

#include "cli_util.hpp"
#include "commands.hpp"
#include "magix/checkpoint.hpp"
#include "magix/dataset.hpp"
#include "magix/distributed.hpp"
#include "magix/error.hpp"
#include "magix/model.hpp"
#include "magix/sharding.hpp"
#include "magix/tokenizer.hpp"

namespace magix::cli {
namespace {

namespace fs = std::filesystem;

struct ScoreArgs {
  std::string model;
  std::string input;
  std::string output_file;
  int64_t batch_size = 8;
  std::string data_field;  // text input: tokenised with the model's (or the given) tokenizer
  std::string tokenizer;   // default: the model folder
  bool add_special_tokens = true;
  std::vector<int> mesh_shape = {-1, 1};
  std::string partition_rules;  // a rules file replacing the family's defaults
  bool bf16 = false;            // bf16 mixed precision
};

// One example per non-blank line: {"input_ids": [int, ...]} with at least 2 ids in [0, vocab).
// Errors name the file and the line.
std::vector<std::vector<int32_t>> read_token_examples(const fs::path& path, int64_t vocab) {
  std::ifstream in(path);
  MAGIX_CHECK(in.good(), "cannot open --input '{}'", path.string());
  std::vector<std::vector<int32_t>> out;
  std::string line;
  for (int64_t lineno = 1; std::getline(in, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path.string(), lineno);
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    MAGIX_CHECK(!j.is_discarded(), "{}: invalid JSON", where);
    MAGIX_CHECK(j.is_object() && j.contains("input_ids"), "{}: no \"input_ids\" field", where);
    const nlohmann::json& ids = j.at("input_ids");
    MAGIX_CHECK(ids.is_array(), "{}: \"input_ids\" must be a list of token ids", where);
    std::vector<int32_t> row;
    for (const nlohmann::json& id : ids) {
      MAGIX_CHECK(id.is_number_integer(), "{}: \"input_ids\" holds a non-integer {}", where,
                  id.dump());
      const int64_t v = id.get<int64_t>();
      MAGIX_CHECK(v >= 0 && v < vocab, "{}: token id {} is outside the vocabulary [0, {})", where,
                  v, vocab);
      row.push_back(static_cast<int32_t>(v));
    }
    MAGIX_CHECK(row.size() >= 2, "{}: needs at least 2 tokens to score, got {}", where, row.size());
    out.push_back(std::move(row));
  }
  MAGIX_CHECK(!out.empty(), "--input '{}' holds no examples", path.string());
  return out;
}

// Text examples: the `field` of each record (.jsonl / .json / .txt), tokenised.
std::vector<std::vector<int32_t>> read_text_examples(const fs::path& path, const ScoreArgs& a,
                                                     int64_t vocab) {
  const std::string tok_source = a.tokenizer.empty() ? a.model : a.tokenizer;
  verify_if_checkpoint_step(tok_source);  // a step's tokenizer files match its index
  const Tokenizer tok = Tokenizer::load(tok_source);
  MAGIX_CHECK(tok.vocab_size() <= vocab,
              "the tokenizer has {} tokens but the model's vocabulary is {}", tok.vocab_size(),
              vocab);
  ReadOptions options;
  options.field = a.data_field;
  options.allow_messages = false;
  std::vector<std::vector<int32_t>> out;
  for (const Record& r : read_records(path, options)) {
    std::vector<int32_t> ids = tok.encode(r.text, a.add_special_tokens);
    MAGIX_CHECK(ids.size() >= 2, "{}:{}: needs at least 2 tokens to score, got {}", path.string(),
                r.line, ids.size());
    out.push_back(std::move(ids));
  }
  MAGIX_CHECK(!out.empty(), "--input '{}' holds no examples", path.string());
  return out;
}

void run_score(const ScoreArgs& a) {
  MAGIX_CHECK(a.batch_size > 0, "--batch_size must be positive, got {}", a.batch_size);
  check_outputs_spare_inputs({{"--input", a.input},
                              {"--model_name_or_path", a.model},
                              {"--tokenizer_name_or_path", a.tokenizer},
                              {"--partition_rules", a.partition_rules}},
                             {{"--output_file", a.output_file}});
  Mesh mesh = create_device_mesh(a.mesh_shape);
  std::optional<PartitionRules> rules;
  if (!a.partition_rules.empty()) rules = load_partition_rules(a.partition_rules);
  // An HF folder / hub name, or a committed checkpoint step (magix train --checkpoint_dir).
  DecoderOptions options;
  options.compute_dtype = a.bf16 ? DType::kBF16 : DType::kF32;
  Decoder model = is_checkpoint_step(a.model)
                      ? load_checkpoint_decoder(a.model, mesh, options, rules ? &*rules : nullptr)
                      : load_decoder(a.model, mesh, options, rules ? &*rules : nullptr);
  const auto examples = a.data_field.empty()
                            ? read_token_examples(a.input, model.config().vocab_size)
                            : read_text_examples(a.input, a, model.config().vocab_size);

  // Each step takes batch_size rows per data rank (the last step is filled with copies of
  // example 0, whose results are dropped); data ranks' results are summed into place.
  const int64_t n = static_cast<int64_t>(examples.size());
  const int64_t D = mesh.data_size(), bs = a.batch_size;
  std::vector<double> nll(n, 0.0), tokens(n, 0.0);
  for (int64_t step = 0; step * D * bs < n; ++step) {
    const int64_t first = (step * D + mesh.data_rank()) * bs;
    std::vector<std::vector<int32_t>> rows;
    for (int64_t i = first; i < first + bs; ++i) rows.push_back(examples[i < n ? i : 0]);
    const LossResult res = model.loss(make_causal_batch(rows), 1.0);
    if (mesh.model_rank() != 0) continue;  // model ranks hold the same rows' results
    for (int64_t r = 0; r < bs && first + r < n; ++r) {
      nll[first + r] = res.nll_per_row[r];
      tokens[first + r] = static_cast<double>(res.tokens_per_row[r]);
    }
  }
  mesh.world().all_reduce(nll, ReduceOp::kSum);
  mesh.world().all_reduce(tokens, ReduceOp::kSum);
  if (mesh.world_rank() != 0) return;

  std::string text;
  double total_nll = 0, total_tokens = 0;
  for (int64_t i = 0; i < n; ++i) {
    MAGIX_CHECK(std::isfinite(nll[i]),
                "example {} (line order of --input '{}'): the model gives a non-finite NLL ({}): "
                "its weights or activations overflow; no output written",
                i, a.input, nll[i]);
    const double mean = nll[i] / tokens[i];
    nlohmann::json line{{"index", i},
                        {"tokens", static_cast<int64_t>(tokens[i])},
                        {"nll", nll[i]},
                        {"mean_nll", mean},
                        {"ppl", std::exp(mean)}};
    text += line.dump() + "\n";
    total_nll += nll[i];
    total_tokens += tokens[i];
  }
  write_output_file(a.output_file, text);
  const double mean = total_nll / total_tokens;
  fmt::print("examples: {}\ntokens: {}\nmean NLL: {:.6f}\nperplexity: {:.4f}\n", n,
             static_cast<int64_t>(total_tokens), mean, std::exp(mean));
}

}  // namespace

void add_score_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "score", "Per-example negative log-likelihood and perplexity of token sequences");
  auto args = std::make_shared<ScoreArgs>();
  cmd->add_option(flag("model_name_or_path"), args->model,
                  "HF model folder, hub name, or checkpoint step folder")
      ->required();
  cmd->add_option(flag("input"), args->input, "JSONL file, one {\"input_ids\": [...]} per line")
      ->required();
  cmd->add_option(flag("output_file"), args->output_file,
                  "JSONL output: index, tokens, nll, mean_nll, ppl per line")
      ->required();
  cmd->add_option(flag("batch_size"), args->batch_size, "examples per forward pass")
      ->capture_default_str();
  cmd->add_option(flag("data_field"), args->data_field,
                  "score text instead of ids: the field of each .jsonl/.json record to tokenize "
                  "(a .txt file: one text per line)");
  cmd->add_option(flag("tokenizer_name_or_path"), args->tokenizer,
                  "tokenizer folder or hub name for --data_field (default: the model's folder)");
  cmd->add_option(flag("add_special_tokens"), args->add_special_tokens,
                  "add the tokenizer's special tokens (e.g. bos) to each text")
      ->capture_default_str();
  cmd->add_option(flag("mesh_shape"), args->mesh_shape,
                  "data and model axis sizes, one may be -1 (run under mpirun for more than one)")
      ->expected(2)
      ->capture_default_str();
  cmd->add_option(flag("partition_rules"), args->partition_rules,
                  "JSON list of [regex, spec] pairs replacing the default sharding rules "
                  "(docs/mesh.md)");
  cmd->add_flag(flag("bf16"), args->bf16,
                "bf16 mixed precision: matrix products in bf16 with fp32 accumulation "
                "(docs/model.md)");
  cmd->callback([args] { run_score(*args); });
}

}  // namespace magix::cli
