#include "backends/backend.hpp"

#include <array>
#include <charconv>
#include <cstdlib>
#include <cstring>

#include "backends/cpu/cpu_backend.hpp"
#if defined(MAGIX_HAS_CUDA)
#include "backends/cuda/cuda_backend.hpp"
#endif
#if defined(MAGIX_HAS_NCCL)
#include "backends/cuda/nccl_collectives.hpp"
#endif
#include "magix/distributed.hpp"
#include "magix/error.hpp"
#include "magix/memory_check.hpp"

namespace magix {
namespace {

constexpr size_t kDevices = 2;

// Backends registered by set_backend_for_testing, by Device.
std::array<const Backend*, kDevices>& test_backends() {
  static std::array<const Backend*, kDevices> backends{};
  return backends;
}

// Engines registered by set_collectives_engine_for_testing, by Device.
std::array<const DeviceCollectivesEngine*, kDevices>& test_engines() {
  static std::array<const DeviceCollectivesEngine*, kDevices> engines{};
  return engines;
}

const Backend* build_backend(Device device) {
  switch (device) {
    case Device::kCpu:
      return &cpu::cpu_backend();
    case Device::kCuda:
#if defined(MAGIX_HAS_CUDA)
      return &cuda::cuda_backend();  // throws "no CUDA device visible" without a GPU
#else
      return nullptr;
#endif
  }
  return nullptr;
}

// Whether this build has its own backend for `device` (without creating it: the CUDA backend's
// constructor needs a GPU).
bool built_with(Device device) {
  switch (device) {
    case Device::kCpu:
      return true;
    case Device::kCuda:
#if defined(MAGIX_HAS_CUDA)
      return true;
#else
      return false;
#endif
  }
  return false;
}

}  // namespace

double Backend::memory_bytes() const {
  return physical_memory_bytes();
}

const Backend& backend_for(Device device) {
  if (const Backend* b = test_backends().at(static_cast<size_t>(device))) return *b;
  if (const Backend* b = build_backend(device)) return *b;
  MAGIX_FAIL("this build of magix has no {} backend", device_name(device));
}

Tensor to_host(const Tensor& t) {
  return to_device(t, Device::kCpu);
}

Tensor to_device(const Tensor& t, Device device) {
  if (t.device() == device) return t;
  Tensor out = backend_for(device).empty(t.shape(), t.dtype());
  backend_for(device == Device::kCpu ? t.device() : device).copy(out, t);
  return out;
}

bool has_backend(Device device) {
  return test_backends().at(static_cast<size_t>(device)) != nullptr || built_with(device);
}

void set_backend_for_testing(Device device, const Backend* backend) {
  MAGIX_CHECK(backend == nullptr || backend->device() == device,
              "set_backend_for_testing: a {} backend registered for {}",
              device_name(backend ? backend->device() : device), device_name(device));
  test_backends().at(static_cast<size_t>(device)) = backend;
}

const DeviceCollectivesEngine* collectives_engine_for(Device device) {
  if (const DeviceCollectivesEngine* e = test_engines().at(static_cast<size_t>(device))) return e;
  if (device != Device::kCuda || test_backends().at(static_cast<size_t>(device)) != nullptr) {
    return nullptr;
  }
#if defined(MAGIX_HAS_NCCL)
  return &cuda::nccl_engine();
#else
  return nullptr;
#endif
}

void set_collectives_engine_for_testing(Device device, const DeviceCollectivesEngine* engine) {
  test_engines().at(static_cast<size_t>(device)) = engine;
}

Device parse_device(std::string_view name) {
  Device device;
  if (name == "cpu") {
    device = Device::kCpu;
  } else if (name == "cuda") {
    device = Device::kCuda;
  } else {
    MAGIX_FAIL("unknown device '{}' (use cpu or cuda)", name);
  }
  MAGIX_CHECK(has_backend(device), "this build of magix has no {} backend", name);
  return device;
}

Device default_device() {
  // The build's own backends only: a backend registered by a test never becomes a default.
#if defined(MAGIX_HAS_CUDA)
  if (cuda::visible_device_count() > 0) return Device::kCuda;
#endif
  return Device::kCpu;
}

std::optional<int> local_rank_from_env() {
  return local_rank_from_env([](const char* name) -> const char* { return std::getenv(name); });
}

std::optional<int> local_rank_from_env(const std::function<const char*(const char*)>& getenv) {
  for (const char* var :
       {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"}) {
    const char* value = getenv(var);
    if (value == nullptr || *value == '\0') continue;
    int rank = -1;
    const char* end = value + std::strlen(value);
    const auto [ptr, ec] = std::from_chars(value, end, rank);
    MAGIX_CHECK(ec == std::errc() && ptr == end && rank >= 0,
                "{}='{}' is not a local rank (a non-negative integer)", var, value);
    return rank;
  }
  return std::nullopt;
}

int device_index_for_local_rank(int local_rank, int devices) {
  MAGIX_CHECK(devices >= 1, "no GPU is visible to this process (local rank {})", local_rank);
  MAGIX_CHECK(local_rank >= 0, "local rank {} < 0", local_rank);
  return local_rank % devices;
}

Device use_device(std::string_view name) {
  const Device device = name.empty() ? default_device() : parse_device(name);
  if (device != Device::kCpu) {
    select_device_for_local_rank(device, local_rank());
    (void)backend_for(device);  // creates it on that device, or says why it cannot
  }
  return device;
}

void select_device_for_local_rank(Device device, int local_rank) {
  // The CPU and a backend registered by a test have one device each.
  if (device != Device::kCuda || test_backends().at(static_cast<size_t>(device)) != nullptr) return;
#if defined(MAGIX_HAS_CUDA)
  cuda::set_device(device_index_for_local_rank(local_rank, cuda::visible_device_count()));
#else
  (void)local_rank;
#endif
}

}  // namespace magix
