#include "backends/backend.hpp"

#include "backends/cpu/cpu_backend.hpp"
#include "magix/error.hpp"

namespace magix {

const Backend& backend_for(Device device) {
  switch (device) {
    case Device::kCpu:
      return cpu::cpu_backend();
    case Device::kCuda:
      break;
  }
  MAGIX_FAIL("this build of magix has no {} backend", device_name(device));
}

}  // namespace magix
