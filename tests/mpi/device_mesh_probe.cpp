// Runs under mpirun as every rank of a D x M mesh: training with every tensor on the emulated
// device (tests/common/emulated_device.hpp: Device::kCuda tensors in host memory, the CPU
// backend's arithmetic) equals the CPU run bit for bit, on each rank's shards. It proves the
// device plumbing of the parallel paths (FSDP gathers and reduce-scatters, tensor-parallel
// all-reduces, the grad norm's sums, checkpoints of sharded device tensors): device buffers are
// staged through host buffers for the collectives (src/shard/shard_ops.cpp) and nothing else
// touches them from the host.
//   device_mesh_probe check D M
// Cases: the tiny llama of tests/fixtures/train for 3 steps in fp32, in bf16 mixed precision
// with bf16 weights, and LoRA (rank 4, dropout 0.25); each run saves a checkpoint, and the
// device run's checkpoint restores on the CPU with the same shards. One line per check; exit
// status 1 if any fails. Errors abort the world (Runtime::abort).
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "../common/emulated_device.hpp"
#include "../common/tensor_compare.hpp"
#include "../common/tiny_train.hpp"
#include "backends/backend.hpp"
#include "magix/distributed.hpp"
#include "magix/error.hpp"
#include "magix/lora.hpp"
#include "magix/trainer.hpp"

namespace {

namespace fs = std::filesystem;
const fs::path kFixtures = MAGIX_FIXTURES_DIR;

magix::test::ProbeReport report;  // this rank's checks

struct Run {
  std::vector<double> losses;
  magix::ParameterSet trained;  // this rank's shards, on the host
};

Run train(const magix::TrainArgs& a, const magix::Mesh& mesh, const magix::LoraConfig* lora) {
  std::unique_ptr<magix::Trainable> model =
      lora ? std::unique_ptr<magix::Trainable>(magix::make_lora_trainable(a, *lora, mesh))
           : magix::make_full_trainable(a, mesh);
  Run r;
  r.losses = magix::run_training(a, mesh, *model).losses;
  r.trained = model->trainable().to_device(magix::Device::kCpu);
  return r;
}

bool bitwise_equal(const magix::ParameterSet& a, const magix::ParameterSet& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const magix::Tensor& x = a.tensor(i);
    const magix::Tensor& y = b.tensor(i);
    if (x.dtype() != y.dtype() || x.nbytes() != y.nbytes() ||
        std::memcmp(x.bytes(), y.bytes(), x.nbytes()) != 0) {
      return false;
    }
  }
  return true;
}

int run_check(int d, int m) {
  magix::Mesh mesh = magix::create_device_mesh({d, m});
  magix::test::EmulatedDeviceScope emulated;
  // One checkpoint folder for all ranks: rank 0 makes it and tells the others.
  std::string dir;
  if (mesh.world_rank() == 0) {
    std::string t = (fs::temp_directory_path() / "magix-device-mesh-XXXXXX").string();
    MAGIX_CHECK(mkdtemp(t.data()) != nullptr, "cannot make a temporary folder");
    dir = t;
  }
  std::vector<char> buf(256, 0);
  std::memcpy(buf.data(), dir.data(), std::min(dir.size(), buf.size() - 1));
  mesh.world().broadcast(std::as_writable_bytes(std::span<char>(buf)), 0);
  dir = buf.data();

  magix::LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 8;
  lora.dropout = 0.25;
  struct Case {
    const char* name;
    bool bf16;
    const magix::LoraConfig* lora;
  };
  for (const Case& c :
       {Case{"fp32", false, nullptr}, Case{"bf16", true, nullptr}, Case{"lora", false, &lora}}) {
    magix::TrainArgs a = magix::test::tiny_train_args(kFixtures);
    a.max_steps = 3;
    a.mesh_shape = {d, m};
    a.bf16 = c.bf16;
    a.bf16_model_weights = c.bf16;
    a.checkpoint_dir = dir + "/" + c.name + "-cpu";
    const Run cpu = train(a, mesh, c.lora);
    a.device = "cuda";
    a.checkpoint_dir = dir + "/" + c.name + "-cuda";
    const Run dev = train(a, mesh, c.lora);
    const std::string where = fmt::format("{} {}x{} rank {}", c.name, d, m, mesh.world_rank());
    report(dev.losses == cpu.losses && cpu.losses.size() == 3,
           fmt::format("{}: the device run's 3 losses equal the cpu run's", where));
    report(bitwise_equal(dev.trained, cpu.trained),
           fmt::format("{}: the device run's shards equal the cpu run's bit for bit", where));
    // The device run's checkpoint resumed on the CPU: nothing left to train, the same shards.
    a.device = "";
    std::unique_ptr<magix::Trainable> resumed =
        c.lora ? std::unique_ptr<magix::Trainable>(magix::make_lora_trainable(a, *c.lora, mesh))
               : magix::make_full_trainable(a, mesh);
    const magix::TrainSummary s = magix::run_training(a, mesh, *resumed);
    report(s.resumed_from.has_value() && s.losses.empty() &&
               bitwise_equal(resumed->trainable(), cpu.trained),
           fmt::format("{}: the device run's checkpoint restores on the cpu bit for bit", where));
  }
  mesh.world().barrier();
  if (mesh.world_rank() == 0) fs::remove_all(dir);
  return report.failures() == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  magix::Runtime runtime(&argc, &argv);
  try {
    if (argc == 4 && std::string(argv[1]) == "check") {
      return run_check(std::stoi(argv[2]), std::stoi(argv[3]));
    }
    std::fprintf(stderr, "usage: device_mesh_probe check D M\n");
    return 2;
  } catch (const std::exception& e) {
    runtime.abort(e.what());
  }
}
