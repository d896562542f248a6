// Writing a model as a GGUF file (llama.cpp's format): `magix export --format gguf`.
#pragma once

#include <filesystem>
#include <string>

#include "magix/gguf.hpp"
#include "magix/model.hpp"
#include "magix/model_config.hpp"

namespace magix {

// Weight types of an export: norms and biases stay F32; matrices as chosen (q8_0: matrices
// whose rows are not whole 32-value blocks fall back to F16, as llama.cpp's converter does).
enum class GgufOutType { kF32, kF16, kBF16, kQ8_0 };
GgufOutType parse_gguf_outtype(const std::string& s);  // f32 | f16 | bf16 | q8_0

// Writes `out` atomically: llama.cpp's metadata for the family's architecture (llama for llama
// and mistral, qwen2, qwen3, phi3, gemma, gemma2, gemma3; linear/YaRN RoPE scaling), the
// tokenizer (a byte-level BPE or SentencePiece-style BPE tokenizer.json + tokenizer_config.json
// and the chat template from the same folder) and every parameter (whole tensors, HF names)
// under llama.cpp's names, q/k rows in llama.cpp's order for the llama architecture, Gemma norms
// as 1 + w; a tied lm_head is left out. Errors name what a GGUF file of the architecture cannot
// state (docs/gguf.md).
void write_gguf_model(const std::filesystem::path& out, const ModelConfig& config,
                      const std::string& name, const std::filesystem::path& tokenizer_json,
                      const ParameterSet& params, GgufOutType outtype);

// A committed checkpoint step (a train-lora step: the base model with its adapters merged) as one
// GGUF file: `out` ending in .gguf names the file, anything else is the folder that gets
// model-<outtype>.gguf. An existing file needs `overwrite`. Returns the path written.
std::filesystem::path export_checkpoint_gguf(const std::filesystem::path& step,
                                             const std::filesystem::path& out,
                                             const std::string& outtype,
                                             const std::string& base_model, bool overwrite);

}  // namespace magix
