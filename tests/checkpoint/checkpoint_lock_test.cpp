// The advisory lock on a checkpoint dir: while one manager (here: a forked child process) holds
// the dir, a second is refused at once with the holder's pid and host; the lock dies with its
// holder, so the file a killed run leaves behind does not block the next run.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>

#include "checkpoint_test_util.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
using test::CkptTempDir;

// Forks a child that opens a manager on `dir`, writes one byte to `ready` and waits to be
// killed. Returns its pid.
pid_t hold_in_child(const fs::path& dir) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    try {
      Mesh mesh;
      CheckpointManager manager(dir, mesh);
      const char c = 'x';
      if (::write(fds[1], &c, 1) != 1) ::_exit(2);
      for (;;) ::pause();
    } catch (...) {
      ::_exit(3);
    }
  }
  ::close(fds[1]);
  char c = 0;
  const bool ok = ::read(fds[0], &c, 1) == 1;
  ::close(fds[0]);
  return ok ? pid : -1;
}

std::string construct_error(const fs::path& dir) {
  try {
    Mesh mesh;
    CheckpointManager manager(dir, mesh);
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

TEST(CheckpointLock, SecondManagerIsRefusedWithTheHoldersPidAndHost) {
  CkptTempDir tmp;
  const fs::path dir = tmp.path() / "ckpt";
  const pid_t child = hold_in_child(dir);
  ASSERT_GT(child, 0);
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string err = construct_error(dir);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(err.find("in use by another run"), std::string::npos) << err;
  EXPECT_NE(err.find("pid " + std::to_string(child) + " "), std::string::npos) << err;
  EXPECT_NE(err.find(std::string("host ") + host), std::string::npos) << err;
  EXPECT_LT(seconds, 5.0);  // refused at once, not after waiting
  // A refused manager removed nothing: the holder's temporary files are left alone.
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  // The holder died without cleaning up: its lock file remains but no longer blocks.
  ASSERT_TRUE(fs::exists(dir / ".lock"));
  EXPECT_EQ(construct_error(dir), "");
}

TEST(CheckpointLock, ReleasedWhenTheManagerIsDestroyed) {
  CkptTempDir tmp;
  Mesh mesh;
  {
    CheckpointManager first(tmp.path(), mesh);
    EXPECT_NE(construct_error(tmp.path()), "");  // flock conflicts within a process too
  }
  EXPECT_EQ(construct_error(tmp.path()), "");
}

TEST(CheckpointLock, RefusedManagerLeavesTheHoldersTemporaryFilesAlone) {
  CkptTempDir tmp;
  Mesh mesh;
  CheckpointManager first(tmp.path(), mesh);
  fs::create_directory(tmp.path() / ".tmp-000007");  // as a save in flight would have it
  EXPECT_NE(construct_error(tmp.path()), "");
  EXPECT_TRUE(fs::exists(tmp.path() / ".tmp-000007"));
}

}  // namespace
}  // namespace magix
