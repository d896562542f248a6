// Runs under mpirun on one host as every rank (3 ranks) and checks check_shared_folder and
// check_same_file, with per-rank paths standing in for hosts that see different files (the real
// two-host runs are tests/scripts/multihost.sh, which needs root):
//   host_checks_probe WORKDIR   (made afresh, removed at the end)
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "magix/distributed.hpp"
#include "magix/error.hpp"
#include "magix/host_checks.hpp"

namespace fs = std::filesystem;

namespace {

int failures = 0;
int rank = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "rank %d: FAILED: %s\n", rank, what.c_str());
    ++failures;
  }
}

// Runs `check`; it must throw on this rank with every string of `want` in the message (or not
// throw when `want` is empty).
void expect_outcome(const std::string& name, const std::function<void()>& check,
                    const std::vector<std::string>& want) {
  std::string message;
  bool threw = false;
  try {
    check();
  } catch (const magix::Error& e) {
    threw = true;
    message = e.what();
  }
  expect(threw == !want.empty(), fmt::format("{}: threw={} ({})", name, threw, message));
  for (const std::string& w : want) {
    expect(message.find(w) != std::string::npos,
           fmt::format("{}: message lacks '{}': {}", name, w, message));
  }
}

void write_file(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

}  // namespace

int main(int argc, char** argv) {
  magix::Runtime runtime(&argc, &argv);
  if (argc != 2) {
    std::fprintf(stderr, "usage: host_checks_probe WORKDIR (under mpirun -np 3)\n");
    return 2;
  }
  const fs::path work = argv[1];
  magix::Mesh mesh = magix::create_device_mesh({-1, 1});
  rank = mesh.world_rank();
  if (mesh.world_size() != 3) {
    std::fprintf(stderr, "host_checks_probe: run it with 3 ranks\n");
    return 2;
  }
  if (rank == 0) {
    fs::remove_all(work);
    fs::create_directories(work);
  }
  mesh.world().barrier();
  const std::string host = magix::processor_name();
  const std::string mine = fmt::format("r{}", rank);

  // One folder for all: passes, is created, and keeps no probe.
  const fs::path shared = work / "shared" / "ckpt";
  expect_outcome("shared folder", [&] { magix::check_shared_folder(mesh, shared, "--dir"); }, {});
  mesh.world().barrier();
  expect(fs::is_directory(shared) && fs::is_empty(shared), "the shared folder is left empty");

  // Rank 0 sees one folder, ranks 1 and 2 another each: both named, under one host line.
  const fs::path own = rank == 0 ? work / "r0" / "ckpt" : work / mine / "ckpt";
  if (rank != 0) fs::create_directories(own);
  expect_outcome("private folders", [&] { magix::check_shared_folder(mesh, own, "--dir"); },
                 {fmt::format("--dir '{}' is not one folder shared by every host", own.string()),
                  fmt::format("rank 0 (host {}) wrote the probe file", host),
                  fmt::format("host {} (ranks 1, 2): does not see it", host),
                  "checkpoints need storage that all hosts share"});
  mesh.world().barrier();
  if (rank == 0) expect(!fs::exists(own), "rank 0's folder, created by the check, is removed");

  // Same bytes at each rank's own path: passes.
  const std::string text = "{\"text\": \"a\"}\n{\"text\": \"b\"}\n";
  const fs::path data = work / mine / "data.jsonl";
  write_file(data, text);
  expect_outcome("same file", [&] { magix::check_same_file(mesh, data, "--file"); }, {});

  // Rank 2's copy is one record shorter.
  const fs::path differs = work / mine / "differs.jsonl";
  write_file(differs, rank == 2 ? text.substr(0, 14) : text);
  expect_outcome("differing file", [&] { magix::check_same_file(mesh, differs, "--file"); },
                 {"is not the same file on every host",
                  fmt::format("host {} (ranks 0, 1): {} bytes, XXH3 ", host, text.size()),
                  fmt::format("host {} (rank 2): 14 bytes, XXH3 ", host),
                  "every host must read identical data"});

  // Rank 1 has no file at all.
  const fs::path missing = work / mine / "missing.jsonl";
  if (rank != 1) write_file(missing, text);
  expect_outcome("missing file", [&] { magix::check_same_file(mesh, missing, "--file"); },
                 {fmt::format("host {} (rank 1): cannot read it", host)});

  // Large files (3 MiB): a change in the last MiB is caught; one in the middle is not (the
  // fingerprint hashes the first and last MiB only, docs/multihost.md).
  std::string big(3 << 20, 'x');
  std::string tail = big, middle = big;
  tail[big.size() - 1] = 'y';
  middle[big.size() / 2] = 'y';
  const fs::path big_tail = work / mine / "tail.bin", big_middle = work / mine / "middle.bin";
  write_file(big_tail, rank == 1 ? tail : big);
  write_file(big_middle, rank == 1 ? middle : big);
  expect_outcome("large file, last byte", [&] { magix::check_same_file(mesh, big_tail, "--f"); },
                 {fmt::format("host {} (rank 1): {} bytes, XXH3 of the first and last MiB ", host,
                              big.size())});
  expect_outcome("large file, middle byte",
                 [&] { magix::check_same_file(mesh, big_middle, "--f"); }, {});

  std::vector<double> bad = {static_cast<double>(failures)};
  mesh.world().all_reduce(bad, magix::ReduceOp::kSum);
  if (rank == 0) fs::remove_all(work);
  if (rank == 0) std::printf(bad[0] == 0 ? "host checks: OK\n" : "host checks: FAILED\n");
  return bad[0] == 0 ? 0 : 1;
}
