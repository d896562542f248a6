// A writer that fails (here: a file size limit, as a full disk would) is reported by wait() as
// an error naming the file; the step is not committed, its temporary directory is removed, and
// the earlier steps stay intact.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "checkpoint_test_util.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
using test::CkptTempDir;

// In a forked child (the limit is per process): returns the child's exit code.
int run_in_child(const std::function<int()>& fn) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 99;
    try {
      rc = fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: unexpected error: %s\n", e.what());
    }
    _exit(rc);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

CheckpointItems items_of(const Tensor& t) {
  return {{"model", {ShardedTensor{"w", t.shape(), {}, {0, 0}, t}}}};
}

TEST(CheckpointFailure, WriterErrorIsRethrownAndNothingIsCommitted) {
  CkptTempDir tmp;
  const fs::path dir = tmp.path() / "ck";
  for (bool async : {true, false}) {
    const int rc = run_in_child([&] {
      Mesh mesh;
      CheckpointManager m(dir, mesh, {.max_to_keep = 0, .async = async});
      const Tensor small = test::pattern_full(1, {16, 16});
      if (!m.latest_step()) m.save(1, items_of(small), {{"step", 1}});
      m.wait();
      // Files over 64 KiB now fail with EFBIG (SIGXFSZ ignored), as a full disk would.
      ::signal(SIGXFSZ, SIG_IGN);
      rlimit limit{64 << 10, 64 << 10};
      if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) return 2;
      const Tensor big = test::pattern_full(2, {256, 256});  // 256 KiB
      try {
        m.save(2, items_of(big), {{"step", 2}});
        m.wait();
        std::fprintf(stderr, "child: no error\n");
        return 3;
      } catch (const Error& e) {
        const std::string what = e.what();
        if (what.find("model/rank-00000.bin") == std::string::npos ||
            what.find("step 2") == std::string::npos) {
          std::fprintf(stderr, "child: unexpected message: %s\n", what.c_str());
          return 4;
        }
      }
      // The manager is usable afterwards: a small save commits.
      m.save(3, items_of(small), {{"step", 3}});
      m.wait();
      return m.steps() == std::vector<int64_t>{1, 3} ? 0 : 5;
    });
    ASSERT_EQ(rc, 0) << (async ? "async" : "sync");
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().filename() == ".lock") continue;  // the manager's lock file
      EXPECT_TRUE(is_checkpoint_step(e.path())) << "debris " << e.path();
    }
    Mesh mesh;
    CheckpointManager m(dir, mesh, {.max_to_keep = 0});
    EXPECT_EQ(m.steps(), (std::vector<int64_t>{1, 3}));
    std::vector<ShardedTensor> t{{"w", {16, 16}, {}, {0, 0}, Tensor({16, 16})}};
    CheckpointReader(m.step_dir(1)).read("model", t);
    EXPECT_TRUE(test::bitwise_equal(t[0].local, test::pattern_full(1, {16, 16})));
    fs::remove_all(dir);
  }
}

}  // namespace
}  // namespace magix
