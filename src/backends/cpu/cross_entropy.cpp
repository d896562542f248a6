#include "backends/cpu/cross_entropy.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "backends/cpu/vec_math.hpp"
#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"

namespace magix::cpu {

namespace {

constexpr int64_t kParallelMin = 1 << 15;  // elements below which one thread does it all

void check_sizes(const char* what, int64_t N, int64_t V) {
  MAGIX_CHECK(N >= 0 && V > 0, "{}: bad sizes N={} V={}", what, N, V);
}

}  // namespace

void cross_entropy_max(float* row_max, const float* logits, int64_t N, int64_t V) {
  check_sizes("cross_entropy_max", N, V);
#pragma omp parallel for if (N * V > kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    const float* l = logits + n * V;
    float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t v = 0; v < V; v++) m = l[v] > m ? l[v] : m;
    row_max[n] = m;
  }
}

void cross_entropy_sumexp(float* row_sumexp, float* target_logit, const float* logits,
                          const float* row_max, const int32_t* targets, int64_t v0, int64_t N,
                          int64_t V) {
  check_sizes("cross_entropy_sumexp", N, V);
#pragma omp parallel for if (N * V > kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    const float* l = logits + n * V;
    const float m = row_max[n];
    // Each term is <= 1 (m is the max over all shards after the all-reduce, or over this one);
    // the sum is accumulated in double.
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t v = 0; v < V; v++) sum += std::exp(l[v] - m);
    row_sumexp[n] = static_cast<float>(sum);
    const int64_t t = static_cast<int64_t>(targets[n]) - v0;
    target_logit[n] = (targets[n] >= 0 && t >= 0 && t < V) ? l[t] : 0.0f;
  }
}

void cross_entropy_loss(float* losses, const float* row_max, const float* row_sumexp,
                        const float* target_logit, const int32_t* targets, int64_t N) {
  MAGIX_CHECK(N >= 0, "cross_entropy_loss: N={} < 0", N);
  for (int64_t n = 0; n < N; n++) {
    if (targets[n] < 0) {
      losses[n] = 0.0f;
      continue;
    }
    // log(sum exp(l - m)) + m - l_target = logsumexp(l) - l_target
    const double lse = std::log(static_cast<double>(row_sumexp[n])) + row_max[n];
    losses[n] = static_cast<float>(lse - target_logit[n]);
  }
}

void cross_entropy_forward(float* losses, float* row_max, float* row_sumexp, const float* logits,
                           const int32_t* targets, int64_t N, int64_t V) {
  check_sizes("cross_entropy_forward", N, V);
  for (int64_t n = 0; n < N; n++) {
    MAGIX_CHECK(targets[n] < V, "cross_entropy_forward: target {} of row {} is >= vocab size {}",
                targets[n], n, V);
  }
  cross_entropy_max(row_max, logits, N, V);
  // target_logit is only needed between the two stages: keep it in losses.
  cross_entropy_sumexp(row_sumexp, losses, logits, row_max, targets, 0, N, V);
  cross_entropy_loss(losses, row_max, row_sumexp, losses, targets, N);
}

void cross_entropy_backward(float* dlogits, const float* logits, const float* row_max,
                            const float* row_sumexp, const int32_t* targets, const float* dloss,
                            int64_t v0, int64_t N, int64_t V) {
  check_sizes("cross_entropy_backward", N, V);
  // dlogits may alias logits: every element is read once, then written at the same index.
#pragma omp parallel for if (N * V > kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    const float* l = logits + n * V;
    float* d = dlogits + n * V;
    if (targets[n] < 0) {
      for (int64_t v = 0; v < V; v++) d[v] = 0.0f;
      continue;
    }
    const float m = row_max[n];
    const float scale = dloss[n] / row_sumexp[n];
    for (int64_t v = 0; v < V; v++) d[v] = scale * std::exp(l[v] - m);
    const int64_t t = static_cast<int64_t>(targets[n]) - v0;
    if (t >= 0 && t < V) d[t] -= dloss[n];
  }
}

// ---- bf16 logits: exact max, vec::exp, fp32 lanes summed per block into a double ------------

namespace {

// The logits of row n widened, eight at a time; the tail through a padded copy (pad -inf).
template <class Body>
void row_lanes(const uint16_t* l, int64_t V, Body body) {
  int64_t v = 0;
  for (; v + 8 <= V; v += 8) body(v, vec::load_bf16(l + v), 8);
  if (v < V) {
    uint16_t pad[8];
    std::fill(pad, pad + 8, uint16_t{0xff80});  // -inf
    std::copy(l + v, l + V, pad);
    body(v, vec::load_bf16(pad), V - v);
  }
}

}  // namespace

void cross_entropy_max(float* row_max, const uint16_t* logits, int64_t N, int64_t V) {
  check_sizes("cross_entropy_max", N, V);
#pragma omp parallel for if (N * V > kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    vec::F8 m = vec::splat(-std::numeric_limits<float>::infinity());
    row_lanes(logits + n * V, V, [&](int64_t, vec::F8 x, int64_t) { m = x > m ? x : m; });
    row_max[n] = vec::max(m);
  }
}

void cross_entropy_sumexp(float* row_sumexp, float* target_logit, const uint16_t* logits,
                          const float* row_max, const int32_t* targets, int64_t v0, int64_t N,
                          int64_t V) {
  check_sizes("cross_entropy_sumexp", N, V);
  constexpr int64_t kBlock = 1024;  // fp32 lane sums of this many terms (each <= 1), then double
#pragma omp parallel for if (N * V > kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    const uint16_t* l = logits + n * V;
    const vec::F8 m = vec::splat(row_max[n]);
    double sum = 0.0;
    vec::F8 part{};
    row_lanes(l, V, [&](int64_t v, vec::F8 x, int64_t) {
      part += vec::exp(x - m);
      if ((v + 8) % kBlock == 0) {
        sum += vec::sum(part);
        part = vec::F8{};
      }
    });
    row_sumexp[n] = static_cast<float>(sum + vec::sum(part));
    const int64_t t = static_cast<int64_t>(targets[n]) - v0;
    target_logit[n] = (targets[n] >= 0 && t >= 0 && t < V) ? bf16_to_float(l[t]) : 0.0f;
  }
}

void cross_entropy_backward(uint16_t* dlogits, const uint16_t* logits, const float* row_max,
                            const float* row_sumexp, const int32_t* targets, const float* dloss,
                            int64_t v0, int64_t N, int64_t V) {
  check_sizes("cross_entropy_backward", N, V);
  // dlogits may alias logits: each block of 8 is read, then written at the same place.
#pragma omp parallel for if (N * V > kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    const uint16_t* l = logits + n * V;
    uint16_t* d = dlogits + n * V;
    if (targets[n] < 0) {
      std::fill(d, d + V, uint16_t{0});
      continue;
    }
    const int64_t t = static_cast<int64_t>(targets[n]) - v0;
    const bool here = t >= 0 && t < V;
    const float lt = here ? bf16_to_float(l[t]) : 0.0f;  // read before it is overwritten
    const float scale = dloss[n] / row_sumexp[n];
    const vec::F8 m = vec::splat(row_max[n]);
    row_lanes(l, V, [&](int64_t v, vec::F8 x, int64_t k) {
      uint16_t out[8];
      vec::store_bf16(out, scale * vec::exp(x - m));
      std::copy(out, out + k, d + v);
    });
    // softmax - 1 at the target, rounded once.
    if (here) d[t] = float_to_bf16(scale * std::exp(lt - row_max[n]) - dloss[n]);
  }
}

}  // namespace magix::cpu
