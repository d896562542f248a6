// Runs under mpirun as every rank of a mesh and checks the collectives against values each rank
// can compute on its own; or, in the failure modes, makes one rank fail mid-collective.
//   mpi_probe collectives D M   every collective on a D x M mesh, blocking and as background
//                               tasks (Communicator::run_async)
//   mpi_probe kill R            rank R kills itself (SIGKILL) while the others wait in all_reduce
//   mpi_probe throw R           rank R fails with an error while the others wait in all_reduce
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "magix/distributed.hpp"
#include "magix/error.hpp"

namespace {

int failures = 0;

void expect(bool ok, const std::string& what, int rank) {
  if (!ok) {
    std::fprintf(stderr, "rank %d: FAILED: %s\n", rank, what.c_str());
    ++failures;
  }
}

// Value that world rank r contributes at index i.
float value(int r, size_t i) {
  return static_cast<float>(100 * r + static_cast<int>(i));
}

void check_axis(magix::Communicator& comm, const std::vector<int>& members, int world_rank,
                const char* axis) {
  const size_t n = 5;
  int p = comm.size();
  expect(p == static_cast<int>(members.size()), fmt::format("{} size", axis), world_rank);
  expect(members[comm.rank()] == world_rank, fmt::format("{} rank order", axis), world_rank);

  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = value(world_rank, i);
  comm.all_reduce(x, magix::ReduceOp::kSum);
  for (size_t i = 0; i < n; ++i) {
    float want = 0;
    for (int r : members) want += value(r, i);
    expect(x[i] == want, fmt::format("{} all_reduce sum [{}] = {} want {}", axis, i, x[i], want),
           world_rank);
  }
  std::vector<double> m = {static_cast<double>(world_rank)};
  comm.all_reduce(m, magix::ReduceOp::kMax);
  int top = 0;
  for (int r : members) top = std::max(top, r);
  expect(m[0] == top, fmt::format("{} all_reduce max", axis), world_rank);

  std::vector<float> mine(n), gathered(n * p);
  for (size_t i = 0; i < n; ++i) mine[i] = value(world_rank, i);
  comm.all_gather(mine, gathered);
  for (int k = 0; k < p; ++k)
    for (size_t i = 0; i < n; ++i)
      expect(gathered[k * n + i] == value(members[k], i), fmt::format("{} all_gather", axis),
             world_rank);

  std::vector<float> full(n * p), part(n);
  for (size_t i = 0; i < full.size(); ++i) full[i] = value(world_rank, i);
  comm.reduce_scatter(full, part);
  for (size_t i = 0; i < n; ++i) {
    float want = 0;
    for (int r : members) want += value(r, comm.rank() * n + i);
    expect(part[i] == want, fmt::format("{} reduce_scatter", axis), world_rank);
  }

  // Background tasks (run_async): run in order on a communicator of the same group (its thread),
  // beside a collective of the calling thread; the same results; a task's error comes back from
  // wait().
  std::vector<int> order;
  std::vector<float> gathered_bg(n * p), part_bg(n);
  int bg_rank = -1, bg_size = -1;
  magix::PendingCollective a = comm.run_async([&](magix::Communicator& c) {
    order.push_back(1);
    c.all_gather(mine, gathered_bg);
  });
  magix::PendingCollective b = comm.run_async([&](magix::Communicator& c) {
    order.push_back(2);
    bg_rank = c.rank();
    bg_size = c.size();
    c.reduce_scatter(full, part_bg);
  });
  std::vector<float> beside = {1.0f};
  comm.all_reduce(beside, magix::ReduceOp::kSum);
  b.wait();
  a.wait();
  expect(beside[0] == static_cast<float>(p), fmt::format("{} all_reduce beside tasks", axis),
         world_rank);
  expect(order == std::vector<int>{1, 2}, fmt::format("{} tasks in order", axis), world_rank);
  expect(bg_rank == comm.rank() && bg_size == p, fmt::format("{} task's group", axis), world_rank);
  expect(gathered_bg == gathered && part_bg == part,
         fmt::format("{} all_gather and reduce_scatter in the background", axis), world_rank);
  magix::PendingCollective bad = comm.run_async(
      [](magix::Communicator&) { MAGIX_FAIL("a task that fails on purpose"); });
  try {
    bad.wait();
    expect(false, fmt::format("{} task error not rethrown", axis), world_rank);
  } catch (const magix::Error& e) {
    expect(std::string(e.what()).find("fails on purpose") != std::string::npos,
           fmt::format("{} task error message: {}", axis, e.what()), world_rank);
  }

  std::vector<std::byte> bytes(3, std::byte{0});
  if (comm.rank() == p - 1) bytes = {std::byte{7}, std::byte{8}, std::byte{9}};
  comm.broadcast(bytes, p - 1);
  expect(bytes[2] == std::byte{9}, fmt::format("{} broadcast", axis), world_rank);
  comm.barrier();
}

int run_collectives(int d, int m) {
  magix::Mesh mesh = magix::create_device_mesh({d, m});
  int w = mesh.world_rank();
  int M = mesh.model_size(), D = mesh.data_size();
  expect(mesh.data_rank() == w / M && mesh.model_rank() == w % M, "grid position (model fastest)",
         w);
  std::vector<int> data_members, model_members, world_members;
  for (int i = 0; i < D; ++i) data_members.push_back(i * M + mesh.model_rank());
  for (int j = 0; j < M; ++j) model_members.push_back(mesh.data_rank() * M + j);
  for (int r = 0; r < D * M; ++r) world_members.push_back(r);
  check_axis(mesh.data(), data_members, w, "data");
  check_axis(mesh.model(), model_members, w, "model");
  check_axis(mesh.world(), world_members, w, "world");
  std::printf("rank %d (data %d, model %d of %dx%d): %s\n", w, mesh.data_rank(), mesh.model_rank(),
              D, M, failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  magix::Runtime runtime(&argc, &argv);
  std::string mode = argc > 1 ? argv[1] : "collectives";
  try {
    if (mode == "collectives") {
      int d = argc > 2 ? std::atoi(argv[2]) : -1;
      int m = argc > 3 ? std::atoi(argv[3]) : 1;
      return run_collectives(d, m);
    }
    int victim = argc > 2 ? std::atoi(argv[2]) : 1;
    magix::Mesh mesh = magix::create_device_mesh({-1, 1});
    std::vector<float> x(1000, 1.0f);
    for (int step = 0; step < 3; ++step) mesh.world().all_reduce(x, magix::ReduceOp::kSum);
    if (mesh.world_rank() == victim) {
      if (mode == "kill") ::kill(::getpid(), SIGKILL);
      MAGIX_FAIL("injected failure on purpose at step 3");
    }
    mesh.world().all_reduce(x, magix::ReduceOp::kSum);  // the others wait here
    return 0;
  } catch (const magix::Error& e) {
    runtime.abort(e.what());
  }
}
