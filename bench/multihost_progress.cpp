// How to run a collective behind compute with Open MPI: the measurement behind the design of
// Communicator::run_async (docs/multihost.md, "Overlap"). One all-gather of a ~110M Llama
// layer's weights (fp32, 28 MiB gathered; --mib) beside GEMMs that take about as long as the
// blocking all-gather alone, five ways:
//   serial       MPI_Allgather, then the compute (the blocking path)
//   nb_wait      MPI_Iallgather, the compute, MPI_Wait (progress only inside MPI calls)
//   nb_test      MPI_Iallgather, the compute with an MPI_Test after every GEMM, MPI_Wait
//   thread_spin  a thread on a duplicated communicator in a blocking MPI_Allgather
//   thread_poll  magix's communication thread (run_async: MPI_Iallgather, MPI_Test every 50 us,
//                asleep in between)
// For each, the median wall time over --reps runs and the share of the shorter of compute and
// communication it hid: (serial - t) / min(compute, comm). Run it under mpirun with 1 thread per
// rank, on one host or across hosts (bench/multihost_links.sh runs it on shaped links):
//   OMP_NUM_THREADS=1 mpirun -np 2 build/bin/bench_multihost_progress [--mib 28] [--reps 5]
// The last line (rank 0) is one JSON object.
#define OMPI_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/cpu/gemm.hpp"
#include "magix/distributed.hpp"

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string loadavg() {
  std::string load;
  std::getline(std::ifstream("/proc/loadavg"), load);
  return load;
}

constexpr int64_t kGemm = 384;  // one GEMM of the compute: (384 x 384) x (384 x 384)

struct Gemms {
  std::vector<float> a = std::vector<float>(kGemm * kGemm, 0.5f);
  std::vector<float> b = std::vector<float>(kGemm * kGemm, 0.25f);
  std::vector<float> c = std::vector<float>(kGemm * kGemm, 0.0f);
  // `count` GEMMs, calling between(i) after each.
  void run(int count, const std::function<void()>& between = nullptr) {
    for (int i = 0; i < count; ++i) {
      magix::cpu::gemm(false, false, kGemm, kGemm, kGemm, 1.0f, a.data(), kGemm, b.data(), kGemm,
                       0.0f, c.data(), kGemm);
      if (between) between();
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  magix::Runtime runtime(&argc, &argv);
  double mib = 28.0;
  int reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--mib") == 0) mib = std::atof(argv[i + 1]);
    if (std::strcmp(argv[i], "--reps") == 0) reps = std::atoi(argv[i + 1]);
  }
  try {
    magix::Mesh mesh = magix::create_device_mesh({-1, 1});
    magix::Communicator& comm = mesh.data();
    const int n = comm.size();
    const auto per_rank = static_cast<size_t>(mib * 1048576.0 / 4.0 / n);
    std::vector<float> in(per_rank, 1.0f + static_cast<float>(comm.rank()));
    std::vector<float> out(per_rank * static_cast<size_t>(n));
    MPI_Comm dup;
    MPI_Comm_dup(MPI_COMM_WORLD, &dup);
    const int count = static_cast<int>(per_rank);
    auto barrier = [&] { MPI_Barrier(MPI_COMM_WORLD); };
    Gemms gemms;

    // Calibrate: the blocking all-gather alone, then as many GEMMs as take that long.
    std::vector<double> t_comm, t_compute;
    for (int r = 0; r < reps; ++r) {
      barrier();
      const double t0 = now();
      MPI_Allgather(in.data(), count, MPI_FLOAT, out.data(), count, MPI_FLOAT, MPI_COMM_WORLD);
      t_comm.push_back(now() - t0);
    }
    double comm_s = median(t_comm);
    MPI_Allreduce(MPI_IN_PLACE, &comm_s, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    const double t0 = now();
    gemms.run(10);
    int gemm_count = std::max(1, static_cast<int>(comm_s / ((now() - t0) / 10)));
    MPI_Allreduce(MPI_IN_PLACE, &gemm_count, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    for (int r = 0; r < reps; ++r) {
      barrier();
      const double t1 = now();
      gemms.run(gemm_count);
      t_compute.push_back(now() - t1);
    }
    double compute_s = median(t_compute);
    MPI_Allreduce(MPI_IN_PLACE, &compute_s, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);

    using Mode = std::function<void()>;
    const std::vector<std::pair<std::string, Mode>> modes = {
        {"serial",
         [&] {
           MPI_Allgather(in.data(), count, MPI_FLOAT, out.data(), count, MPI_FLOAT,
                         MPI_COMM_WORLD);
           gemms.run(gemm_count);
         }},
        {"nb_wait",
         [&] {
           MPI_Request req;
           MPI_Iallgather(in.data(), count, MPI_FLOAT, out.data(), count, MPI_FLOAT,
                          MPI_COMM_WORLD, &req);
           gemms.run(gemm_count);
           MPI_Wait(&req, MPI_STATUS_IGNORE);
         }},
        {"nb_test",
         [&] {
           MPI_Request req;
           MPI_Iallgather(in.data(), count, MPI_FLOAT, out.data(), count, MPI_FLOAT,
                          MPI_COMM_WORLD, &req);
           int done = 0;
           gemms.run(gemm_count, [&] {
             if (!done) MPI_Test(&req, &done, MPI_STATUS_IGNORE);
           });
           if (!done) MPI_Wait(&req, MPI_STATUS_IGNORE);
         }},
        {"thread_spin",
         [&] {
           std::thread t([&] {
             MPI_Allgather(in.data(), count, MPI_FLOAT, out.data(), count, MPI_FLOAT, dup);
           });
           gemms.run(gemm_count);
           t.join();
         }},
        {"thread_poll",
         [&] {
           magix::PendingCollective done = comm.run_async([&](magix::Communicator& c) {
             c.all_gather(in, out);
           });
           gemms.run(gemm_count);
           done.wait();
         }},
    };
    nlohmann::json figures = nlohmann::json::object();
    for (const auto& [name, run] : modes) {
      std::vector<double> t;
      for (int r = 0; r < reps; ++r) {
        barrier();
        const double t1 = now();
        run();
        t.push_back(now() - t1);
      }
      double s = median(t);
      MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      figures[name] = s;
    }
    MPI_Comm_free(&dup);
    if (comm.rank() == 0) {
      const double serial = figures["serial"].get<double>();
      const double shorter = std::min(compute_s, comm_s);
      nlohmann::json hidden = nlohmann::json::object();
      for (const auto& [name, run] : modes) {
        const double t = figures[name].get<double>();
        hidden[name] = (serial - t) / shorter;
        std::printf("%-12s %.3f s  hides %3.0f%% of min(compute %.3f s, all-gather %.3f s)\n",
                    name.c_str(), t, 100.0 * (serial - t) / shorter, compute_s, comm_s);
      }
      const nlohmann::json result{{"bench", "multihost_progress"},
                                  {"ranks", n},
                                  {"gathered_mib", mib},
                                  {"reps", reps},
                                  {"allgather_s", comm_s},
                                  {"compute_s", compute_s},
                                  {"gemms", gemm_count},
                                  {"seconds", figures},
                                  {"hidden_fraction", hidden},
                                  {"load_average", loadavg()}};
      std::printf("%s\n", result.dump().c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    runtime.abort(e.what());
  }
}
