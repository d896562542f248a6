// Magix 101 in C++: the reference workflow, step by step.
//
//   magix101 MODEL_DIR [D M] [STEPS]
//   mpirun -np 4 magix101 tests/fixtures/models/llama_gqa 2 2 3
//
// Prints, on rank 0, the loss and gradient norm of each step; the numbers do not depend on
// the mesh (up to float rounding).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "magix/magix.hpp"

int main(int argc, char** argv) {
  // 0. One process per device; MPI when started by mpirun or srun.
  magix::Runtime runtime(&argc, &argv);
  try {
    if (argc < 2) {
      std::fprintf(stderr, "usage: magix101 MODEL_DIR [D M] [STEPS]\n");
      return 2;
    }
    const std::string model_dir = argv[1];
    const int d = argc > 3 ? std::atoi(argv[2]) : -1, m = argc > 3 ? std::atoi(argv[3]) : 1;
    const int steps = argc > 4 ? std::atoi(argv[4]) : 3;

    // 1. The devices in a named grid: data parallel x model (tensor) parallel.
    magix::Mesh mesh = magix::create_device_mesh({d, m}, {"data", "model"});

    // 2. The model, each rank holding its shards as the family's rules place them.
    const std::string family(magix::family_name(
        magix::load_model_config(std::filesystem::path(model_dir) / "config.json").family));
    const magix::PartitionRules rules = magix::default_partition_rules(family);
    magix::Decoder model = magix::load_model_hub(family, model_dir, rules, mesh);

    // 3. Optimizer state sharded like the parameters.
    magix::AdamWOptions options;
    options.weight_decay = 0.01;
    magix::AdamW optimizer = magix::initialize_opt_state(options, model.params(), rules, mesh);

    // 4. Train steps over the mesh.
    const int rows = 4, len = 16;
    for (int step = 0; step < steps; ++step) {
      // This data rank's rows of a global batch of random tokens (a fresh one each step).
      const magix::TokenBatch batch = magix::random_causal_batch(
          model.config().vocab_size, rows, len, 12345 + step, mesh.data_rank(), mesh.data_size());
      const magix::TrainStepResult r = magix::train_step(model, optimizer, batch, 1e-2);
      if (mesh.world_rank() == 0) {
        std::printf("step %d loss %.9g grad_norm %.9g tokens %lld mesh %dx%d\n", step, r.loss,
                    r.grad_norm, static_cast<long long>(r.tokens), mesh.data_size(),
                    mesh.model_size());
      }
    }
    return 0;
  } catch (const std::exception& e) {
    runtime.abort(e.what());
  }
}
