#include "model/layer_params.hpp"

#include <fmt/format.h>

#include "magix/error.hpp"

namespace magix::model {

std::string layer_param_name(int64_t layer, LayerParam p) {
  return fmt::format("model.layers.{}.{}", layer, kLayerParamNames[p]);
}

std::optional<Shape> layer_param_shape(const ModelConfig& c, LayerParam p) {
  const int64_t C = c.hidden_size, I = c.intermediate_size;
  const int64_t q_out = c.num_heads * c.head_dim, kv_out = c.num_kv_heads * c.head_dim;
  // phi3 stores q, k, v and gate, up fused (kWqkv, kWgu) and has no biases.
  if (c.family == ModelFamily::kPhi3 && fused_of(p) != p) return std::nullopt;
  switch (p) {
    case kLn1:
    case kLn2:
      return Shape{C};
    case kWq:
      return Shape{q_out, C};
    case kWk:
    case kWv:
      return Shape{kv_out, C};
    case kWo:
      return Shape{C, q_out};
    case kWg:
    case kWu:
      return Shape{I, C};
    case kWd:
      return Shape{C, I};
    case kBq:
      if (c.attention_bias) return Shape{q_out};
      break;
    case kBk:
    case kBv:
      if (c.attention_bias) return Shape{kv_out};
      break;
    case kBo:
      if (c.o_proj_bias) return Shape{C};
      break;
    case kBg:
    case kBu:
      if (c.mlp_bias) return Shape{I};
      break;
    case kBd:
      if (c.mlp_bias) return Shape{C};
      break;
    case kQn:
    case kKn:
      if (c.qk_norm) return Shape{c.head_dim};
      break;
    case kLnPreFfn:
    case kLnPostFfn:
      if (c.sandwich_norms) return Shape{C};
      break;
    case kWqkv:
      if (c.family == ModelFamily::kPhi3) return Shape{q_out + 2 * kv_out, C};
      break;
    case kWgu:
      if (c.family == ModelFamily::kPhi3) return Shape{2 * I, C};
      break;
    case kNumLayerParams:
      break;
  }
  return std::nullopt;
}

}  // namespace magix::model

namespace magix::model {

void split_fused(std::array<Tensor, kNumLayerParams>& t, int64_t q_rows, int64_t kv_rows,
                 int64_t I) {
  if (t[kWqkv].defined()) {
    MAGIX_CHECK(t[kWqkv].dim(0) == q_rows + 2 * kv_rows,
                "qkv_proj: {} local rows, expected q {} + k {} + v {}", t[kWqkv].dim(0), q_rows,
                kv_rows, kv_rows);
    t[kWq] = t[kWqkv].rows(0, q_rows);
    t[kWk] = t[kWqkv].rows(q_rows, kv_rows);
    t[kWv] = t[kWqkv].rows(q_rows + kv_rows, kv_rows);
  }
  if (t[kWgu].defined()) {
    MAGIX_CHECK(t[kWgu].dim(0) == 2 * I, "gate_up_proj: {} local rows, expected gate {} + up {}",
                t[kWgu].dim(0), I, I);
    t[kWg] = t[kWgu].rows(0, I);
    t[kWu] = t[kWgu].rows(I, I);
  }
}

}  // namespace magix::model
