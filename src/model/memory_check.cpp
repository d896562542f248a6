// Up-front memory estimates (include/magix/memory_check.hpp).
#include "magix/memory_check.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "backends/backend.hpp"
#include "magix/error.hpp"

namespace magix {

double physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return 0;  // unknown: nothing is refused
  return static_cast<double>(pages) * static_cast<double>(page);
}

std::string format_bytes(double bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"};
  size_t u = 0;
  while (bytes >= 1024 && u + 1 < std::size(kUnits)) {
    bytes /= 1024;
    ++u;
  }
  if (u == 0) return fmt::format("{:.0f} B", bytes);
  return fmt::format("{:.1f} {}", bytes, kUnits[u]);
}

double model_parameter_count(const ModelConfig& c) {
  const double C = static_cast<double>(c.hidden_size), I = static_cast<double>(c.intermediate_size);
  const double V = static_cast<double>(c.vocab_size), L = static_cast<double>(c.num_layers);
  const double q = static_cast<double>(c.num_heads) * static_cast<double>(c.head_dim);
  const double kv = static_cast<double>(c.num_kv_heads) * static_cast<double>(c.head_dim);
  const double norms = 2 * C + (c.sandwich_norms ? 2 * C : 0) +
                       (c.qk_norm ? 2 * static_cast<double>(c.head_dim) : 0);
  const double layer = C * (q + 2 * kv) + q * C + 3 * C * I + norms;
  return V * C * (c.tie_word_embeddings ? 1 : 2) + L * layer + C;
}

void check_fits_in_memory(double need, const std::string& what, Device device) {
  if (device != Device::kCpu) {
    const Backend& b = backend_for(device);
    const double have = b.memory_bytes();
    if (have <= 0 || need <= have) return;
    MAGIX_FAIL("{} would need {}; the {} device has {} ({})", what, format_bytes(need),
               device_name(device), format_bytes(have), b.describe());
  }
  const double phys = physical_memory_bytes();
  if (phys <= 0 || need <= phys) return;
  MAGIX_FAIL("{} would need {}; this machine has {}", what, format_bytes(need), format_bytes(phys));
}

void check_model_fits_in_memory(const ModelConfig& c, const std::string& source,
                                double bytes_per_param, double extra_bytes_per_param, int processes,
                                Device device) {
  const double params = model_parameter_count(c);
  const double need = params * (bytes_per_param + extra_bytes_per_param) / std::max(processes, 1);
  // Name the size that dominates: the embedding tables, else the layers.
  const double C = static_cast<double>(c.hidden_size);
  const double embed = static_cast<double>(c.vocab_size) * C * (c.tie_word_embeddings ? 1 : 2);
  std::string at_fault;
  if (embed >= params / 2 && static_cast<double>(c.vocab_size) > C) {
    at_fault = fmt::format("vocab_size {}", c.vocab_size);
  } else if (c.intermediate_size > c.hidden_size) {
    at_fault =
        fmt::format("intermediate_size {} (hidden_size {})", c.intermediate_size, c.hidden_size);
  } else {
    at_fault = fmt::format("hidden_size {}", c.hidden_size);
  }
  const std::string what =
      fmt::format("{}: {} with num_hidden_layers {} ({:.3g} parameters) {}", source, at_fault,
                  c.num_layers, params,
                  extra_bytes_per_param > 0 ? "for the weights, gradients and optimizer state"
                                            : "for the weights");
  check_fits_in_memory(need, what, device);
}

}  // namespace magix
