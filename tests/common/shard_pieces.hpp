// Test helpers for tensors sharded over a mesh, fused tensors included: the local tensor of a
// rank is its boxes (shard_pieces) stacked along dim 0.
#pragma once

#include <cstring>

#include "magix/model.hpp"
#include "magix/safetensors.hpp"
#include "magix/sharding.hpp"

namespace magix::test {

// fn(global element, local element) for every element the rank at (data_rank, model_rank) of a
// (D, M) mesh holds of `info` (tensors of 1 or 2 dims).
template <class F>
void for_each_local_element(const ParamInfo& info, int D, int M, int data_rank, int model_rank,
                            F fn) {
  const int64_t cols = info.global_shape.size() == 2 ? info.global_shape[1] : 1;
  int64_t local_row = 0;
  for (const ShardBox& box : shard_pieces(info.name, info.global_shape, info.spec, info.part_rows,
                                          D, M, data_rank, model_rank)) {
    const int64_t c0 = box.start.size() == 2 ? box.start[1] : 0;
    const int64_t nc = box.extent.size() == 2 ? box.extent[1] : 1;
    for (int64_t i = 0; i < box.extent[0]; ++i) {
      for (int64_t j = 0; j < nc; ++j) {
        fn((box.start[0] + i) * cols + c0 + j, (local_row + i) * nc + j);
      }
    }
    local_row += box.extent[0];
  }
}

// The local tensor that rank (data_rank, model_rank) holds of the whole F32 tensor `full`.
inline Tensor local_of(const Tensor& full, const ParamInfo& info, int D, int M, int data_rank,
                       int model_rank) {
  Shape extent = shard_box(info.name, info.global_shape, info.spec, D, M, data_rank, model_rank)
                     .extent;
  Tensor out(extent);
  for_each_local_element(info, D, M, data_rank, model_rank, [&](int64_t g, int64_t l) {
    out.data<float>()[l] = full.data<float>()[g];
  });
  return out;
}

// This rank's local tensor of `name` in a safetensors file laid out as `info` (its pieces read
// box by box).
inline Tensor read_local_f32(const SafetensorsReader& reader, const std::string& name,
                             const ParamInfo& info) {
  Tensor out(info.box_extent);
  int64_t row = 0;
  for (const ShardBox& box : local_boxes(info)) {
    const Tensor piece = reader.read_box_f32(name, box.start, box.extent);
    Tensor dst = out.rows(row, box.extent[0]);
    std::memcpy(dst.bytes(), piece.bytes(), piece.nbytes());
    row += box.extent[0];
  }
  return out;
}

}  // namespace magix::test
