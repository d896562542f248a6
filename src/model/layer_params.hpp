// The parameters of one decoder layer, listed once: their HF names below "model.layers.{l}."
// in HF order, their shapes and which config fields make them exist. The decoder, the
// generator, parameter loading and init all read this table.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "magix/model_config.hpp"
#include "magix/tensor.hpp"

namespace magix::model {

enum LayerParam : int {
  kLn1,  // input_layernorm.weight (C)
  kWq,   // q_proj (Hq·D, C) and its bias
  kBq,
  kWk,  // k_proj (Hkv·D, C)
  kBk,
  kWv,  // v_proj (Hkv·D, C)
  kBv,
  kWo,  // o_proj (C, Hq·D)
  kBo,
  kLn2,  // post_attention_layernorm.weight (C): before the MLP, or with sandwich norms (gemma2,
         // gemma3_text) on the attention output
  kWg,   // gate_proj (I, C)
  kBg,
  kWu,  // up_proj (I, C)
  kBu,
  kWd,  // down_proj (C, I)
  kBd,
  kQn,         // self_attn.q_norm.weight (D): qk_norm (qwen3, gemma3_text)
  kKn,         // self_attn.k_norm.weight (D)
  kLnPreFfn,   // pre_feedforward_layernorm.weight (C): sandwich norms, before the MLP
  kLnPostFfn,  // post_feedforward_layernorm.weight (C): sandwich norms, on the MLP output
  // Fused weights (phi3; listed last so that the others keep their numbers): qkv_proj
  // (Hq·D + 2·Hkv·D, C) = q, k, v rows; gate_up_proj (2·I, C) = gate, up rows. A layer has these
  // or the unfused ones; the blocks see their parts as kWq, kWk, kWv, kWg, kWu (split_fused).
  kWqkv,
  kWgu,
  kNumLayerParams
};

inline constexpr std::array<std::string_view, kNumLayerParams> kLayerParamNames = {
    "input_layernorm.weight", "self_attn.q_proj.weight",
    "self_attn.q_proj.bias",  "self_attn.k_proj.weight",
    "self_attn.k_proj.bias",  "self_attn.v_proj.weight",
    "self_attn.v_proj.bias",  "self_attn.o_proj.weight",
    "self_attn.o_proj.bias",  "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",   "mlp.gate_proj.bias",
    "mlp.up_proj.weight",     "mlp.up_proj.bias",
    "mlp.down_proj.weight",   "mlp.down_proj.bias",
    "self_attn.q_norm.weight",          "self_attn.k_norm.weight",
    "pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight",
    "self_attn.qkv_proj.weight",        "mlp.gate_up_proj.weight",
};

// "model.layers.{l}." + the parameter's name.
std::string layer_param_name(int64_t layer, LayerParam p);

// The global shape of parameter p in a layer of `config`, or nullopt where the config has none
// (biases: attention_bias for q/k/v, o_proj_bias, mlp_bias; q/k norms: qk_norm; the feed-forward
// norms: sandwich_norms).
std::optional<Shape> layer_param_shape(const ModelConfig& config, LayerParam p);

// The linear weights (used in matmuls, in the compute dtype), as opposed to norms and biases.
constexpr bool is_linear_weight(LayerParam p) {
  return p == kWq || p == kWk || p == kWv || p == kWo || p == kWg || p == kWu || p == kWd ||
         p == kWqkv || p == kWgu;
}

// The fused weight a parameter is a part of (kWqkv for kWq, kWk, kWv; kWgu for kWg, kWu), or p.
constexpr LayerParam fused_of(LayerParam p) {
  if (p == kWq || p == kWk || p == kWv) return kWqkv;
  if (p == kWg || p == kWu) return kWgu;
  return p;
}

// Where a layer has fused weights (t[kWqkv] / t[kWgu] defined), sets its parts t[kWq], t[kWk],
// t[kWv] / t[kWg], t[kWu] to row views of them: local rows [0, q_rows), [q_rows, + kv_rows),
// [q_rows + kv_rows, + kv_rows) and [0, I), [I, 2·I). Works for weights, their gradient buffers
// and LoRA B matrices alike (their rows are fused the same way).
void split_fused(std::array<Tensor, kNumLayerParams>& t, int64_t q_rows, int64_t kv_rows,
                 int64_t I);

// The k/v projections' weights and biases (replicated per KV head when KV heads are fewer than
// the model axis).
constexpr bool is_kv_param(LayerParam p) {
  return p == kWk || p == kBk || p == kWv || p == kBv;
}

}  // namespace magix::model
