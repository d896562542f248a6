// The index arithmetic of the device collectives (nccl_collectives.cpp, collectives.cu), shared
// with the host: plain C++ when not compiled by nvcc, so tests/backends/cuda_collective_helpers_
// test.cpp checks it on the CPU against the host path of src/shard/shard_ops.cpp.
//
// A collective along dim 1 of (rows, n * cols) moves n blocks of (rows, cols), block r being
// columns [r * cols, (r + 1) * cols). NCCL moves contiguous chunks, so the blocks travel
// "block-major": (n, rows, cols), block r contiguous at r * rows * cols.
#pragma once

#include <cstdint>

#include "backends/cuda/kernel_math.hpp"

namespace magix::cuda {

// Element i of the (rows, n * cols) row-major tensor -> its index in the block-major buffer
// (n, rows, cols). A gather writes full[i] = buf[block_major_index(i)]; a reduce-scatter's send
// buffer is buf[block_major_index(i)] = full[i].
MAGIX_HD int64_t block_major_index(int64_t i, int64_t rows, int64_t cols, int64_t n) {
  const int64_t width = n * cols;
  const int64_t row = i / width, c = i % width;
  const int64_t r = c / cols, j = c % cols;
  return (r * rows + row) * cols + j;
}

// Element i of a rank's shard from the n blocks it received (chunks (n, m), block r from rank r):
// their sum in rank order, ((c0 + c1) + c2) + ..., the order of the host path's reduce-scatter
// (src/dist/mpi_communicator.cpp), then added to the shard's value: local += sum.
MAGIX_HD float rank_order_sum(const float* chunks, int64_t m, int64_t n, int64_t i) {
  float s = chunks[i];
  for (int64_t r = 1; r < n; ++r) s += chunks[r * m + i];
  return s;
}

}  // namespace magix::cuda
