// Batched text generation with a KV cache (docs/generation.md): left-padded prompts, one prefill
// pass, then one-token decode steps; greedy or sampled (temperature, top-k, top-p as HF's logits
// processors apply them), repetition penalty, EOS and stop strings. Tensor parallel over the
// model axis like the training decoder (heads, MLP columns, vocab-parallel head; KV cache sharded
// by heads); data ranks generate different batches (run_generation).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "magix/generation_config.hpp"
#include "magix/mesh.hpp"
#include "magix/model.hpp"
#include "magix/model_config.hpp"
#include "magix/tokenizer.hpp"

namespace magix {

// How the next token is chosen from the logits of the last position.
struct SamplingOptions {
  bool sample = false;              // false: greedy (argmax, lowest id on ties)
  float temperature = 0.7f;         // sample only; > 0 (the reference default)
  int64_t top_k = 0;                // sample only; 0 = off
  float top_p = 1.0f;               // sample only; in (0, 1], 1 = off
  float repetition_penalty = 1.0f;  // greedy and sample; 1 = off; > 0
  // Sampling is a pure function of (seed, prompt index, token index) and the logits: the same
  // prompt gives the same text whatever the mesh and whichever batch it lands in.
  uint64_t seed = 42;
};

struct GenerateOptions {
  // A sequence stops when its prompt + generated tokens reach max_length (the reference's
  // meaning, counted per prompt without padding), or when it has max_new_tokens new tokens
  // (0 = no such limit), at one of eos_ids, or once its text contains a stop string.
  int64_t max_length = 256;
  int64_t max_new_tokens = 0;
  SamplingOptions sampling;
  std::vector<std::string> stop;  // stop strings (need a tokenizer)
  // Token ids that end a sequence; empty: the config's eos_token_id(s) and the tokenizer's eos.
  std::vector<int32_t> eos_ids;
  // The padded prompt length of a batch is rounded up to a multiple of this (>= 1). Padding
  // never changes the result; it only bounds the number of distinct shapes.
  int64_t pad_to_multiple_of = 1;
  int32_t pad_id = 0;  // the id written at padding positions (masked, never attended to)
};

// Throws magix::Error naming the first invalid option (stop strings need a tokenizer).
void check_generate_options(const GenerateOptions& options, bool has_tokenizer);

enum class FinishReason { kEos, kStop, kLength };
std::string_view finish_reason_name(FinishReason reason);  // "eos", "stop", "length"

struct GenerationResult {
  // Generated ids: up to and including the EOS id or the token that completed a stop string.
  std::vector<int32_t> tokens;
  // Decoded text (special tokens skipped), cut just before a stop string; empty without a
  // tokenizer.
  std::string text;
  FinishReason finish = FinishReason::kLength;
};

// Inference weights of a decoder, gathered once over the data axis (FSDP shards -> this model
// rank's whole slice) and kept in the decoder's compute dtype (DecoderOptions::compute_dtype:
// with BF16 the linear weights are kept and streamed in bf16); the KV cache (fp32) is allocated
// per generate() call.
class Generator {
 public:
  // `model`'s mesh must outlive the generator; the weights are copied (or shared when already
  // whole and fp32), so the decoder may be destroyed afterwards. Collective over the mesh's
  // data and model axes. `tokenizer` (may be null) decodes texts and matches stop strings.
  explicit Generator(const Decoder& model, const Tokenizer* tokenizer = nullptr);
  // The same from a config and this rank's parameter shards (layout of
  // shard_parameters(expected_parameters(config), mesh)), F32 or BF16, computing in
  // `compute_dtype` (DecoderOptions::compute_dtype).
  Generator(const ModelConfig& config, const Mesh& mesh, const ParameterSet& params,
            const Tokenizer* tokenizer = nullptr, DType compute_dtype = DType::kF32);
  ~Generator();
  Generator(Generator&&) noexcept;
  Generator& operator=(Generator&&) noexcept;

  const ModelConfig& config() const;
  const Mesh& mesh() const;

  // Generates a continuation of each prompt (each non-empty, ids in [0, vocab)). Collective over
  // the model axis: every model rank of a data rank passes the same prompts and options.
  // `prompt_index[i]` keys prompt i's sampling RNG (empty: 0, 1, 2, ...); run_generation passes
  // the prompt's index in the input file.
  std::vector<GenerationResult> generate(const std::vector<std::vector<int32_t>>& prompts,
                                         const GenerateOptions& options,
                                         const std::vector<int64_t>& prompt_index = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The next-token rule on one row of full-vocabulary logits (V), exposed for tests:
// repetition penalty over `previous` (HF: a logit < 0 is multiplied by the penalty, else
// divided), then, when sampling, temperature, top-k, top-p, softmax and a draw keyed by
// (seed, prompt_index, token_index). `logits` is modified in place.
int32_t choose_token(std::vector<float>& logits, const std::vector<int32_t>& previous,
                     const SamplingOptions& options, int64_t prompt_index, int64_t token_index);

// The uniform draw in [0, 1) used for (seed, prompt_index, token_index): a counter-based RNG.
double sampling_uniform(uint64_t seed, int64_t prompt_index, int64_t token_index);

// ---------------------------------------------------------------------------------------------
// The `magix generate` command as a library call (flags of REFERENCE.md `generate`).

struct GenerateArgs {
  std::string prompts;                        // any data source (docs/data.md)
  std::string data_field = "prompt";          // field (column) of each record
  std::string hf_data_config;                 // dataset config (hub-style folders)
  std::string hf_data_split = "test";         // split (sources with splits)
  bool skip_bad_records = false;              // skip (and count) unreadable records
  bool use_chat_template = false;             // the tokenizer's template (check_chat_template)
  std::string chat_template_name;             // a named template, or kBuiltinChatFormat
  std::string output_file = "generated.txt";  // JSONL: {"prompt", "generated"} per line
  int64_t batch_size = 32;                    // prompts per batch on each data rank
  int64_t pad_to_multiple_of = 64;
  std::string model_type;                 // optional: must match the config's model_type
  std::string model_name_or_path;         // HF folder, hub name, or a magix checkpoint step
  std::string model_config_name;          // optional: a folder whose config.json must match
  std::string tokenizer_name_or_path;     // default: model_name_or_path
  std::vector<int> mesh_shape = {1, -1};  // informative here: run_generation takes the mesh
  std::string lora;  // train-lora step (or checkpoint dir) to merge; empty = none
  // Overrides the alpha saved with the adapters (train-lora step or PEFT folder) when given.
  std::optional<double> lora_alpha;
  bool bf16 = false;           // bf16 mixed precision: bf16 weights streamed, bf16 prefill GEMMs
  std::string device;          // "cpu" or "cuda" (--device); empty: default_device()
  GenerateOptions generation;  // sampling, limits, stop strings
  bool progress = false;       // a progress bar on stderr (world rank 0)
  // The flags given explicitly, by name ("temperature"; CLI: those on the command line, Python:
  // the keywords passed): the model's generation_config.json never replaces their values.
  std::vector<std::string> given;
};

// The model folder's generation_config.json as defaults (transformers' model.generation_config):
// for each of sample (do_sample), temperature, top_k, top_p, repetition_penalty,
// max_new_tokens and max_length that the file holds and `given` does not name, its value
// replaces options'; max_length only when no max_new_tokens is set by a flag or the file
// (transformers: max_new_tokens overrides max_length). eos_token_id (an int or a list, each id
// stops) replaces the default stop ids (the config's and the tokenizer's eos) and
// pad_token_id the pad id. Returns "key value" for each default taken, for the log.
std::vector<std::string> apply_generation_config(const GenerationConfig& config,
                                                 const std::vector<std::string>& given,
                                                 GenerateOptions& options);

struct GenerationSummary {
  int64_t prompts = 0;
  int64_t generated_tokens = 0;  // over all prompts
  double seconds = 0;            // wall time of generation (loading excluded)
};

// Loads the model and tokenizer, reads the prompts, generates batch by batch (data rank d takes
// batches d, d + D, ...), and world rank 0 writes the results in input order to
// `output_file`.partial as each round of batches finishes (flushed: a crash loses at most the
// round in flight), renamed to `output_file` at the end. Collective over the mesh.
GenerationSummary run_generation(const GenerateArgs& args, const Mesh& mesh);

}  // namespace magix
