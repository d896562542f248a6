// ParamStream's bound on gradients in flight (--overlap_comm): under mpirun, close_grad of many
// data-sharded gradients with overlap on never leaves more than the bound's bytes in flight
// (one gradient alone may pass it), and the shards it leaves are bitwise those of the blocking
// path and equal the sum over ranks of what each rank gave.
//
//   mpirun -np D param_stream_probe D
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../common/tensor_compare.hpp"
#include "backends/backend.hpp"
#include "magix/distributed.hpp"
#include "magix/error.hpp"
#include "magix/model.hpp"
#include "shard/param_stream.hpp"

namespace {

magix::test::ProbeReport report;

constexpr int kParams = 6;
constexpr int64_t kRows = 16, kCols = 8;  // each global gradient (kRows * D, kCols)

// Rank r's gradient of parameter i, element e: exact small integers, so any summation order
// gives the same float.
float grad_value(int rank, int i, int64_t e) {
  return static_cast<float>((rank + 1) * 1000 + i * 100 + e % 97);
}

// The shards after close_grad of every parameter, with overlap on and bound `max_bytes`
// (0: blocking), and the most bytes seen in flight right after each close_grad.
std::vector<std::vector<float>> run(const magix::Mesh& mesh, bool overlap, size_t max_bytes,
                                    size_t* peak) {
  const int64_t D = mesh.data_size();
  std::vector<magix::ParamInfo> infos;
  for (int i = 0; i < kParams; ++i) {
    infos.push_back(
        {"w" + std::to_string(i), {kRows * D, kCols}, {"data", std::nullopt}, {}, {}, {}, {}});
  }
  magix::shard_parameters(infos, mesh);
  magix::ParameterSet grads(infos);
  const magix::Backend& ops = magix::backend_for(magix::Device::kCpu);
  magix::ParamStream stream(mesh, ops, std::vector<char>(kParams, 0), {});
  stream.set_overlap(overlap, max_bytes);
  *peak = 0;
  for (int i = 0; i < kParams; ++i) {
    magix::Tensor g =
        ops.zeros(stream.used_shape(grads, static_cast<size_t>(i)), magix::DType::kF32);
    float* v = g.data<float>();
    for (int64_t e = 0; e < g.numel(); ++e) v[e] = grad_value(mesh.world_rank(), i, e);
    stream.close_grad(grads, static_cast<size_t>(i), g);
    *peak = std::max(*peak, stream.pending_grad_bytes());
  }
  stream.finish();
  report(stream.pending_grad_bytes() == 0, "nothing in flight after finish()");
  std::vector<std::vector<float>> out;
  for (int i = 0; i < kParams; ++i) {
    const auto s = grads.tensor(static_cast<size_t>(i)).span<float>();
    out.emplace_back(s.begin(), s.end());
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  magix::Runtime runtime(&argc, &argv);
  try {
    if (argc != 2) {
      std::fprintf(stderr, "usage: param_stream_probe D\n");
      return 2;
    }
    magix::Mesh mesh = magix::create_device_mesh({std::atoi(argv[1]), 1});
    const int64_t D = mesh.data_size();
    const size_t one = static_cast<size_t>(kRows * D * kCols) * sizeof(float);  // one gradient
    size_t peak = 0;
    const auto blocking = run(mesh, false, 0, &peak);
    report(peak == 0, fmt::format("blocking: {} bytes left in flight (want 0)", peak));
    // The sums: each shard holds rows [rank * kRows, ...) of the global gradient summed over ranks.
    bool sums = true;
    for (int i = 0; i < kParams; ++i) {
      for (int64_t e = 0; e < kRows * kCols; ++e) {
        float want = 0;
        for (int r = 0; r < D; ++r) want += grad_value(r, i, mesh.data_rank() * kRows * kCols + e);
        sums = sums && blocking[static_cast<size_t>(i)][static_cast<size_t>(e)] == want;
      }
    }
    report(sums, "blocking: every shard is the sum over ranks of its rows");
    for (const size_t bound : {2 * one, 3 * one, one / 2, size_t{1} << 30}) {
      const auto overlapped = run(mesh, true, bound, &peak);
      const size_t allowed = std::max(bound, one);
      report(peak <= allowed && (D == 1 || peak > 0),
             fmt::format("overlap, bound {} bytes: at most {} bytes in flight (allowed {})", bound,
                         peak, allowed));
      report(
          overlapped == blocking,
          fmt::format("overlap, bound {} bytes: shards bitwise those of the blocking path", bound));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "param_stream_probe: %s\n", e.what());
    return 1;
  }
  return report.failures() > 0 ? 1 : 0;
}
