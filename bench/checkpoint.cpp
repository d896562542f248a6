// bench_checkpoint: save and restore throughput of a sharded state against the disk's own
// write+fsync and read speed measured in the same run, the training stall of an async save
// (time until save() returns) against a sync save, and restore onto another mesh.
//
//   bench_checkpoint [--size_mb 512] [--dir DIR] [--mesh D M] [--reps 2]
//   mpirun -np 2 bench_checkpoint --mesh 2 1       (each rank writes its own shards)
//
// The state: 32 tensors [rows, 1024] (f32, every 4th bf16) laid out like decoder weights
// ((model, data) and (data, model) specs) plus small replicated ones, `size_mb` in all.
// Reads are cold where the kernel lets us: files are evicted with posix_fadvise(DONTNEED)
// after they are fsynced. Times are the slowest rank's; rates are total bytes / time. The last
// line of the run (rank 0) is one JSON object with every figure.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "magix/checkpoint.hpp"
#include "magix/distributed.hpp"
#include "magix/error.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string loadavg() {
  std::string load;
  std::getline(std::ifstream("/proc/loadavg"), load);
  return load;
}

// Runs fn between barriers; returns the slowest rank's seconds.
template <class Fn>
double timed(const magix::Mesh& mesh, Fn&& fn) {
  mesh.world().barrier();
  const auto t0 = Clock::now();
  fn();
  double t[1] = {seconds_since(t0)};
  mesh.world().all_reduce(std::span<double>(t, 1), magix::ReduceOp::kMax);
  return t[0];
}

void evict(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void evict_tree(const fs::path& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) evict(e.path());
  }
}

struct State {
  std::vector<magix::ShardedTensor> tensors;
  uint64_t global_bytes = 0;
};

State make_state(const magix::Mesh& mesh, uint64_t size_bytes) {
  State s;
  const int kBig = 32;
  const int64_t cols = 1024;
  // Rows divisible by any axis size up to 8.
  int64_t rows = static_cast<int64_t>(size_bytes / kBig / (cols * 4)) / 8 * 8;
  rows = std::max<int64_t>(rows, 8);
  auto add = [&](const std::string& name, magix::Shape shape, magix::PartitionSpec spec,
                 magix::DType dtype) {
    magix::ShardBox box = magix::shard_box(name, shape, spec, mesh);
    magix::Tensor t(box.extent, dtype);
    if (dtype == magix::DType::kF32) {
      float* p = t.data<float>();
      for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(i % 1021) * 0.25f;
    } else {
      uint16_t* p = t.data<uint16_t>();
      for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<uint16_t>(0x3f00 + i % 97);
    }
    s.global_bytes += static_cast<uint64_t>(magix::shape_numel(shape)) * magix::dtype_size(dtype);
    s.tensors.push_back({name, shape, spec, box.start, t});
  };
  for (int i = 0; i < kBig; ++i) {
    magix::PartitionSpec spec =
        i % 2 ? magix::PartitionSpec{"model", "data"} : magix::PartitionSpec{"data", "model"};
    add(fmt::format("layers.{}.weight", i), {rows, cols}, spec,
        i % 4 == 3 ? magix::DType::kBF16 : magix::DType::kF32);
    add(fmt::format("layers.{}.norm", i), {cols}, {}, magix::DType::kF32);
  }
  return s;
}

std::vector<magix::ShardedTensor> empty_like(const std::vector<magix::ShardedTensor>& ts,
                                             const magix::Mesh& mesh) {
  std::vector<magix::ShardedTensor> out;
  for (const auto& t : ts) {
    magix::ShardBox box = magix::shard_box(t.name, t.global_shape, t.spec, mesh);
    out.push_back(
        {t.name, t.global_shape, t.spec, box.start, magix::Tensor(box.extent, t.local.dtype())});
  }
  return out;
}

// Disk baseline: this rank writes `bytes` to its own file in 64 MiB writes, fsyncs; then reads
// it back cold.
std::pair<double, double> disk_baseline(const magix::Mesh& mesh, const fs::path& dir,
                                        uint64_t bytes) {
  const fs::path path = dir / fmt::format("disk-rank-{}.bin", mesh.world_rank());
  const size_t chunk = 64u << 20;
  std::vector<char> buf(chunk, 7);
  const double write_s = timed(mesh, [&] {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    MAGIX_CHECK(fd >= 0, "cannot create {}", path.string());
    for (uint64_t done = 0; done < bytes;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, bytes - done));
      MAGIX_CHECK(::write(fd, buf.data(), n) == static_cast<ssize_t>(n), "write failed");
      done += n;
    }
    MAGIX_CHECK(::fsync(fd) == 0, "fsync failed");
    ::close(fd);
  });
  evict(path);
  const double read_s = timed(mesh, [&] {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    for (uint64_t done = 0; done < bytes;) {
      const ssize_t got = ::pread(fd, buf.data(), chunk, static_cast<off_t>(done));
      MAGIX_CHECK(got > 0, "read failed");
      done += static_cast<uint64_t>(got);
    }
    ::close(fd);
  });
  fs::remove(path);
  return {write_s, read_s};
}

bool equal(const std::vector<magix::ShardedTensor>& a, const std::vector<magix::ShardedTensor>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(a[i].local.bytes(), b[i].local.bytes(), a[i].local.nbytes()) != 0) {
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  magix::Runtime runtime(&argc, &argv);
  try {
    uint64_t size_mb = 512;
    fs::path dir = fs::temp_directory_path() / "magix_bench_checkpoint";
    int d = 1, m = 1, reps = 2;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--size_mb" && i + 1 < argc) {
        size_mb = std::stoull(argv[++i]);
      } else if (a == "--dir" && i + 1 < argc) {
        dir = argv[++i];
      } else if (a == "--reps" && i + 1 < argc) {
        reps = std::stoi(argv[++i]);
      } else if (a == "--mesh" && i + 2 < argc) {
        d = std::stoi(argv[++i]);
        m = std::stoi(argv[++i]);
      } else {
        std::fprintf(stderr,
                     "usage: bench_checkpoint [--size_mb N] [--dir DIR] [--mesh D M] "
                     "[--reps R]\n");
        return 2;
      }
    }
    const std::string load_start = loadavg();
    magix::Mesh mesh = magix::create_device_mesh({d, m});
    const bool root = mesh.world_rank() == 0;
    if (root) {
      fs::remove_all(dir);
      fs::create_directories(dir);
    }
    mesh.world().barrier();
    State state = make_state(mesh, size_mb << 20);
    const double gb = static_cast<double>(state.global_bytes) / 1e9;
    nlohmann::json repetitions = nlohmann::json::array();
    nlohmann::json rep_figures;  // the current repetition's
    // Prints a line and records {s, gbs, x_disk} under `key` in the repetition's figures.
    auto report = [&](const char* what, const std::string& key, double s, double base_s) {
      rep_figures[key] = {{"s", s}, {"gbs", gb / s}, {"x_disk", base_s / s}};
      if (!root) return;
      std::printf("%-44s %8.3f s  %6.2f GB/s  %5.2fx disk\n", what, s, gb / s, base_s / s);
    };
    if (root) {
      std::printf("state: %.3f GB (%zu tensors) on a %dx%d mesh, dir %s\n", gb,
                  state.tensors.size(), d, m, dir.c_str());
    }
    // One async manager for the whole run, as in training: from its second save on, the host
    // copies reuse the previous save's buffers.
    const fs::path ck = dir / "ck";
    magix::CheckpointManager async(ck, mesh, {.max_to_keep = 1, .async = true});
    for (int rep = 0; rep < reps; ++rep) {
      rep_figures = {{"repetition", rep + 1}};
      if (root) {
        std::printf("-- repetition %d%s\n", rep + 1,
                    rep == 0 ? " (first async save: fresh host buffers)" : "");
      }
      // The disk: the same bytes per rank as the checkpoint (total / ranks).
      const auto [disk_w, disk_r] =
          disk_baseline(mesh, dir, state.global_bytes / static_cast<uint64_t>(mesh.world_size()));
      report("disk write+fsync (same bytes)", "disk_write_fsync", disk_w, disk_w);
      report("disk read, cold (same bytes)", "disk_read_cold", disk_r, disk_r);

      magix::CheckpointItems items{{"model", state.tensors}};
      double sync_s = 0, stall_s = 0, async_total_s = 0;
      {
        magix::CheckpointManager sync(dir / "ck_sync", mesh, {.max_to_keep = 1, .async = false});
        sync_s = timed(mesh, [&] { sync.save(rep + 1, items, {{"rep", rep}}); });
      }
      double commit_stall_s = 0;
      {
        const auto t0 = Clock::now();
        stall_s = timed(mesh, [&] { async.save(rep + 1, items, {{"rep", rep}}); });
        // "Training": poll every 10 ms; the poll that commits is the second part of the stall.
        while (async.latest_step() != rep + 1) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
          commit_stall_s = std::max(commit_stall_s, timed(mesh, [&] { async.poll(); }));
        }
        double t[1] = {seconds_since(t0)};
        mesh.world().all_reduce(std::span<double>(t, 1), magix::ReduceOp::kMax);
        async_total_s = t[0];
      }
      report("save, sync (returns after the commit)", "save_sync", sync_s, disk_w);
      report("save, async: save() returns (the stall)", "save_async_stall", stall_s, disk_w);
      report("save, async: until committed", "save_async_committed", async_total_s, disk_w);
      rep_figures["save_async_longest_poll_s"] = commit_stall_s;
      rep_figures["stall_reduction"] = sync_s / stall_s;
      if (root) {
        std::printf("%-44s %8.3f s\n", "save, async: longest poll() (the commit)", commit_stall_s);
      }
      if (root) {
        std::printf("%-44s %8.1fx\n", "stall reduction (sync / async stall)", sync_s / stall_s);
      }

      const fs::path step = ck / fmt::format("{:06d}", rep + 1);
      magix::CheckpointReader reader(step);
      evict_tree(step);
      auto same = empty_like(state.tensors, mesh);
      const double restore_s = timed(mesh, [&] { reader.read("model", same); });
      report("restore, same mesh (cold)", "restore_same_mesh", restore_s, disk_r);
      MAGIX_CHECK(equal(same, state.tensors), "restored state differs");
      same.clear();

      if (d * m > 1) {
        // Another mesh over the same ranks: the transposed one.
        magix::Mesh other = magix::create_device_mesh({m, d});
        evict_tree(step);
        auto t = empty_like(state.tensors, other);
        const double s = timed(mesh, [&] { reader.read("model", t); });
        report(fmt::format("restore onto {}x{} (cold)", m, d).c_str(), "restore_other_mesh", s,
               disk_r);
        rep_figures["restore_other_mesh"]["mesh"] = {m, d};
      }
      // One process reading everything (as magix export does).
      evict_tree(step);
      magix::Mesh local;
      double one_s = 0;
      if (root) {
        auto t = empty_like(state.tensors, local);
        const auto t0 = Clock::now();
        reader.read("model", t);
        one_s = seconds_since(t0);
      }
      mesh.world().barrier();
      report("restore onto 1x1, one process reads all (cold)", "restore_one_process", one_s,
             disk_r * mesh.world_size());
      repetitions.push_back(rep_figures);
    }
    mesh.world().barrier();
    if (root) {
      fs::remove_all(dir);
      const char* threads = std::getenv("OMP_NUM_THREADS");
      const nlohmann::json out{{"bench", "checkpoint"},
                               {"mesh", {d, m}},
                               {"ranks", mesh.world_size()},
                               {"threads_per_rank", threads ? threads : ""},
                               {"size_mb", size_mb},
                               {"state_gb", gb},
                               {"tensors", state.tensors.size()},
                               {"dir", dir.string()},
                               {"reps", reps},
                               {"repetitions", repetitions},
                               {"load_average_start", load_start},
                               {"load_average_end", loadavg()}};
      std::printf("%s\n", out.dump().c_str());
      std::fflush(stdout);
    }
    return 0;
  } catch (const std::exception& e) {
    runtime.abort(e.what());
  }
}
