// The index arithmetic of the NCCL collectives (src/backends/cuda/collective_math.hpp), checked on
// the CPU against the host path of src/shard/shard_ops.cpp: the device gather (all-gather of
// blocks, then blocks_to_columns's interleave) and the device reduce-scatter (columns_to_blocks,
// all-to-all, rank-order sum) are replayed here with the helpers for every rank of a simulated
// group, and must equal the host path's results bit for bit. The simulated group plays the MPI
// communicator: all_gather concatenates the ranks' inputs, reduce_scatter is the all-to-all and
// rank-order sum of src/dist/mpi_communicator.cpp. Runs in every build (plain C++ without nvcc).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "backends/cuda/collective_math.hpp"
#include "magix/communicator.hpp"
#include "magix/tensor.hpp"
#include "shard/shard_ops.hpp"

namespace magix::cuda {
namespace {

// Rank `rank` of a group of n whose peers' inputs are known in advance: all_gather returns the
// ranks' shards (gather_in) in rank order; reduce_scatter records this rank's input and, once
// every rank's input is known (sent), returns the sum of their blocks `rank` in rank order.
class SimulatedGroup final : public Communicator {
 public:
  SimulatedGroup(int rank, int n) : rank_(rank), n_(n) {}
  int rank() const override { return rank_; }
  int size() const override { return n_; }
  void all_reduce(std::span<float>, ReduceOp) override { FAIL() << "not used"; }
  void all_reduce(std::span<double>, ReduceOp) override { FAIL() << "not used"; }
  void all_gather(std::span<const float> in, std::span<float> out) override {
    ASSERT_EQ(in.size() * n_, out.size());
    ASSERT_EQ(0, std::memcmp(in.data(), gather_in[rank_].data(), in.size_bytes()));
    for (int r = 0; r < n_; ++r) {
      std::copy(gather_in[r].begin(), gather_in[r].end(), out.begin() + r * in.size());
    }
  }
  void reduce_scatter(std::span<const float> in, std::span<float> out) override {
    recorded.assign(in.begin(), in.end());
    if (sent.empty()) {
      std::fill(out.begin(), out.end(), 0.0f);
      return;
    }
    const size_t m = out.size();
    for (size_t i = 0; i < m; ++i) {
      float s = sent[0][rank_ * m + i];
      for (int r = 1; r < n_; ++r) s += sent[r][rank_ * m + i];
      out[i] = s;
    }
  }
  void broadcast(std::span<std::byte>, int) override {}
  void barrier() override {}

  std::vector<std::vector<float>> gather_in;  // every rank's shard
  std::vector<std::vector<float>> sent;       // every rank's reduce-scatter input
  std::vector<float> recorded;                // this rank's last reduce-scatter input

 private:
  int rank_, n_;
};

std::vector<float> values(const Tensor& t) {
  return std::vector<float>(t.span<float>().begin(), t.span<float>().end());
}

Tensor random_tensor(const Shape& shape, std::mt19937& rng) {
  Tensor t(shape, DType::kF32);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (float& x : t.span<float>()) x = d(rng);
  return t;
}

struct Case {
  int n;
  int64_t rows, cols;  // of one rank's block
  int dim;
};

const Case kCases[] = {{2, 3, 5, 1}, {3, 1, 7, 1}, {4, 5, 1, 1}, {3, 4, 6, 0},
                       {2, 1, 9, 0}, {5, 2, 3, 1}, {1, 3, 4, 1}};

TEST(CudaCollectiveHelpers, BlockMajorIndexIsAPermutation) {
  for (const Case& c : kCases) {
    const int64_t total = c.n * c.rows * c.cols;
    std::vector<int> hits(static_cast<size_t>(total), 0);
    for (int64_t i = 0; i < total; ++i) {
      const int64_t k = block_major_index(i, c.rows, c.cols, c.n);
      ASSERT_GE(k, 0);
      ASSERT_LT(k, total);
      ++hits[static_cast<size_t>(k)];
    }
    for (int h : hits) ASSERT_EQ(h, 1);
  }
}

// The device gather: every rank's shard all-gathered in rank order (NCCL's chunks), then
// full[i] = blocks[block_major_index(i)] along dim 1 (dim 0 needs no interleave).
TEST(CudaCollectiveHelpers, GatherEqualsHostPath) {
  std::mt19937 rng(11);
  for (const Case& c : kCases) {
    const Shape local_shape = c.dim == 1 ? Shape{c.rows, c.cols} : Shape{c.rows * c.cols};
    const Shape full_shape =
        c.dim == 1 ? Shape{c.rows, c.n * c.cols} : Shape{c.n * c.rows * c.cols};
    std::vector<Tensor> locals;
    std::vector<std::vector<float>> shards;
    for (int r = 0; r < c.n; ++r) {
      locals.push_back(random_tensor(local_shape, rng));
      shards.push_back(values(locals.back()));
    }
    std::vector<float> blocks;  // what ncclAllGather leaves: (n, rows, cols)
    for (const auto& s : shards) blocks.insert(blocks.end(), s.begin(), s.end());
    for (int rank = 0; rank < c.n; ++rank) {
      SimulatedGroup group(rank, c.n);
      group.gather_in = shards;
      Tensor host(full_shape, DType::kF32);
      model::gather_along_dim(group, locals[rank], c.dim, host);
      std::vector<float> device(blocks.size());
      for (size_t i = 0; i < device.size(); ++i) {
        device[i] = c.dim == 1
                        ? blocks[block_major_index(static_cast<int64_t>(i), c.rows, c.cols, c.n)]
                        : blocks[i];
      }
      ASSERT_EQ(0, std::memcmp(device.data(), host.bytes(), host.nbytes()))
          << "n " << c.n << " rows " << c.rows << " cols " << c.cols << " dim " << c.dim;
    }
  }
}

// The device reduce-scatter: each rank's send buffer blocks[block_major_index(i)] = full[i]
// (dim 1), block k to rank k; rank k adds the n blocks it received summed in rank order.
TEST(CudaCollectiveHelpers, ReduceScatterEqualsHostPath) {
  std::mt19937 rng(12);
  for (const Case& c : kCases) {
    const int64_t m = c.rows * c.cols;
    const Shape local_shape = c.dim == 1 ? Shape{c.rows, c.cols} : Shape{m};
    const Shape full_shape = c.dim == 1 ? Shape{c.rows, c.n * c.cols} : Shape{c.n * m};
    std::vector<Tensor> fulls, locals;
    std::vector<std::vector<float>> sends;  // the device path's send buffers
    for (int r = 0; r < c.n; ++r) {
      fulls.push_back(random_tensor(full_shape, rng));
      locals.push_back(random_tensor(local_shape, rng));
      const std::vector<float> f = values(fulls.back());
      std::vector<float> send(f.size());
      for (size_t i = 0; i < f.size(); ++i) {
        send[c.dim == 1 ? block_major_index(static_cast<int64_t>(i), c.rows, c.cols, c.n) : i] =
            f[i];
      }
      sends.push_back(send);
    }
    // The host path's inputs to the communicator are the device path's send buffers.
    std::vector<std::vector<float>> host_sent;
    for (int rank = 0; rank < c.n; ++rank) {
      SimulatedGroup group(rank, c.n);
      Tensor scratch(local_shape, DType::kF32);
      model::reduce_scatter_along_dim(group, fulls[rank], c.dim, scratch);
      ASSERT_EQ(group.recorded, sends[rank]) << "rank " << rank;
      host_sent.push_back(group.recorded);
    }
    for (int rank = 0; rank < c.n; ++rank) {
      SimulatedGroup group(rank, c.n);
      group.sent = host_sent;
      Tensor host = Tensor(local_shape, DType::kF32);
      std::memcpy(host.bytes(), locals[rank].bytes(), host.nbytes());
      model::reduce_scatter_along_dim(group, fulls[rank], c.dim, host);
      // The all-to-all: chunks (n, m), block r = rank r's block `rank`.
      std::vector<float> chunks(static_cast<size_t>(c.n * m));
      for (int r = 0; r < c.n; ++r) {
        std::copy_n(sends[r].begin() + rank * m, m, chunks.begin() + r * m);
      }
      std::vector<float> device = values(locals[rank]);
      for (int64_t i = 0; i < m; ++i) device[i] += rank_order_sum(chunks.data(), m, c.n, i);
      ASSERT_EQ(0, std::memcmp(device.data(), host.bytes(), host.nbytes()))
          << "n " << c.n << " rows " << c.rows << " cols " << c.cols << " dim " << c.dim;
    }
  }
}

// The order is the point: ((1e8 + 1) + -1e8) + 1 is not 1 + (-1e8 + (1 + 1e8)) in fp32.
TEST(CudaCollectiveHelpers, RankOrderSumIsALeftFoldInRankOrder) {
  const float chunks[] = {1e8f, 1.0f, -1e8f, 1.0f};  // n = 4 blocks of m = 1
  const float fold = ((chunks[0] + chunks[1]) + chunks[2]) + chunks[3];
  const float reversed = ((chunks[3] + chunks[2]) + chunks[1]) + chunks[0];
  ASSERT_NE(fold, reversed);
  EXPECT_EQ(rank_order_sum(chunks, 1, 4, 0), fold);
  const float two[] = {3.0f, 5.0f, 7.0f, 11.0f};  // n = 2 blocks of m = 2
  EXPECT_EQ(rank_order_sum(two, 2, 2, 0), 10.0f);
  EXPECT_EQ(rank_order_sum(two, 2, 2, 1), 16.0f);
}

}  // namespace
}  // namespace magix::cuda
