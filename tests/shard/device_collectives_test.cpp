// The choice between device collectives (NCCL) and host staging for tensors on a device
// (src/dist/device_collectives.cpp, src/shard/shard_ops.cpp), with a fake engine in place of NCCL
// and the emulated device of tests/common/emulated_device.hpp in place of a GPU: which path each
// collective takes for MAGIX_NCCL unset / 0 / 1 / invalid, an engine that cannot load (host
// staging and one note, on world rank 0 only), a peer that cannot load it (the group agrees on
// the host path), host tensors (never the engine), one engine per group made once, and a group
// of one (the device's own copy and add, equal to the host path).
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "../common/emulated_device.hpp"
#include "dist/device_collectives.hpp"
#include "magix/error.hpp"
#include "shard/shard_ops.hpp"

namespace magix {
namespace {

// Rank `rank` of a group of two: the host collectives record their name (and leave the buffers
// as they are); the all-reduce of the path's choice takes the max with the peer's verdict.
class TwoRankGroup final : public Communicator {
 public:
  explicit TwoRankGroup(int rank = 0, double peer_verdict = 0) : rank_(rank), peer_(peer_verdict) {}
  int rank() const override { return rank_; }
  int size() const override { return 2; }
  void all_reduce(std::span<float>, ReduceOp) override { host_ops.push_back("all_reduce"); }
  void all_reduce(std::span<double> d, ReduceOp op) override {
    ASSERT_EQ(op, ReduceOp::kMax);
    ASSERT_EQ(d.size(), 1u);
    d[0] = std::max(d[0], peer_);
    ++agreements;
  }
  void all_gather(std::span<const float>, std::span<float>) override {
    host_ops.push_back("all_gather");
  }
  void reduce_scatter(std::span<const float>, std::span<float>) override {
    host_ops.push_back("reduce_scatter");
  }
  void broadcast(std::span<std::byte>, int) override {}
  void barrier() override {}

  std::vector<std::string> host_ops;
  int agreements = 0;

 private:
  int rank_;
  double peer_;
};

class FakeCollectives final : public DeviceCollectives {
 public:
  explicit FakeCollectives(std::vector<std::string>* ops) : ops_(ops) {}
  void gather(const Tensor&, int, Tensor&) override { ops_->push_back("gather"); }
  void reduce_scatter_add(const Tensor&, int, Tensor&) override {
    ops_->push_back("reduce_scatter");
  }
  void all_reduce_add(const Tensor&, Tensor&) override { ops_->push_back("all_reduce_add"); }
  void all_reduce(Tensor&, ReduceOp) override { ops_->push_back("all_reduce"); }

 private:
  std::vector<std::string>* ops_;
};

class FakeEngine final : public DeviceCollectivesEngine {
 public:
  std::string name() const override { return "FAKE"; }
  std::string unavailable_reason() const override { return why; }
  std::unique_ptr<DeviceCollectives> create(Communicator&) const override {
    ++created;
    return std::make_unique<FakeCollectives>(&ops);
  }
  std::string why;  // empty: available
  mutable int created = 0;
  mutable std::vector<std::string> ops;
};

struct Context {
  std::map<std::string, std::string> env;
  std::vector<std::string> notes;
  std::atomic<bool> said{false};

  DeviceCollectivesContext with(const DeviceCollectivesEngine* engine) {
    DeviceCollectivesContext c;
    c.engine = engine;
    c.getenv = [this](const char* name) -> const char* {
      auto it = env.find(name);
      return it == env.end() ? nullptr : it->second.c_str();
    };
    c.say = [this](const std::string& note) { notes.push_back(note); };
    c.said = &said;
    return c;
  }
};

TEST(DeviceCollectivesChoice, EngineByDefaultMadeOncePerGroup) {
  FakeEngine engine;
  Context ctx;
  TwoRankGroup group;
  DeviceCollectives* dc = device_collectives(group, Device::kCuda, ctx.with(&engine));
  ASSERT_NE(dc, nullptr);
  EXPECT_EQ(device_collectives(group, Device::kCuda, ctx.with(&engine)), dc);
  EXPECT_EQ(engine.created, 1);
  EXPECT_EQ(group.agreements, 1);  // the group agreed once
  ctx.env["MAGIX_NCCL"] = "1";
  TwoRankGroup other;
  EXPECT_NE(device_collectives(other, Device::kCuda, ctx.with(&engine)), nullptr);
  EXPECT_EQ(engine.created, 2);  // one per group
  EXPECT_TRUE(ctx.notes.empty());
}

TEST(DeviceCollectivesChoice, HostTensorsAndGroupsOfOneNeverUseTheEngine) {
  FakeEngine engine;
  Context ctx;
  TwoRankGroup group;
  EXPECT_EQ(device_collectives(group, Device::kCpu, ctx.with(&engine)), nullptr);
  LocalCommunicator one;
  EXPECT_EQ(device_collectives(one, Device::kCuda, ctx.with(&engine)), nullptr);
  EXPECT_EQ(engine.created, 0);
  EXPECT_EQ(group.agreements, 0);
}

TEST(DeviceCollectivesChoice, MagixNcclZeroStagesThroughHostSilently) {
  FakeEngine engine;
  Context ctx;
  ctx.env["MAGIX_NCCL"] = "0";
  TwoRankGroup group;
  EXPECT_EQ(device_collectives(group, Device::kCuda, ctx.with(&engine)), nullptr);
  EXPECT_EQ(engine.created, 0);
  EXPECT_TRUE(ctx.notes.empty());
}

TEST(DeviceCollectivesChoice, InvalidMagixNcclIsAnError) {
  FakeEngine engine;
  Context ctx;
  ctx.env["MAGIX_NCCL"] = "yes";
  TwoRankGroup group;
  try {
    device_collectives(group, Device::kCuda, ctx.with(&engine));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("MAGIX_NCCL='yes' is not 0 or 1"), std::string::npos)
        << e.what();
  }
}

TEST(DeviceCollectivesChoice, MissingLibraryStagesThroughHostAndSaysSoOnce) {
  FakeEngine engine;
  engine.why = "FAKE cannot be loaded (libfake.so.2: cannot open shared object file)";
  Context ctx;
  TwoRankGroup a, b;
  EXPECT_EQ(device_collectives(a, Device::kCuda, ctx.with(&engine)), nullptr);
  EXPECT_EQ(device_collectives(b, Device::kCuda, ctx.with(&engine)), nullptr);
  EXPECT_EQ(engine.created, 0);
  ASSERT_EQ(ctx.notes.size(), 1u);  // once a process, not once a group
  EXPECT_EQ(ctx.notes[0], host_staging_note(engine.why, Device::kCuda));
  EXPECT_NE(ctx.notes[0].find("libfake.so.2: cannot open shared object file"), std::string::npos);
  EXPECT_NE(ctx.notes[0].find("collectives of cuda tensors go through host memory"),
            std::string::npos);
}

TEST(DeviceCollectivesChoice, OnlyWorldRankZeroSaysIt) {
  FakeEngine engine;
  engine.why = "FAKE cannot be loaded";
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    Context ctx;
    ctx.env[var] = "3";
    TwoRankGroup group(/*rank=*/0);  // rank 0 of its group, not of the world
    EXPECT_EQ(device_collectives(group, Device::kCuda, ctx.with(&engine)), nullptr);
    EXPECT_TRUE(ctx.notes.empty()) << var;
  }
}

TEST(DeviceCollectivesChoice, APeerWithoutTheEngineMovesTheGroupToHost) {
  FakeEngine engine;  // available here
  Context ctx;
  TwoRankGroup group(/*rank=*/0, /*peer_verdict=*/2);  // the peer cannot load it
  EXPECT_EQ(device_collectives(group, Device::kCuda, ctx.with(&engine)), nullptr);
  EXPECT_EQ(engine.created, 0);
  ASSERT_EQ(ctx.notes.size(), 1u);
  EXPECT_NE(ctx.notes[0].find("FAKE cannot run on another rank of a group"), std::string::npos);
  // A peer with MAGIX_NCCL=0: host, without a note.
  Context quiet;
  TwoRankGroup off(/*rank=*/0, /*peer_verdict=*/1);
  EXPECT_EQ(device_collectives(off, Device::kCuda, quiet.with(&engine)), nullptr);
  EXPECT_TRUE(quiet.notes.empty());
}

TEST(DeviceCollectivesChoice, NoEngineInThisBuildStagesThroughHostSilently) {
  Context ctx;
  TwoRankGroup group;
  EXPECT_EQ(device_collectives(group, Device::kCuda, ctx.with(nullptr)), nullptr);
  EXPECT_EQ(group.agreements, 0);
  EXPECT_TRUE(ctx.notes.empty());
}

// The tensor collectives of shard_ops on the emulated device with a registered engine: every op
// goes to the engine, none to the host communicator; with MAGIX_NCCL=0 every op is staged.
class ShardOpsRouting : public ::testing::Test {
 protected:
  void SetUp() override {
    set_collectives_engine_for_testing(Device::kCuda, &engine_);
    const char* old = std::getenv("MAGIX_NCCL");
    had_ = old != nullptr;
    if (had_) old_ = old;
  }
  void TearDown() override {
    set_collectives_engine_for_testing(Device::kCuda, nullptr);
    if (had_) {
      setenv("MAGIX_NCCL", old_.c_str(), 1);
    } else {
      unsetenv("MAGIX_NCCL");
    }
  }
  void run_all(Communicator& group) {
    const Backend& dev = backend_for(Device::kCuda);
    Tensor local = dev.zeros({2, 3}, DType::kF32), full = dev.zeros({2, 6}, DType::kF32);
    model::gather_along_dim(group, local, 1, full);
    model::reduce_scatter_along_dim(group, full, 1, local);
    Tensor same = dev.zeros({2, 3}, DType::kF32);
    model::all_reduce_add(group, local, same);
    model::all_reduce(group, same, ReduceOp::kMax);
  }

  test::EmulatedDeviceScope emulated_;
  FakeEngine engine_;
  bool had_ = false;
  std::string old_;
};

TEST_F(ShardOpsRouting, DeviceTensorsGoToTheEngine) {
  unsetenv("MAGIX_NCCL");
  TwoRankGroup group;
  EXPECT_TRUE(model::collectives_on_device(group, Device::kCuda));
  run_all(group);
  EXPECT_EQ(engine_.ops,
            (std::vector<std::string>{"gather", "reduce_scatter", "all_reduce_add", "all_reduce"}));
  EXPECT_TRUE(group.host_ops.empty());
  EXPECT_EQ(engine_.created, 1);
}

TEST_F(ShardOpsRouting, MagixNcclZeroStagesEveryOp) {
  setenv("MAGIX_NCCL", "0", 1);
  TwoRankGroup group;
  EXPECT_FALSE(model::collectives_on_device(group, Device::kCuda));
  run_all(group);
  EXPECT_TRUE(engine_.ops.empty());
  EXPECT_EQ(group.host_ops,
            (std::vector<std::string>{"all_gather", "reduce_scatter", "all_reduce", "all_reduce"}));
}

TEST_F(ShardOpsRouting, HostTensorsStayOnTheHostPath) {
  unsetenv("MAGIX_NCCL");
  TwoRankGroup group;
  EXPECT_FALSE(model::collectives_on_device(group, Device::kCpu));
  Tensor local({4}, DType::kF32), full({8}, DType::kF32);
  model::gather_along_dim(group, local, 0, full);
  EXPECT_TRUE(engine_.ops.empty());
  EXPECT_EQ(group.host_ops, (std::vector<std::string>{"all_gather"}));
}

// A group of one: device tensors never leave the device (copy / add), with the host path's values.
TEST(ShardOpsGroupOfOne, DeviceCopyAndAddEqualTheHostPath) {
  test::EmulatedDeviceScope emulated;
  const Backend& dev = backend_for(Device::kCuda);
  LocalCommunicator one;
  Tensor local({3, 4}, DType::kF32), full({3, 4}, DType::kF32);
  for (int64_t i = 0; i < 12; ++i) {
    local.data<float>()[i] = 0.25f * static_cast<float>(i) - 1.0f;
    full.data<float>()[i] = 1.0f / static_cast<float>(i + 3);
  }
  // Host path on host tensors.
  Tensor g_host({3, 4}, DType::kF32);
  model::gather_along_dim(one, local, 1, g_host);
  Tensor rs_host = local.clone();
  model::reduce_scatter_along_dim(one, full, 1, rs_host);
  Tensor ar_host = local.clone();
  model::all_reduce_add(one, full, ar_host);
  // The same on the device.
  const Tensor local_d = to_device(local, Device::kCuda), full_d = to_device(full, Device::kCuda);
  Tensor g_dev = dev.empty({3, 4}, DType::kF32);
  model::gather_along_dim(one, local_d, 1, g_dev);
  Tensor rs_dev = to_device(local, Device::kCuda);
  model::reduce_scatter_along_dim(one, full_d, 1, rs_dev);
  Tensor ar_dev = to_device(local, Device::kCuda);
  model::all_reduce_add(one, full_d, ar_dev);
  for (auto [host, device] :
       {std::pair{&g_host, &g_dev}, std::pair{&rs_host, &rs_dev}, std::pair{&ar_host, &ar_dev}}) {
    const Tensor back = to_host(*device);
    EXPECT_EQ(0, std::memcmp(back.bytes(), host->bytes(), host->nbytes()));
  }
}

}  // namespace
}  // namespace magix
