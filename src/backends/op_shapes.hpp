// How the ops read their tensors' shapes (backends/backend.hpp's conventions): for the op checks
// (op_checks.cpp) and for the backends' kernels, which run after them and so take the shapes as
// checked.
#pragma once

#include <cstdint>

#include "magix/tensor.hpp"

namespace magix::backends {

// A tensor read as a matrix: (numel / last dim, last dim); a scalar is (1, 1).
struct Mat {
  int64_t rows, cols;
};

inline Mat mat(const Tensor& t) {
  if (t.ndim() == 0) return {1, 1};
  const int64_t cols = t.dim(-1);
  return {cols == 0 ? 0 : t.numel() / cols, cols};
}

// (B, T, H, D) of a 4-D attention tensor (q, k, v, a KV cache as (B, S, Hkv, D)).
struct Heads {
  int64_t B, T, H, D;
};

inline Heads heads(const Tensor& t) {
  return {t.dim(0), t.dim(1), t.dim(2), t.dim(3)};
}

// (N, H, D) of a rope operand x against its table (N, R): x (N, H, D) when it is 3-D, else
// (N, H·R) (each head R wide); the first R of each head's D dims are rotated.
struct RopeDims {
  int64_t N, H, D, R;
};

inline RopeDims rope_dims(const Tensor& x, const Tensor& table) {
  const Mat t = mat(table);
  const int64_t D = x.ndim() == 3 ? x.dim(2) : t.cols;
  return {t.rows, x.numel() / (t.rows * D), D, t.cols};
}

}  // namespace magix::backends
