// run_scoring: `magix score` as a library call (read the examples, load the model, evaluate).
#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <optional>

#include "backends/backend.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"
#include "magix/evaluate.hpp"
#include "magix/sharding.hpp"
#include "magix/tokenizer.hpp"

namespace magix {

namespace fs = std::filesystem;

namespace {

// One example per non-blank line: {"input_ids": [int, ...]} with at least 2 ids in [0, vocab);
// every next token counts.
std::vector<Example> read_token_examples(const fs::path& path, int64_t vocab) {
  std::ifstream in(path);
  MAGIX_CHECK(in.good(), "cannot open --input '{}'", path.string());
  std::vector<Example> out;
  std::string line;
  for (int64_t lineno = 1; std::getline(in, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path.string(), lineno);
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    MAGIX_CHECK(!j.is_discarded(), "{}: invalid JSON", where);
    MAGIX_CHECK(j.is_object() && j.contains("input_ids"), "{}: no \"input_ids\" field", where);
    const nlohmann::json& ids = j.at("input_ids");
    MAGIX_CHECK(ids.is_array(), "{}: \"input_ids\" must be a list of token ids", where);
    Example ex;
    for (const nlohmann::json& id : ids) {
      MAGIX_CHECK(id.is_number_integer(), "{}: \"input_ids\" holds a non-integer {}", where,
                  id.dump());
      const int64_t v = id.get<int64_t>();
      MAGIX_CHECK(v >= 0 && v < vocab, "{}: token id {} is outside the vocabulary [0, {})", where,
                  v, vocab);
      ex.ids.push_back(static_cast<int32_t>(v));
    }
    MAGIX_CHECK(ex.ids.size() >= 2, "{}: needs at least 2 tokens to score, got {}", where,
                ex.ids.size());
    ex.loss_mask.assign(ex.ids.size(), 1);
    out.push_back(std::move(ex));
  }
  return out;
}

}  // namespace

void validate_score_args(const ScoreArgs& a) {
  MAGIX_CHECK(!a.model_name_or_path.empty(), "--model_name_or_path is required");
  MAGIX_CHECK(!a.input.empty(), "--input is required");
  MAGIX_CHECK(a.batch_size > 0, "--batch_size must be positive, got {}", a.batch_size);
  const TrainOn train_on = parse_train_on(a.train_on);
  MAGIX_CHECK(!a.use_chat_template || !a.data_field.empty(),
              "--use_chat_template needs --data_field (the records' messages field)");
  MAGIX_CHECK(train_on == TrainOn::kAll || a.use_chat_template,
              "--train_on assistant needs conversations: pass --use_chat_template with "
              "--data_field messages");
  MAGIX_CHECK(a.chat_template_name.empty() || a.use_chat_template,
              "--chat_template_name is for --use_chat_template");
}

std::vector<Example> read_score_examples(const ScoreArgs& a, int64_t vocab) {
  std::vector<Example> out;
  if (a.data_field.empty()) {
    out = read_token_examples(a.input, vocab);
  } else {
    const std::string tok_source =
        a.tokenizer_name_or_path.empty() ? a.model_name_or_path : a.tokenizer_name_or_path;
    verify_if_checkpoint_step(tok_source);  // a step's tokenizer files match its index
    const Tokenizer tok = Tokenizer::load(tok_source);
    MAGIX_CHECK(tok.vocab_size() <= vocab,
                "the tokenizer has {} tokens but the model's vocabulary is {}", tok.vocab_size(),
                vocab);
    EncodeOptions encode;
    encode.use_chat_template = a.use_chat_template;
    encode.train_on = parse_train_on(a.train_on);
    encode.max_length = std::numeric_limits<int32_t>::max() - 1;  // never truncated
    if (!a.chat_template_name.empty()) encode.chat_template_name = a.chat_template_name;
    if (a.use_chat_template) check_chat_template(tok, encode.chat_template_name);
    ReadOptions read;
    read.field = a.data_field;
    read.allow_messages = a.use_chat_template;
    for (const Record& r : read_records(a.input, read)) {
      Example ex;
      if (a.use_chat_template) {
        try {
          ex = encode_record(r, tok, encode);  // the training encoding and train_on mask
        } catch (const Error& e) {
          MAGIX_FAIL("{}:{}: {}", a.input, r.line, e.what());
        }
        int64_t targets = 0;
        for (size_t t = 1; t < ex.loss_mask.size(); ++t) targets += ex.loss_mask[t] ? 1 : 0;
        MAGIX_CHECK(targets > 0, "{}:{}: the conversation has no counted target to score{}",
                    a.input, r.line,
                    encode.train_on == TrainOn::kAssistant ? " (no assistant turn)" : "");
      } else {
        ex.ids = tok.encode(r.text, a.add_special_tokens);
        ex.loss_mask.assign(ex.ids.size(), 1);
        MAGIX_CHECK(ex.ids.size() >= 2, "{}:{}: needs at least 2 tokens to score, got {}", a.input,
                    r.line, ex.ids.size());
      }
      out.push_back(std::move(ex));
    }
  }
  MAGIX_CHECK(!out.empty(), "--input '{}' holds no examples", a.input);
  return out;
}

EvalResult run_scoring(const ScoreArgs& a, const Mesh& mesh) {
  validate_score_args(a);
  std::optional<PartitionRules> rules;
  if (!a.partition_rules.empty()) rules = load_partition_rules(a.partition_rules);
  // An HF folder / hub name, or a committed checkpoint step (magix train --checkpoint_dir).
  DecoderOptions options;
  options.compute_dtype = a.bf16 ? DType::kBF16 : DType::kF32;
  options.device = use_device(a.device);
  const PartitionRules* r = rules ? &*rules : nullptr;
  Decoder model = is_checkpoint_step(a.model_name_or_path)
                      ? load_checkpoint_decoder(a.model_name_or_path, mesh, options, r)
                      : load_decoder(a.model_name_or_path, mesh, options, r);
  const std::vector<Example> examples = read_score_examples(a, model.config().vocab_size);
  // Rows past the last example are padding: any id of the vocabulary does.
  EvalResult res = evaluate_examples(model, examples, a.batch_size, 0);
  for (size_t i = 0; i < res.nll_per_example.size(); ++i) {
    MAGIX_CHECK(std::isfinite(res.nll_per_example[i]),
                "example {} (line order of --input '{}'): the model gives a non-finite NLL ({}): "
                "its weights or activations overflow; no output written",
                i, a.input, res.nll_per_example[i]);
  }
  return res;
}

}  // namespace magix
