// magix score: per-example negative log-likelihood and perplexity of token sequences, texts or
// conversations (the work is run_scoring in src/train/scoring.cpp).
#include <fmt/format.h>

#include <cmath>

#include "cli_util.hpp"
#include "commands.hpp"
#include "magix/distributed.hpp"
#include "magix/evaluate.hpp"

namespace magix::cli {
namespace {

void run_score(const ScoreArgs& a) {
  validate_score_args(a);
  check_outputs_spare_inputs({{"--input", a.input},
                              {"--model_name_or_path", a.model_name_or_path},
                              {"--tokenizer_name_or_path", a.tokenizer_name_or_path},
                              {"--partition_rules", a.partition_rules}},
                             {{"--output_file", a.output_file}});
  Mesh mesh = create_device_mesh(a.mesh_shape);
  const EvalResult res = run_scoring(a, mesh);
  if (mesh.world_rank() != 0) return;

  std::string text;
  for (size_t i = 0; i < res.nll_per_example.size(); ++i) {
    const double nll = res.nll_per_example[i];
    const int64_t tokens = res.tokens_per_example[i];
    const double mean = nll / static_cast<double>(tokens);
    nlohmann::json line{{"index", i},
                        {"tokens", tokens},
                        {"nll", nll},
                        {"mean_nll", mean},
                        {"ppl", std::exp(mean)}};
    text += line.dump() + "\n";
  }
  write_output_file(a.output_file, text);
  fmt::print("examples: {}\ntokens: {}\nmean NLL: {:.6f}\nperplexity: {:.4f}\n",
             res.nll_per_example.size(), res.tokens, res.mean_nll(), std::exp(res.mean_nll()));
}

}  // namespace

void add_score_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "score", "Per-example negative log-likelihood and perplexity of token sequences");
  auto args = std::make_shared<ScoreArgs>();
  cmd->add_option(flag("model_name_or_path"), args->model_name_or_path,
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
                  "score records instead of ids: the field of each .jsonl/.json record to "
                  "tokenize (a .txt file: one text per line), or a messages field with "
                  "--use_chat_template");
  cmd->add_option(flag("tokenizer_name_or_path"), args->tokenizer_name_or_path,
                  "tokenizer folder or hub name for --data_field (default: the model's folder)");
  cmd->add_option(flag("add_special_tokens"), args->add_special_tokens,
                  "add the tokenizer's special tokens (e.g. bos) to each text")
      ->capture_default_str();
  cmd->add_flag(flag("use_chat_template"), args->use_chat_template,
                "the --data_field holds conversations: render them with the tokenizer's chat "
                "template and encode them exactly as train does (counted targets as --train_on)");
  cmd->add_option(flag("chat_template_name"), args->chat_template_name,
                  "a named template of the tokenizer, or builtin: the reference scripts' "
                  "built-in <|role|> format");
  cmd->add_option(flag("train_on"), args->train_on,
                  "targets that count: all, or assistant (assistant turns only, as train)")
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
  add_device_option(*cmd, args->device);
  cmd->callback([args] { run_score(*args); });
}

}  // namespace magix::cli
