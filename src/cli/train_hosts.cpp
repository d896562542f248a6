// check_train_hosts: the up-front multi-host checks of train and train-lora (docs/multihost.md).
#include "commands.hpp"
#include "magix/host_checks.hpp"

namespace magix::cli {

void check_train_hosts(const TrainArgs& a, const Mesh& mesh) {
  if (mesh.world_size() <= 1) return;
  if (!a.checkpoint_dir.empty()) check_shared_folder(mesh, a.checkpoint_dir, "--checkpoint_dir");
  check_same_file(mesh, a.train_file, "--train_file");
}

}  // namespace magix::cli
