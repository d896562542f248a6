// Kernels of the device collectives (nccl_collectives.cpp): the dim-1 block interleave around
// NCCL's contiguous chunks and the rank-order sum of a reduce-scatter (collective_math.hpp).
#include "backends/cuda/collective_math.hpp"
#include "backends/cuda/kernels.hpp"

namespace magix::cuda {
namespace {

// full (rows, n * cols) = blocks (n, rows, cols), each element once.
__global__ void blocks_to_columns_kernel(float* full, const float* blocks, int64_t rows,
                                         int64_t cols, int64_t n) {
  const int64_t total = rows * n * cols;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    full[i] = blocks[block_major_index(i, rows, cols, n)];
  }
}

__global__ void columns_to_blocks_kernel(float* blocks, const float* full, int64_t rows,
                                         int64_t cols, int64_t n) {
  const int64_t total = rows * n * cols;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    blocks[block_major_index(i, rows, cols, n)] = full[i];
  }
}

__global__ void rank_order_sum_add_kernel(float* local, const float* chunks, int64_t m, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < m;
       i += stride) {
    local[i] += rank_order_sum(chunks, m, n, i);
  }
}

unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(elementwise_blocks(n));
}

}  // namespace

void blocks_to_columns(float* full, const float* blocks, int64_t rows, int64_t cols, int64_t n,
                       cudaStream_t s) {
  if (rows * cols * n <= 0) return;
  blocks_to_columns_kernel<<<blocks_for(rows * cols * n), kThreads, 0, s>>>(full, blocks, rows,
                                                                            cols, n);
}

void columns_to_blocks(float* blocks, const float* full, int64_t rows, int64_t cols, int64_t n,
                       cudaStream_t s) {
  if (rows * cols * n <= 0) return;
  columns_to_blocks_kernel<<<blocks_for(rows * cols * n), kThreads, 0, s>>>(blocks, full, rows,
                                                                            cols, n);
}

void rank_order_sum_add(float* local, const float* chunks, int64_t m, int64_t n, cudaStream_t s) {
  if (m <= 0) return;
  rank_order_sum_add_kernel<<<blocks_for(m), kThreads, 0, s>>>(local, chunks, m, n);
}

}  // namespace magix::cuda
