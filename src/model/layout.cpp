#include "model/layout.hpp"

#include <cmath>

#include "magix/error.hpp"
#include "model/rope_frequencies.hpp"

namespace magix::model {
namespace {

int index_of(const ParameterSet& p, const std::string& name) {
  auto i = p.find(name);
  return i ? static_cast<int>(*i) : kNoParam;
}

// The layers implement one tensor-parallel layout: the model axis of the default rules. The
// data axis may shard any one dim (FSDP gathers it whole before use). The model axis may be left
// out where a model axis of size 1 makes it moot (e.g. everything replicated: plain data
// parallelism); it may never stand on another dim.
void check_supported_spec(const ParamInfo& p, const PartitionSpec& default_spec,
                          int64_t model_size) {
  for (size_t d = 0; d < p.global_shape.size(); ++d) {
    const bool model = p.spec.axis(d) == "model";
    const bool want = default_spec.axis(d) == "model";
    MAGIX_CHECK(model == want || (!model && model_size == 1),
                "parameter '{}': partition spec {} is not supported by the decoder; the model "
                "axis must shard it as {} does (vocab / column-parallel weights (model, *), "
                "row-parallel weights (*, model), q/k/v/gate/up biases (model)); the data "
                "axis may shard any one dim",
                p.name, p.spec.str(), default_spec.str());
  }
}

// Fused tensors (phi3's qkv_proj, gate_up_proj) hold their parts' rows in order: split over model,
// each rank must hold its slice of every part (the default rules' parts); split over data, FSDP
// gathers contiguous rows, so the data axis may shard dim 0 only without parts. A tensor that is
// not fused takes no parts.
void check_fused_spec(const ParamInfo& p, const ParamInfo& expected, const Mesh& mesh) {
  if (expected.part_rows.empty()) {
    MAGIX_CHECK(p.part_rows.empty(),
                "parameter '{}': partition spec {} gives parts, but the tensor is not fused",
                p.name, p.spec.str());
    return;
  }
  if (mesh.model_size() > 1) {
    MAGIX_CHECK(p.part_rows == expected.part_rows,
                "parameter '{}': partition spec {} is not supported by the decoder: the fused "
                "tensor must be split over the model axis part by part, as {}",
                p.name, p.spec.str(), expected.spec.str());
  }
  MAGIX_CHECK(!(p.spec.axis(0) == "data" && mesh.data_size() > 1 && !p.part_rows.empty()),
              "parameter '{}': partition spec {} is not supported by the decoder: a fused tensor's "
              "dim 0 may be sharded over data only without parts (FSDP gathers contiguous rows)",
              p.name, p.spec.str());
}

}  // namespace

void ModelLayout::split_fused(std::array<Tensor, kNumLayerParams>& t) const {
  model::split_fused(t, Hq * D, Hkv * D, I);
}

BlockDims ModelLayout::dims(const ModelConfig& c, int64_t l, int64_t B, int64_t T,
                            DType compute) const {
  BlockDims d;
  d.B = B;
  d.T = T;
  d.C = C;
  d.I = I;
  d.Hq = Hq;
  d.Hkv = Hkv;
  d.D = D;
  d.eps = c.rms_norm_eps;
  d.norm_offset = c.norm_offset;
  // transformers: head_dim**-0.5, or query_pre_attn_scalar**-0.5 (gemma2, gemma3_text).
  d.attn_scale = c.query_pre_attn_scalar > 0
                     ? static_cast<float>(std::pow(c.query_pre_attn_scalar, -0.5))
                     : static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  d.act = c.activation;
  d.window = c.sliding_window[static_cast<size_t>(l)];
  d.softcap = c.attn_softcap;
  d.qk_norm = c.qk_norm;
  d.sandwich = c.sandwich_norms;
  d.local_rope = !c.local_rope.empty() && c.local_rope[static_cast<size_t>(l)] != 0;
  d.compute = compute;
  return d;
}

ModelLayout make_layout(const ModelConfig& c, const Mesh& mesh, const ParameterSet& params) {
  const int64_t M = mesh.model_size();
  // Tensor parallelism splits whole heads, MLP columns and vocabulary rows: name the first
  // parameter whose split the config does not allow.
  auto check_split = [&](const std::string& param, const char* field, int64_t n) {
    MAGIX_CHECK(n % M == 0,
                "parameter '{}' cannot be split over the model axis of size {}: {} ({}) must "
                "divide by it",
                param, M, field, n);
  };
  check_split("model.embed_tokens.weight", "vocab_size", c.vocab_size);
  check_split("model.layers.0.self_attn.q_proj.weight", "num_attention_heads", c.num_heads);
  // Fewer KV heads than model ranks: each KV head is replicated on M / num_key_value_heads
  // consecutive model ranks (those whose query heads use it).
  const bool kv_split = c.num_kv_heads % M == 0;
  MAGIX_CHECK(kv_split || M % c.num_kv_heads == 0,
              "parameter 'model.layers.0.self_attn.k_proj.weight' cannot be split over the model "
              "axis of size {}: num_key_value_heads ({}) must divide by it, or divide it (then "
              "each KV head is replicated)",
              M, c.num_kv_heads);
  check_split("model.layers.0.mlp.gate_proj.weight", "intermediate_size", c.intermediate_size);
  // A fused qkv_proj is split part by part: its k and v parts cannot be replicated per KV head.
  MAGIX_CHECK(c.family != ModelFamily::kPhi3 || kv_split,
              "parameter 'model.layers.0.self_attn.qkv_proj.weight' cannot be split over the "
              "model axis of size {}: its k and v parts have num_key_value_heads ({}) heads, "
              "which must divide by it",
              M, c.num_kv_heads);
  std::vector<ParamInfo> expected = expected_parameters(c);
  MAGIX_CHECK(expected.size() == params.size(), "parameter set has {} tensors, the config {}",
              params.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const ParamInfo& p = params.info(i);
    check_supported_spec(p, expected[i].spec, M);
    check_fused_spec(p, expected[i], mesh);
    MAGIX_CHECK(expected[i].name == p.name && expected[i].global_shape == p.global_shape &&
                    p.box_extent == params.tensor(i).shape(),
                "parameter {} ('{}' {}) does not match the config's layout ('{}' {})", i, p.name,
                shape_str(params.tensor(i).shape()), expected[i].name,
                shape_str(expected[i].global_shape));
  }
  ModelLayout s;
  s.C = c.hidden_size;
  s.I = c.intermediate_size / M;
  s.Hq = c.num_heads / M;
  s.Hkv = kv_split ? c.num_kv_heads / M : 1;
  s.kv.replicas = kv_split ? 1 : M / c.num_kv_heads;
  s.kv.head = mesh.model_rank() / s.kv.replicas;
  s.kv.head_rows = c.head_dim;
  s.D = c.head_dim;
  s.R = c.rope_dim();
  s.V = c.vocab_size / M;
  s.v0 = mesh.model_rank() * s.V;
  s.inv_freq = rope_inv_freq(s.R, c.rope_theta, c.rope_scaling);
  if (c.rope_scaling.kind == RopeScaling::Kind::kLongRope) {
    s.inv_freq_long = rope_inv_freq(s.R, c.rope_theta, c.rope_scaling, /*long=*/true);
    s.long_from = c.rope_scaling.original_max_position;
  }
  s.rope_scale = c.rope_scaling.attention_scaling;
  if (!c.local_rope.empty()) {
    s.inv_freq_local = rope_inv_freq(s.R, c.rope_local_theta, c.rope_local_scaling);
    s.rope_scale_local = c.rope_local_scaling.attention_scaling;
  }
  s.kv_rows.assign(params.size(), 0);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    std::array<int, kNumLayerParams> idx;
    for (int p = 0; p < kNumLayerParams; ++p) {
      const auto lp = static_cast<LayerParam>(p);
      idx[p] = index_of(params, layer_param_name(l, lp));
      if (s.kv.replicas > 1 && is_kv_param(lp) && idx[p] != kNoParam) {
        s.kv_rows[static_cast<size_t>(idx[p])] = 1;
      }
    }
    s.layers.push_back(idx);
  }
  s.embed = index_of(params, "model.embed_tokens.weight");
  s.norm = index_of(params, "model.norm.weight");
  s.head = c.tie_word_embeddings ? s.embed : index_of(params, "lm_head.weight");
  return s;
}

}  // namespace magix::model
