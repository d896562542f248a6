// Rotary frequencies as transformers 5.23 computes them (the default, linear, llama3, yarn and
// longrope rules).
#include "model/rope_frequencies.hpp"

#include <algorithm>
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

namespace {

// theta ** (float(2i) / dim) as torch evaluates it in fp32: pow in double, rounded once (torch's
// fp32 pow is accurate to < 1 ulp).
float rope_power(int64_t i, int64_t head_dim, float theta) {
  const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
  return static_cast<float>(std::pow(static_cast<double>(theta), static_cast<double>(exponent)));
}

// _compute_yarn_parameters: a ramp over the D/2 frequencies between the correction dims of
// beta_fast and beta_slow rotations (double math, as Python's) blends the interpolated
// frequencies 1 / (factor * theta^(2i/D)) (below the ramp) into the extrapolated (unchanged) ones
// (above it), in fp32 tensor arithmetic. Overwrites inv_freq (D/2).
void yarn_inv_freq(std::vector<float>& inv_freq, int64_t head_dim, float theta,
                   const RopeScaling& s) {
  MAGIX_CHECK(s.factor > 0.0f && s.original_max_position > 0 && s.beta_fast > 0 && s.beta_slow > 0,
              "rope: yarn scaling needs factor, beta_fast, beta_slow and "
              "original_max_position_embeddings > 0 (got {}, {}, {}, {})",
              s.factor, s.beta_fast, s.beta_slow, s.original_max_position);
  const double dim = static_cast<double>(head_dim), base = theta;
  const auto correction_dim = [&](double rotations) {
    return (dim * std::log(static_cast<double>(s.original_max_position) /
                           (rotations * 2 * std::numbers::pi))) /
           (2 * std::log(base));
  };
  double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
  if (s.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1);
  if (low == high) high += 0.001;  // transformers' guard against a zero-width ramp
  const float low_f = static_cast<float>(low), width = static_cast<float>(high - low);
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    // pos_freqs = theta^(2i/D) as the default rule rounds it; extrapolation = 1 / pos_freqs.
    const float pos_freq = rope_power(static_cast<int64_t>(i), head_dim, theta);
    const float extrapolation = 1.0f / pos_freq;
    const float interpolation = 1.0f / (s.factor * pos_freq);
    const float ramp = std::clamp((static_cast<float>(i) - low_f) / width, 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    inv_freq[i] =
        interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
}

}  // namespace

std::vector<float> rope_inv_freq(int64_t head_dim, float theta, const RopeScaling& scaling,
                                 bool long_context) {
  MAGIX_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope: head_dim must be even and > 0, got {}",
              head_dim);
  MAGIX_CHECK(theta > 0.0f, "rope: rope_theta must be > 0, got {}", theta);
  // Default rule, as torch evaluates it in fp32:
  //   inv_freq[i] = 1 / theta ** (float(2i) / dim)
  // pow is evaluated in double and rounded once (torch's fp32 pow is accurate to < 1 ulp).
  const int64_t half = head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; i++) {
    inv_freq[i] = 1.0f / rope_power(i, head_dim, theta);
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
    case RopeScaling::Kind::kYarn:
      yarn_inv_freq(inv_freq, head_dim, theta, scaling);
      break;
    case RopeScaling::Kind::kLongRope: {
      // _compute_longrope_parameters: 1 / (ext_factors * base ** (2i / dim)) in fp32.
      const std::vector<float>& ext = long_context ? scaling.long_factor : scaling.short_factor;
      MAGIX_CHECK(std::ssize(ext) == half, "rope: longrope needs {} factors, got {}", half,
                  ext.size());
      for (int64_t i = 0; i < half; i++) {
        inv_freq[i] = 1.0f / (ext[static_cast<size_t>(i)] * rope_power(i, head_dim, theta));
      }
      break;
    }
  }
  return inv_freq;
}

}  // namespace magix
