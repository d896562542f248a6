// llama.cpp's tensor names and tokenizer pre-tokenizer regexes, shared by the GGUF reader
// (gguf_model.cpp) and writer (gguf_writer.cpp): one table for both directions.
#pragma once

#include <algorithm>
#include <array>
#include <string_view>
#include <utility>

#include "magix/tensor.hpp"

namespace magix::gguf {

// {GGUF name, HF name} of the tensors outside the layers.
inline constexpr std::array<std::pair<std::string_view, std::string_view>, 3> kTopNames = {{
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
}};

// {GGUF suffix after "blk.N.", HF suffix after "model.layers.N."}.
inline constexpr std::array<std::pair<std::string_view, std::string_view>, 12> kLayerNames = {{
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
}};

// Where an architecture's layers differ from kLayerNames (looked up first): Gemma 2/3's four
// norms per layer, Qwen 3 / Gemma 3's q/k norms, Phi-3's fused qkv and gate_up matrices (llama.cpp
// keeps them fused: attn_qkv, and ffn_up holding gate then up).
inline constexpr std::array<std::pair<std::string_view, std::string_view>, 3> kGemma2LayerNames = {{
    {"post_attention_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_norm.weight", "pre_feedforward_layernorm.weight"},
    {"post_ffw_norm.weight", "post_feedforward_layernorm.weight"},
}};
inline constexpr std::array<std::pair<std::string_view, std::string_view>, 2> kQkNormNames = {{
    {"attn_q_norm.weight", "self_attn.q_norm.weight"},
    {"attn_k_norm.weight", "self_attn.k_norm.weight"},
}};
inline constexpr std::array<std::pair<std::string_view, std::string_view>, 2> kPhi3LayerNames = {{
    {"attn_qkv.weight", "self_attn.qkv_proj.weight"},
    {"ffn_up.weight", "mlp.gate_up_proj.weight"},
}};

// The HF suffix (after "model.layers.N.") of a GGUF layer tensor suffix (after "blk.N.") in
// architecture `arch`; empty when magix knows no such tensor there.
inline std::string_view hf_layer_suffix(std::string_view arch, std::string_view gguf_suffix) {
  auto find = [&](const auto& table) -> std::string_view {
    for (const auto& [gg, hf] : table) {
      if (gg == gguf_suffix) return hf;
    }
    return {};
  };
  std::string_view hf;
  if (arch == "gemma2" || arch == "gemma3") hf = find(kGemma2LayerNames);
  if (hf.empty() && (arch == "qwen3" || arch == "gemma3")) hf = find(kQkNormNames);
  if (hf.empty() && arch == "phi3") {
    hf = find(kPhi3LayerNames);
    if (gguf_suffix == "ffn_gate.weight") return {};  // (fused into ffn_up)
  }
  return hf.empty() ? find(kLayerNames) : hf;
}

// The GGUF suffix (after "blk.N.") of an HF layer suffix (after "model.layers.N.") in `arch`;
// empty when llama.cpp has no name for it there. The inverse of hf_layer_suffix.
inline std::string_view gguf_layer_suffix(std::string_view arch, std::string_view hf_suffix) {
  auto find = [&](const auto& table) -> std::string_view {
    for (const auto& [gg, hf] : table) {
      if (hf == hf_suffix) return gg;
    }
    return {};
  };
  std::string_view gg;
  if (arch == "gemma2" || arch == "gemma3") gg = find(kGemma2LayerNames);
  if (gg.empty() && (arch == "qwen3" || arch == "gemma3")) gg = find(kQkNormNames);
  if (gg.empty() && arch == "phi3") gg = find(kPhi3LayerNames);
  return gg.empty() ? find(kLayerNames) : gg;
}

// The split regexes of byte-level BPE pre-tokenizers (tokenizer.ggml.pre), the tokenizers' own
// patterns: Llama 3's, Qwen 2's, Qwen 3.5's (letters with their combining marks), Mistral's
// Tekken and GPT-4o's (o200k: words split at case changes, contractions kept on the word).
inline constexpr std::string_view kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kQwen2Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kQwen35Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kTekkenSplit =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kGpt4oSplit =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// llama.cpp's converter interleaves the two rotary halves of each q/k head for the llama
// architecture: HF row h*hd + j*hd/2 + r is GGUF row h*hd + 2r + j. `to_gguf` applies it, else
// undoes it. `t` is F32 with `heads` * hd rows.
inline Tensor permute_qk_rows(const Tensor& t, int64_t heads, bool to_gguf) {
  const int64_t rows = t.shape()[0], cols = t.numel() / rows, hd = rows / heads;
  Tensor out(t.shape(), DType::kF32);
  const float* src = t.data<float>();
  float* dst = out.data<float>();
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t j = 0; j < 2; ++j) {
      for (int64_t r = 0; r < hd / 2; ++r) {
        const int64_t hf_row = h * hd + j * hd / 2 + r, gguf_row = h * hd + 2 * r + j;
        std::copy_n(src + (to_gguf ? hf_row : gguf_row) * cols, cols,
                    dst + (to_gguf ? gguf_row : hf_row) * cols);
      }
    }
  }
  return out;
}

}  // namespace magix::gguf
