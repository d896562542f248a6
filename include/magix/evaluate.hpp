// A model's loss over examples without training: the eval loss of run_training (--eval_file)
// and the per-example NLL of `magix score` (docs/training.md, docs/cli.md).
//
//   magix::EvalResult r = magix::evaluate_examples(model, examples, 8, pad_id);
//   double eval_loss = r.mean_nll();  // token-weighted over every counted target
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "magix/batch.hpp"
#include "magix/dataset.hpp"
#include "magix/mesh.hpp"
#include "magix/model.hpp"

namespace magix {

// One row per example, as the data loader lays an unpacked row out (data_loader.hpp): inputs
// from slots [0, T), targets from slots [1, T + 1) where both are real tokens and the target's
// loss_mask is 1. T = the longest example's length - 1 (at least 1); shorter rows are padded
// with pad_id (never keys, never targets). An example of one token has no target.
TokenBatch make_example_batch(std::span<const Example> examples, int32_t pad_id);

struct EvalResult {
  double nll_sum = 0.0;                     // sum of NLL over all counted targets
  int64_t tokens = 0;                       // counted targets over all examples
  std::vector<double> nll_per_example;      // (N) NLL sum of each example's counted targets
  std::vector<int64_t> tokens_per_example;  // (N) counted targets of each example
  double mean_nll() const;                  // nll_sum / tokens (NaN without targets)
};

// The loss of `model` (its adapters included, no dropout) over `examples`, which every rank
// passes identically. Pass s gives data rank d the examples [(s·D + d)·B, (s·D + d + 1)·B)
// (B = per_rank_batch); rows past the end are one pad token without a target. Per-example sums
// are all-reduced over the world, so every rank returns the whole result: the same on every
// mesh to float rounding (the sum runs over examples in order). Collective over the mesh.
EvalResult evaluate_examples(Decoder& model, const std::vector<Example>& examples,
                             int64_t per_rank_batch, int32_t pad_id);

// ---------------------------------------------------------------------------------------------
// The `magix score` command as a library call (its flags; docs/cli.md).

struct ScoreArgs {
  std::string model_name_or_path;  // HF folder, hub name, or a magix checkpoint step
  std::string input;               // {"input_ids": [...]} per line, or records (--data_field)
  std::string output_file;
  int64_t batch_size = 8;              // examples per forward pass and data rank
  std::string data_field;              // text / messages field: records encoded as training does
  std::string tokenizer_name_or_path;  // default: model_name_or_path
  bool add_special_tokens = true;      // text records: the post-processor's tokens (bos)
  bool use_chat_template = false;      // messages records: rendered like train's
  std::string chat_template_name;      // a named template, or kBuiltinChatFormat
  std::string train_on = "all";        // "all" | "assistant" (with use_chat_template)
  std::vector<int> mesh_shape = {-1, 1};
  std::string partition_rules;  // a rules file replacing the family's defaults
  bool bf16 = false;            // bf16 mixed precision
  std::string device;           // "cpu" or "cuda" (--device); empty: default_device()
};

// Checks values that need no file (batch size, train_on and its needs). Throws naming the flag.
void validate_score_args(const ScoreArgs& args);

// The examples of args.input: {"input_ids": [...]} lines (every next token counts), or with
// data_field the records' texts tokenised (add_special_tokens, every next token counts, as
// before) or, with use_chat_template, conversations encoded exactly as training encodes them
// (encode_record: the chat template, train_on's mask; never truncated). Each example needs a
// counted target. Errors name the file and line.
std::vector<Example> read_score_examples(const ScoreArgs& args, int64_t vocab);

// Loads the model, reads the examples and evaluates them (evaluate_examples); throws when an
// example's NLL is not finite. Collective over the mesh; every rank returns the result.
EvalResult run_scoring(const ScoreArgs& args, const Mesh& mesh);

}  // namespace magix
