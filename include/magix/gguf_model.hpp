// A GGUF file as an HF model: its metadata turned into config.json, tokenizer.json,
// tokenizer_config.json and generation_config.json, and its tensors under HF names,
// dequantized to f32 when read.
//
// Wherever magix accepts a model (a folder or hub name), a .gguf file, or a folder holding one
// .gguf file and no config.json, is accepted too: resolve_model_dir() returns a small folder in
// magix's cache ($MAGIX_CACHE, else $XDG_CACHE_HOME/magix, else ~/.cache/magix; under gguf/)
// holding those JSON files and gguf_source.json, which points HfWeights at the GGUF file. The
// weights are never copied.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "magix/gguf.hpp"
#include "magix/safetensors.hpp"
#include "magix/tensor.hpp"

namespace magix {

// The architectures (general.architecture) magix maps to an HF config and HF tensor names.
std::vector<std::string> gguf_supported_architectures();

// config.json for the file (errors name the missing metadata key or the unsupported
// architecture).
nlohmann::json gguf_hf_config(const GgufFile& file);
// tokenizer.json and tokenizer_config.json as transformers builds them from the file's metadata
// (tokenizer.ggml.model "gpt2": byte-level BPE; "llama": SentencePiece-style BPE with byte
// fallback, merges derived from the scores, the pipeline of the architecture's tokenizer class).
nlohmann::json gguf_tokenizer_json(const GgufFile& file);
nlohmann::json gguf_tokenizer_config(const GgufFile& file);
// generation_config.json: bos, eos and pad ids.
nlohmann::json gguf_generation_config(const GgufFile& file);

// The tensors of a GGUF file under HF names (model.layers.N.self_attn.q_proj.weight, ...), with
// llama.cpp's row permutation of q/k undone for the llama architecture and its 1 + w storage
// of Gemma norms undone.
class GgufWeights {
 public:
  explicit GgufWeights(const std::filesystem::path& gguf);
  const std::filesystem::path& path() const { return file_.path(); }
  const GgufFile& file() const { return file_; }
  // HF names, sorted.
  std::vector<std::string> names() const;
  bool contains(std::string_view hf_name) const;
  // dtype F32 (what read_f32 gives), the HF shape; offset/nbytes of the stored tensor.
  const SafetensorsEntry& entry(std::string_view hf_name) const;
  Tensor read_f32(std::string_view hf_name) const;
  Tensor read_box_f32(std::string_view hf_name, const Shape& start, const Shape& extent) const;

 private:
  GgufFile file_;
  std::string arch_;
  int64_t n_heads_ = 0, n_kv_heads_ = 0;
  std::map<std::string, std::pair<std::string, SafetensorsEntry>, std::less<>> by_hf_;
};

// The cache folder standing for `gguf` (made on first use, atomically; reused while the file's
// path, size and modification time are unchanged).
std::filesystem::path gguf_model_folder(const std::filesystem::path& gguf);

// The GGUF file a folder made by gguf_model_folder stands for, or empty for any other folder
// (only folders inside magix's cache count).
std::filesystem::path gguf_source_of(const std::filesystem::path& dir);

}  // namespace magix
