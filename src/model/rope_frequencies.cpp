// Rotary frequencies as transformers 5.23 computes them (the default, linear and llama3 rules).
#include "model/rope_frequencies.hpp"

#include <cmath>
#include <numbers>

#include "magix/error.hpp"

// transformers computes inv_freq with separately rounded fp32 multiplies and adds; keep the
// compiler from fusing them into FMAs here so that the results match bit for bit.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace magix {

std::vector<float> rope_inv_freq(int64_t head_dim, float theta, const RopeScaling& scaling) {
  MAGIX_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope: head_dim must be even and > 0, got {}",
              head_dim);
  MAGIX_CHECK(theta > 0.0f, "rope: rope_theta must be > 0, got {}", theta);
  // Default rule, as torch evaluates it in fp32:
  //   inv_freq[i] = 1 / theta ** (float(2i) / dim)
  // pow is evaluated in double and rounded once (torch's fp32 pow is accurate to < 1 ulp).
  const int64_t half = head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; i++) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float power =
        static_cast<float>(std::pow(static_cast<double>(theta), static_cast<double>(exponent)));
    inv_freq[i] = 1.0f / power;
  }
  switch (scaling.kind) {
    case RopeScaling::Kind::kNone:
      break;
    case RopeScaling::Kind::kLinear:
      // transformers v5 divides inv_freq by the factor (same as dividing the positions).
      MAGIX_CHECK(scaling.factor > 0.0f, "rope: linear scaling factor must be > 0, got {}",
                  scaling.factor);
      for (float& f : inv_freq) f = f / scaling.factor;
      break;
    case RopeScaling::Kind::kLlama3: {
      const float factor = scaling.factor;
      const float low = scaling.low_freq_factor;
      const float high = scaling.high_freq_factor;
      MAGIX_CHECK(factor > 0.0f && low > 0.0f && high > low && scaling.original_max_position > 0,
                  "rope: llama3 scaling needs factor > 0, 0 < low_freq_factor < "
                  "high_freq_factor and original_max_position_embeddings > 0 (got {}, {}, {}, {})",
                  factor, low, high, scaling.original_max_position);
      // The fp32 tensor operations of _compute_llama3_parameters, one rounding each; torch's
      // `scalar / tensor` is reciprocal(tensor) * scalar.
      const float old_context = static_cast<float>(scaling.original_max_position);
      const float low_freq_wavelen = static_cast<float>(
          static_cast<double>(scaling.original_max_position) / static_cast<double>(low));
      const float high_freq_wavelen = static_cast<float>(
          static_cast<double>(scaling.original_max_position) / static_cast<double>(high));
      const float two_pi = static_cast<float>(2.0 * std::numbers::pi);
      const float high_minus_low = static_cast<float>(static_cast<double>(high) - low);
      for (float& f : inv_freq) {
        const float wavelen = (1.0f / f) * two_pi;
        const float scaled = wavelen > low_freq_wavelen ? f / factor : f;
        const float smooth = ((1.0f / wavelen) * old_context - low) / high_minus_low;
        const float smoothed = ((1.0f - smooth) * scaled) / factor + smooth * scaled;
        const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
        f = medium ? smoothed : scaled;
      }
      break;
    }
  }
  return inv_freq;
}

}  // namespace magix
