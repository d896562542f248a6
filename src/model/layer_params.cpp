#include "model/layer_params.hpp"

#include <fmt/format.h>

namespace magix::model {

std::string layer_param_name(int64_t layer, LayerParam p) {
  return fmt::format("model.layers.{}.{}", layer, kLayerParamNames[p]);
}

std::optional<Shape> layer_param_shape(const ModelConfig& c, LayerParam p) {
  const int64_t C = c.hidden_size, I = c.intermediate_size;
  const int64_t q_out = c.num_heads * c.head_dim, kv_out = c.num_kv_heads * c.head_dim;
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
    case kNumLayerParams:
      break;
  }
  return std::nullopt;
}

}  // namespace magix::model
