// kill -9 at random moments of a save loop: the previous commit always stays loadable with the
// right content, the next manager removes the debris, and no half-written step looks valid.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "checkpoint_test_util.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
using test::CkptTempDir;

// Step s's tensors (about 4 MB): w (f32 512x1024), h (bf16 512x1024), m (f32 256x1024, item
// "optimizer"). Built without OpenMP (this runs in a forked child).
struct StepTensors {
  Tensor w{Shape{512, 1024}, DType::kF32};
  Tensor h{Shape{512, 1024}, DType::kBF16};
  Tensor m{Shape{256, 1024}, DType::kF32};

  void fill(int64_t step) {
    float* pw = w.data<float>();
    uint16_t* ph = h.data<uint16_t>();
    float* pm = m.data<float>();
    for (int64_t i = 0; i < w.numel(); ++i) pw[i] = test::pattern_value(3 * step, i);
    for (int64_t i = 0; i < h.numel(); ++i) {
      ph[i] = float_to_bf16(test::pattern_value(3 * step + 1, i));
    }
    for (int64_t i = 0; i < m.numel(); ++i) pm[i] = test::pattern_value(3 * step + 2, i);
  }

  CheckpointItems items() const {
    CheckpointItems it;
    it["model"].push_back({"w", w.shape(), {}, {0, 0}, w});
    it["model"].push_back({"h", h.shape(), {}, {0, 0}, h});
    it["optimizer"].push_back({"m", m.shape(), {}, {0, 0}, m});
    return it;
  }
};

// The child: saves steps first, first+1, ... forever (async, polling between "training steps"
// that overwrite the tensors), until killed.
[[noreturn]] void save_forever(const fs::path& dir, int64_t first) {
  try {
    Mesh mesh;
    CheckpointManager manager(dir, mesh, {.max_to_keep = 2, .async = true});
    StepTensors t;
    for (int64_t step = first;; ++step) {
      t.fill(step);
      manager.save(step, t.items(), {{"step", step}});
      manager.poll();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child: %s\n", e.what());
    _exit(3);
  }
}

TEST(CheckpointKill, Kill9AtRandomMomentsNeverLeavesAnInvalidStep) {
  CkptTempDir tmp;
  const fs::path dir = tmp.path() / "ck";
  std::mt19937 rng(20261121);
  std::uniform_int_distribution<int> delay_ms(1, 250);
  int64_t latest = -1;
  int rounds_with_progress = 0;
  int rounds_with_debris = 0;
  Mesh mesh;
  StepTensors want;
  for (int round = 0; round < 20; ++round) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) save_forever(dir, latest + 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the child ended by itself, status " << status;

    // Was the child killed inside a save (an uncommitted .tmp-* directory left behind)?
    bool debris = false;
    if (fs::exists(dir)) {
      for (const auto& e : fs::directory_iterator(dir)) {
        debris = debris || e.path().filename().string().starts_with(".tmp-");
      }
    }
    rounds_with_debris += debris ? 1 : 0;
    CheckpointManager m(dir, mesh, {.max_to_keep = 2, .async = false});  // cleans debris
    const std::vector<int64_t> steps = m.steps();
    int entries = 0;
    for (const auto& e : fs::directory_iterator(dir)) {
      // The killed child's lock file stays (its lock died with it: this manager got it).
      if (e.path().filename() == ".lock") continue;
      ++entries;
      EXPECT_TRUE(is_checkpoint_step(e.path())) << "round " << round << ": debris " << e.path();
    }
    EXPECT_EQ(entries, static_cast<int>(steps.size())) << "round " << round;
    if (latest >= 0) {
      ASSERT_FALSE(steps.empty()) << "round " << round << ": step " << latest << " was lost";
    }
    if (steps.empty()) continue;
    EXPECT_GE(steps.back(), latest) << "round " << round;
    if (steps.back() > latest) ++rounds_with_progress;
    latest = steps.back();
    // Every committed step is complete and holds its own values.
    for (int64_t step : steps) {
      CheckpointReader r(m.step_dir(step));
      EXPECT_EQ(r.trainer_state().at("step"), step);
      want.fill(step);
      StepTensors got;
      CheckpointItems items = got.items();
      r.read("model", items["model"]);
      r.read("optimizer", items["optimizer"]);
      EXPECT_TRUE(test::bitwise_equal(got.w, want.w)) << "step " << step;
      EXPECT_TRUE(test::bitwise_equal(got.h, want.h)) << "step " << step;
      EXPECT_TRUE(test::bitwise_equal(got.m, want.m)) << "step " << step;
    }
  }
  std::printf("20 kills: latest committed step %lld, %d rounds made progress, %d killed a save\n",
              static_cast<long long>(latest), rounds_with_progress, rounds_with_debris);
  // The kills must have hit saves in progress and a run that was making progress (loose
  // bounds: the machine may be busy), not only startups.
  EXPECT_GE(rounds_with_progress, 3);
  EXPECT_GE(rounds_with_debris, 3);
  EXPECT_GE(latest, 3);
}

}  // namespace
}  // namespace magix
