// Up-front memory estimates: before weights, optimizer state, activations or a KV cache are
// allocated, their size is computed from the config and the flags (in floating point, so no
// size overflows) and compared with this machine's physical memory; a request that cannot fit
// is refused with a message naming the value at fault and what it would need, instead of
// std::bad_alloc (or the kernel's OOM killer) later.
#pragma once

#include <cstdint>
#include <string>

#include "magix/model_config.hpp"
#include "magix/tensor.hpp"

namespace magix {

// Physical memory of this machine in bytes (sysconf).
double physical_memory_bytes();
// "7.5 PiB", "23.4 GiB", "512 B".
std::string format_bytes(double bytes);

// Parameters of the model `c` describes (embeddings, layers, final norm, untied head).
double model_parameter_count(const ModelConfig& c);

// Throws when `need` bytes (per process) exceed the memory of `device`, where they will live: the
// host's physical memory ("<what> would need <need>; this machine has <phys>"), or a GPU's
// ("...; the cuda device has <bytes> (<its description>)"). `what` names the value at fault (e.g.
// "--max_length 100000000 with --batch_size 8: the activations").
void check_fits_in_memory(double need, const std::string& what, Device device = Device::kCpu);

// The weights of `c` stored with `bytes_per_param` bytes each (plus `extra_bytes_per_param`
// of gradients and optimizer state for training), split evenly over `processes` (the least
// any sharding needs per process). `source` names the config file.
void check_model_fits_in_memory(const ModelConfig& c, const std::string& source,
                                double bytes_per_param, double extra_bytes_per_param = 0,
                                int processes = 1, Device device = Device::kCpu);

}  // namespace magix
