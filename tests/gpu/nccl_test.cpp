// NCCL collectives of CUDA tensors (src/backends/cuda/nccl_collectives.cpp) against the host path
// (src/shard/shard_ops.cpp on host tensors: MPI on the host, the reference), label `gpu`:
// - NcclOneRank: a group of one NCCL rank (a LocalCommunicator bootstraps it): gather,
//   reduce-scatter, all-reduce (sum, max) and all_reduce_add equal the host path bit for bit.
//   Needs one GPU and libnccl.so.2 (else skipped, saying which).
// - NcclTwoRanks (under `mpirun -np 2`, one GPU per rank; skipped with fewer than 2 GPUs): the
//   data group of a 2x1 mesh; gather and reduce-scatter along dims 0 and 1, all-reduce sum and
//   max, all_reduce_add on CUDA tensors through NCCL equal the same ops on host copies through
//   MPI bit for bit (with two ranks every sum is a + b, whichever order NCCL takes); and 3
//   training steps of the tiny llama of tests/fixtures/train on the 2x1 mesh give the same
//   losses with NCCL as with MAGIX_NCCL=0 (host staging), bit for bit.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "dist/device_collectives.hpp"
#include "../common/tiny_train.hpp"
#include "magix/distributed.hpp"
#include "magix/trainer.hpp"
#include "shard/shard_ops.hpp"
#if defined(MAGIX_TEST_CUDA)
#include "backends/cuda/cuda_backend.hpp"
#endif

namespace magix {
namespace {

namespace fs = std::filesystem;
const fs::path kFixtures = [] {
  const char* env = std::getenv("MAGIX_FIXTURES_DIR");
  return fs::path(env && *env ? env : MAGIX_FIXTURES_DIR);
}();

int visible_gpus() {
#if defined(MAGIX_TEST_CUDA)
  return cuda::visible_device_count();
#else
  return 0;
#endif
}

// Why NCCL cannot be tested here (empty: it can).
std::string skip_reason(int gpus_needed) {
  if (!has_backend(Device::kCuda)) return "this build of magix has no cuda backend";
  const DeviceCollectivesEngine* engine = collectives_engine_for(Device::kCuda);
  if (engine == nullptr) return "this build of magix has no NCCL (nccl.h was not found)";
  if (visible_gpus() < 1) return "no GPU is visible";
  if (visible_gpus() < gpus_needed) {
    return "fewer than " + std::to_string(gpus_needed) + " GPUs are visible";
  }
  if (std::string why = engine->unavailable_reason(); !why.empty()) return why;
  return "";
}

Tensor random_host(const Shape& shape, uint32_t seed) {
  Tensor t(shape, DType::kF32);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (float& x : t.span<float>()) x = d(rng);
  return t;
}

bool same_bits(const Tensor& device, const Tensor& host) {
  const Tensor back = to_host(device);
  return back.shape() == host.shape() &&
         std::memcmp(back.bytes(), host.bytes(), host.nbytes()) == 0;
}

TEST(NcclOneRank, EqualsTheHostPath) {
  if (const std::string why = skip_reason(1); !why.empty()) GTEST_SKIP() << why;
  LocalCommunicator one;
  std::unique_ptr<DeviceCollectives> nccl = collectives_engine_for(Device::kCuda)->create(one);
  const Backend& dev = backend_for(Device::kCuda);
  const Tensor local = random_host({5, 7}, 1), full = random_host({5, 7}, 2);
  const Tensor local_d = to_device(local, Device::kCuda), full_d = to_device(full, Device::kCuda);
  for (int dim : {0, 1}) {
    Tensor g_host({5, 7}, DType::kF32);
    model::gather_along_dim(one, local, dim, g_host);
    Tensor g_dev = dev.empty({5, 7}, DType::kF32);
    nccl->gather(local_d, dim, g_dev);
    EXPECT_TRUE(same_bits(g_dev, g_host)) << "gather dim " << dim;

    Tensor rs_host = local.clone();
    model::reduce_scatter_along_dim(one, full, dim, rs_host);
    Tensor rs_dev = to_device(local, Device::kCuda);
    nccl->reduce_scatter_add(full_d, dim, rs_dev);
    EXPECT_TRUE(same_bits(rs_dev, rs_host)) << "reduce_scatter dim " << dim;
  }
  Tensor ar_host = local.clone();
  model::all_reduce_add(one, full, ar_host);
  Tensor ar_dev = to_device(local, Device::kCuda);
  nccl->all_reduce_add(full_d, ar_dev);
  EXPECT_TRUE(same_bits(ar_dev, ar_host)) << "all_reduce_add";
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
    Tensor x = to_device(local, Device::kCuda);
    nccl->all_reduce(x, op);
    EXPECT_TRUE(same_bits(x, local)) << "all_reduce";
  }
}

// The two-rank checks: world of 2 under mpirun, a GPU each.
std::string two_rank_skip_reason(const Mesh& mesh) {
  if (mesh.world_size() != 2)
    return "run under mpirun -np 2 (this world has " + std::to_string(mesh.world_size()) +
           " ranks)";
  return skip_reason(2);
}

TEST(NcclTwoRanks, CollectivesEqualTheHostPathBitForBit) {
  Mesh probe = create_device_mesh({-1, 1});
  if (const std::string why = two_rank_skip_reason(probe); !why.empty()) GTEST_SKIP() << why;
  Mesh mesh = create_device_mesh({2, 1});
  Communicator& group = mesh.data();
  ASSERT_TRUE(model::collectives_on_device(group, Device::kCuda)) << "NCCL was not chosen";
  const int rank = group.rank();
  const Backend& dev = backend_for(Device::kCuda);
  for (int dim : {0, 1}) {
    const Shape local_shape{6, 9}, full_shape = dim == 0 ? Shape{12, 9} : Shape{6, 18};
    const Tensor local = random_host(local_shape, 10 + rank);
    const Tensor full = random_host(full_shape, 20 + rank);

    Tensor g_host(full_shape, DType::kF32);
    model::gather_along_dim(group, local, dim, g_host);
    Tensor g_dev = dev.empty(full_shape, DType::kF32);
    model::gather_along_dim(group, to_device(local, Device::kCuda), dim, g_dev);
    EXPECT_TRUE(same_bits(g_dev, g_host)) << "gather dim " << dim << " rank " << rank;

    Tensor rs_host = local.clone();
    model::reduce_scatter_along_dim(group, full, dim, rs_host);
    Tensor rs_dev = to_device(local, Device::kCuda);
    model::reduce_scatter_along_dim(group, to_device(full, Device::kCuda), dim, rs_dev);
    EXPECT_TRUE(same_bits(rs_dev, rs_host)) << "reduce_scatter dim " << dim << " rank " << rank;
  }
  const Tensor x = random_host({1000}, 30 + rank), y = random_host({1000}, 40 + rank);
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
    Tensor h = x.clone();
    model::all_reduce(group, h, op);
    Tensor d = to_device(x, Device::kCuda);
    model::all_reduce(group, d, op);
    EXPECT_TRUE(same_bits(d, h)) << "all_reduce " << (op == ReduceOp::kSum ? "sum" : "max");
  }
  Tensor acc_host = y.clone();
  model::all_reduce_add(group, x, acc_host);
  Tensor acc_dev = to_device(y, Device::kCuda);
  model::all_reduce_add(group, to_device(x, Device::kCuda), acc_dev);
  EXPECT_TRUE(same_bits(acc_dev, acc_host)) << "all_reduce_add";
}

std::vector<double> train_losses(bool nccl) {
  if (nccl) {
    unsetenv("MAGIX_NCCL");
  } else {
    setenv("MAGIX_NCCL", "0", 1);
  }
  Mesh mesh = create_device_mesh({2, 1});  // fresh groups: the path is chosen per group
  EXPECT_EQ(model::collectives_on_device(mesh.data(), Device::kCuda), nccl);
  TrainArgs a = test::tiny_train_args(kFixtures);
  a.max_steps = 3;
  a.mesh_shape = {2, 1};
  a.device = "cuda";
  std::unique_ptr<Trainable> model = make_full_trainable(a, mesh);
  std::vector<double> losses = run_training(a, mesh, *model).losses;
  unsetenv("MAGIX_NCCL");
  return losses;
}

TEST(NcclTwoRanks, TrainingLossesEqualHostStaging) {
  Mesh probe = create_device_mesh({-1, 1});
  if (const std::string why = two_rank_skip_reason(probe); !why.empty()) GTEST_SKIP() << why;
  const std::vector<double> nccl = train_losses(true);
  const std::vector<double> host = train_losses(false);
  ASSERT_EQ(nccl.size(), 3u);
  EXPECT_EQ(nccl, host);
  for (size_t i = 0; i < nccl.size(); ++i) {
    RecordProperty("loss_" + std::to_string(i), std::to_string(nccl[i]));
  }
}

}  // namespace
}  // namespace magix

int main(int argc, char** argv) {
  magix::Runtime runtime(&argc, &argv);
  testing::InitGoogleTest(&argc, argv);
  // One GPU per rank (local rank modulo the visible GPUs), before the first CUDA tensor.
  if (magix::visible_gpus() > 0) (void)magix::use_device("cuda");
  return RUN_ALL_TESTS();
}
