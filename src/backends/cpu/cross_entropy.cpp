#include "backends/cpu/cross_entropy.hpp"

#include <cmath>
#include <limits>

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

}  // namespace magix::cpu
