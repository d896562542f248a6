// The reference workflow in C++ ("Magix 101"): a mesh, a model loaded onto it by partition
// rules, optimizer state sharded like the parameters, and a train step over the mesh.
//
//   magix::Runtime runtime(&argc, &argv);                        // MPI under mpirun/srun
//   magix::Mesh mesh = magix::create_device_mesh({2, 2}, {"data", "model"});
//   magix::PartitionRules rules = magix::default_partition_rules("llama");
//   magix::Decoder model = magix::load_model_hub("llama", "org/name", rules, mesh);
//   magix::AdamW opt = magix::initialize_opt_state(options, model.params(), rules, mesh);
//   magix::TrainStepResult r = magix::train_step(model, opt, batch, lr);
//
// See examples/magix101.cpp.
#pragma once

#include <string>

#include "magix/batch.hpp"
#include "magix/distributed.hpp"
#include "magix/mesh.hpp"
#include "magix/model.hpp"
#include "magix/optimizer.hpp"
#include "magix/sharding.hpp"
#include "magix/train_step.hpp"

namespace magix {

// An HF folder or a hub name in the local HF cache, loaded straight onto the mesh: each rank
// reads only its own shards' bytes. `family` must match the config's model_type. The model
// holds its parameters (`model.params()`): the reference's (model, params) pair in one object.
Decoder load_model_hub(const std::string& family, const std::string& name_or_path,
                       const PartitionRules& rules, const Mesh& mesh, DecoderOptions options = {});

}  // namespace magix
