// The architecture of a decoder, parsed strictly from a Hugging Face config.json
// (model_type llama, mistral, gemma, qwen2, qwen3, gemma2, gemma3_text or phi3; the field names
// and defaults of transformers 5.23,
// both the older rope_theta/rope_scaling layout and the newer rope_parameters one).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace magix {

enum class ModelFamily { kLlama, kMistral, kGemma, kQwen2, kQwen3, kGemma2, kGemma3Text, kPhi3 };

// The gated MLP's activation: SiLU (SwiGLU) or tanh-approximated GELU (GeGLU).
enum class Activation { kSilu, kGeluTanh };

// How rotary frequencies are scaled (transformers' rope types default, linear, llama3, yarn and
// longrope).
struct RopeScaling {
  enum class Kind { kNone, kLinear, kLlama3, kYarn, kLongRope };
  Kind kind = Kind::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;          // llama3
  float high_freq_factor = 4.0f;         // llama3
  int64_t original_max_position = 8192;  // llama3, yarn, longrope
  double beta_fast = 32, beta_slow = 1;  // yarn: the ramp's bounds in rotations
  bool truncate = true;                  // yarn: round the ramp's bounds to whole dims
  // longrope (Phi-3 128k, Phi-3.5): the divisors of the D/2 inverse frequencies for sequences up
  // to original_max_position (short) and past it (long; chosen per forward by the largest
  // position, as transformers does).
  std::vector<float> short_factor, long_factor;
  // cos and sin are multiplied by this (transformers' attention_scaling; yarn's attention_factor
  // or mscale rule, 1 for the other types).
  float attention_scaling = 1.0f;
};

std::string_view family_name(ModelFamily family);

struct ModelConfig {
  ModelFamily family = ModelFamily::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;        // C
  int64_t intermediate_size = 0;  // I
  int64_t num_layers = 0;         // L
  int64_t num_heads = 0;          // Hq
  int64_t num_kv_heads = 0;       // Hkv (divides Hq)
  int64_t head_dim = 0;           // D (even)
  // R <= D, even: RoPE rotates each head's first R dims (int(D · partial_rotary_factor); phi3,
  // Phi-4-mini 0.75) and leaves the rest; 0 means D.
  int64_t rotary_dim = 0;
  int64_t rope_dim() const { return rotary_dim > 0 ? rotary_dim : head_dim; }
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;     // kNone, kLinear, kLlama3 or kYarn
  bool attention_bias = false;  // bias on q, k, v projections
  bool o_proj_bias = false;     // bias on o_proj (llama's attention_bias covers o too; qwen2: none)
  bool mlp_bias = false;        // bias on gate, up, down
  bool tie_word_embeddings = false;  // lm_head shares model.embed_tokens.weight
  Activation activation = Activation::kSilu;
  float norm_offset = 0.0f;  // gemma: RMSNorm scales by (1 + w)
  float embed_scale = 1.0f;  // gemma: embeddings times sqrt(hidden_size), rounded to fp32
  // Per layer: keys further back than this are masked (query i sees key j iff i - j < window);
  // 0 = unlimited. Size num_layers.
  std::vector<int64_t> sliding_window;
  // qwen3, gemma3_text: RMSNorm (with norm_offset) over each head's q and k after the
  // projections, before RoPE: self_attn.q_norm / k_norm weights of size head_dim.
  bool qk_norm = false;
  // gemma2, gemma3_text: RMSNorm on the attention output (post_attention_layernorm, before the
  // residual add) and around the MLP (pre_feedforward_layernorm before it,
  // post_feedforward_layernorm on its output).
  bool sandwich_norms = false;
  // q·k is scaled by query_pre_attn_scalar^-0.5 when > 0 (gemma2, gemma3_text), else
  // head_dim^-0.5.
  double query_pre_attn_scalar = 0;
  float attn_softcap = 0;   // gemma2: attn_logit_softcapping (0: none)
  float final_softcap = 0;  // gemma2, gemma3_text: final_logit_softcapping (0: none)
  // gemma3_text: the RoPE of the sliding layers (rope_parameters.sliding_attention, or the older
  // rope_local_base_freq); local_rope[l] != 0 where layer l uses it (size num_layers; empty:
  // every layer uses rope_theta / rope_scaling).
  float rope_local_theta = 10000.0f;
  RopeScaling rope_local_scaling;
  std::vector<char> local_rope;
  int64_t max_position_embeddings = 0;
  double initializer_range = 0.02;
  std::optional<int64_t> pad_token_id, bos_token_id;
  std::vector<int64_t> eos_token_ids;

  nlohmann::json raw;  // the config.json as read (written back by `magix init`)
};

// Parses the JSON of a config.json; `source` names the file in error messages. Unsupported
// values (another model_type, rope type, activation, attention_dropout > 0, ...) and missing
// required fields throw magix::Error naming the field. Unknown keys are ignored.
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& source);

// Reads and parses `path` (a config.json file).
ModelConfig load_model_config(const std::filesystem::path& path);

}  // namespace magix
