// How a decoder's parameters map onto this rank's layers: the local (tensor-parallel) sizes, the
// parameter index of every layer tensor, KV-head replication and the rotary frequencies. Shared
// by the training decoder and the generator, which run the same blocks.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "magix/mesh.hpp"
#include "magix/model.hpp"
#include "model/block.hpp"
#include "model/layer_params.hpp"
#include "shard/param_stream.hpp"

namespace magix::model {

inline constexpr int kNoParam = -1;

struct ModelLayout {
  int64_t C = 0, I = 0, Hq = 0, Hkv = 0, D = 0;  // local sizes
  int64_t R = 0;          // the rotated dims of each head (D, or fewer with partial_rotary_factor)
  int64_t V = 0, v0 = 0;  // this rank's vocab rows [v0, v0 + V)
  KvReplication kv;
  std::vector<std::array<int, kNumLayerParams>> layers;    // parameter index, or kNoParam
  int embed = kNoParam, norm = kNoParam, head = kNoParam;  // head == embed when tied
  std::vector<char> kv_rows;    // per parameter: taken per KV head (replicated KV heads)
  std::vector<float> inv_freq;  // (R/2)
  // longrope: the frequencies of a forward whose largest position + 1 passes long_from (HF picks
  // per forward), else empty.
  std::vector<float> inv_freq_long;
  int64_t long_from = 0;
  float rope_scale = 1.0f;            // cos and sin times this (RopeScaling::attention_scaling)
  std::vector<float> inv_freq_local;  // (R/2) of the sliding layers' RoPE, or empty (gemma3_text)
  float rope_scale_local = 1.0f;      // the sliding layers' attention_scaling

  // Fused weights (and their gradients, LoRA B): the parts as row views (model::split_fused with
  // this rank's q, k/v and intermediate rows).
  void split_fused(std::array<Tensor, kNumLayerParams>& t) const;

  // The dims of layer l for a call of B rows of T positions.
  BlockDims dims(const ModelConfig& c, int64_t l, int64_t B, int64_t T, DType compute) const;
};

// Checks that `params` has the layout of shard_parameters(expected_parameters(config), mesh)
// with specs the layers implement and sizes that split over the model axis (errors name the
// parameter), and returns the layout.
ModelLayout make_layout(const ModelConfig& config, const Mesh& mesh, const ParameterSet& params);

}  // namespace magix::model
