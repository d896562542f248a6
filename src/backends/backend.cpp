#include "backends/backend.hpp"

#include "backends/cpu/cpu_backend.hpp"
#if defined(MAGIX_HAS_CUDA)
#include "backends/cuda/cuda_backend.hpp"
#endif
#include "magix/error.hpp"

namespace magix {

const Backend& backend_for(Device device) {
  switch (device) {
    case Device::kCpu:
      return cpu::cpu_backend();
    case Device::kCuda:
#if defined(MAGIX_HAS_CUDA)
      return cuda::cuda_backend();  // throws "no CUDA device visible" without a GPU
#else
      break;
#endif
  }
  MAGIX_FAIL("this build of magix has no {} backend", device_name(device));
}

}  // namespace magix
