// Softmax cross-entropy: against a double log-softmax, finite differences, ignored targets,
// in-place backward, and the vocab-parallel stages combined by hand as the caller's all-reduces.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "backends/cpu/cross_entropy.hpp"
#include "kernel_test_util.hpp"
#include "magix/error.hpp"

namespace magix::cpu {
namespace {

using test::random_floats;

// losses (N) = logsumexp(logits[n]) - logits[n][target], 0 for ignored targets; in double.
std::vector<double> ce_ref(const std::vector<double>& logits, const std::vector<int32_t>& targets,
                           int64_t N, int64_t V) {
  std::vector<double> losses(N, 0.0);
  for (int64_t n = 0; n < N; n++) {
    if (targets[n] < 0) continue;
    const double* l = logits.data() + n * V;
    const double m = *std::max_element(l, l + V);
    double s = 0.0;
    for (int64_t v = 0; v < V; v++) s += std::exp(l[v] - m);
    losses[n] = std::log(s) + m - l[targets[n]];
  }
  return losses;
}

constexpr int64_t kN = 7, kV = 1000;
const std::vector<int32_t> kTargets = {5, -100, 999, 0, 512, -1, 37};

// Logits of size ~10 around a large per-row offset, to exercise the max subtraction.
std::vector<float> make_logits(uint32_t seed) {
  auto logits = random_floats(kN * kV, seed, -10.0f, 10.0f);
  for (int64_t n = 0; n < kN; n++) {
    for (int64_t v = 0; v < kV; v++) logits[n * kV + v] += 1000.0f * static_cast<float>(n % 3);
  }
  return logits;
}

TEST(CrossEntropy, ForwardMatchesReference) {
  const auto logits = make_logits(1);
  std::vector<float> losses(kN), row_max(kN), row_sumexp(kN);
  cross_entropy_forward(losses.data(), row_max.data(), row_sumexp.data(), logits.data(),
                        kTargets.data(), kN, kV);
  const auto ref = ce_ref(test::to_double(logits), kTargets, kN, kV);
  // The logits themselves are exact inputs; the loss is a difference of values ~2000 whose
  // fp32 result carries eps * 2000 ~ 2.4e-4 absolute rounding from row_max - target.
  test::expect_close(losses, ref, 1e-6, 2000 * FLT_EPSILON, "losses");
  EXPECT_EQ(losses[1], 0.0f);
  EXPECT_EQ(losses[5], 0.0f);
  for (int64_t n = 0; n < kN; n++) {
    const float* l = logits.data() + n * kV;
    EXPECT_EQ(row_max[n], *std::max_element(l, l + kV));
    EXPECT_GE(row_sumexp[n], 1.0f);
  }
}

TEST(CrossEntropy, BackwardMatchesFiniteDifferences) {
  const int64_t N = 4, V = 33;
  const std::vector<int32_t> targets = {3, -100, 32, 0};
  auto logits = random_floats(N * V, 2, -4.0f, 4.0f);
  const auto dloss = random_floats(N, 3);
  std::vector<float> losses(N), row_max(N), row_sumexp(N), dlogits(N * V, 123.0f);
  cross_entropy_forward(losses.data(), row_max.data(), row_sumexp.data(), logits.data(),
                        targets.data(), N, V);
  cross_entropy_backward(dlogits.data(), logits.data(), row_max.data(), row_sumexp.data(),
                         targets.data(), dloss.data(), 0, N, V);
  const auto w = test::to_double(dloss);
  const auto grad = test::numeric_grad(
      [&](const std::vector<double>& l) { return test::dot(w, ce_ref(l, targets, N, V)); },
      test::to_double(logits));
  // Gradients are dloss * (p - onehot), |.| <= 1: a few fp32 roundings.
  test::expect_close(dlogits, grad, 0.0, 1e-6, "dlogits");
  for (int64_t v = 0; v < V; v++) EXPECT_EQ(dlogits[1 * V + v], 0.0f);  // ignored row: written 0

  // In place: dlogits aliasing logits gives the same numbers.
  cross_entropy_backward(logits.data(), logits.data(), row_max.data(), row_sumexp.data(),
                         targets.data(), dloss.data(), 0, N, V);
  for (int64_t i = 0; i < N * V; i++) ASSERT_EQ(logits[i], dlogits[i]) << i;
}

TEST(CrossEntropy, VocabShardsCombineToTheSingleShardResult) {
  const auto logits = make_logits(4);
  const auto dloss = random_floats(kN, 5);
  std::vector<float> losses(kN), row_max(kN), row_sumexp(kN), dlogits(kN * kV);
  cross_entropy_forward(losses.data(), row_max.data(), row_sumexp.data(), logits.data(),
                        kTargets.data(), kN, kV);
  cross_entropy_backward(dlogits.data(), logits.data(), row_max.data(), row_sumexp.data(),
                         kTargets.data(), dloss.data(), 0, kN, kV);

  // Two shards of the vocabulary, [0, 400) and [400, 1000), each holding its columns (N, V_s).
  const int64_t split = 400;
  const int64_t v0[2] = {0, split}, width[2] = {split, kV - split};
  std::vector<float> shard[2];
  for (int s = 0; s < 2; s++) {
    shard[s].resize(kN * width[s]);
    for (int64_t n = 0; n < kN; n++) {
      std::copy_n(logits.data() + n * kV + v0[s], width[s], shard[s].data() + n * width[s]);
    }
  }
  // Stage 1 and the max all-reduce.
  std::vector<float> max_s[2] = {std::vector<float>(kN), std::vector<float>(kN)};
  for (int s = 0; s < 2; s++) cross_entropy_max(max_s[s].data(), shard[s].data(), kN, width[s]);
  std::vector<float> gmax(kN);
  for (int64_t n = 0; n < kN; n++) gmax[n] = std::max(max_s[0][n], max_s[1][n]);
  EXPECT_EQ(gmax, row_max);
  // Stage 2 and the sum all-reduce of row_sumexp and target_logit.
  std::vector<float> sum_s[2] = {std::vector<float>(kN), std::vector<float>(kN)};
  std::vector<float> tgt_s[2] = {std::vector<float>(kN), std::vector<float>(kN)};
  for (int s = 0; s < 2; s++) {
    cross_entropy_sumexp(sum_s[s].data(), tgt_s[s].data(), shard[s].data(), gmax.data(),
                         kTargets.data(), v0[s], kN, width[s]);
  }
  std::vector<float> gsum(kN), gtgt(kN), shard_losses(kN);
  for (int64_t n = 0; n < kN; n++) {
    gsum[n] = sum_s[0][n] + sum_s[1][n];
    gtgt[n] = tgt_s[0][n] + tgt_s[1][n];  // one shard holds the target, the other adds 0
    if (kTargets[n] >= 0) {
      EXPECT_EQ(gtgt[n], logits[n * kV + kTargets[n]]);
    }
  }
  cross_entropy_loss(shard_losses.data(), gmax.data(), gsum.data(), gtgt.data(), kTargets.data(),
                     kN);
  // Only the split of the double sum of exp differs: a relative 1e-6 on row_sumexp moves the
  // loss by 1e-6 absolute.
  test::expect_close(shard_losses, losses, 0.0, 1e-5, "sharded losses");
  // Backward per shard with the combined statistics: the columns of the single-shard gradient.
  for (int s = 0; s < 2; s++) {
    std::vector<float> d(kN * width[s]);
    cross_entropy_backward(d.data(), shard[s].data(), gmax.data(), gsum.data(), kTargets.data(),
                           dloss.data(), v0[s], kN, width[s]);
    for (int64_t n = 0; n < kN; n++) {
      for (int64_t v = 0; v < width[s]; v++) {
        const float want = dlogits[n * kV + v0[s] + v];
        ASSERT_NEAR(d[n * width[s] + v], want, 1e-6 * std::fabs(want) + 1e-12)
            << "shard " << s << " row " << n << " col " << v;
      }
    }
  }
}

TEST(CrossEntropy, LargeLogitsStayFinite) {
  const int64_t V = 4;
  const std::vector<float> logits = {1e30f, -1e30f, 0.0f, 1e30f};
  const std::vector<int32_t> targets = {2};
  std::vector<float> losses(1), row_max(1), row_sumexp(1), d(V);
  cross_entropy_forward(losses.data(), row_max.data(), row_sumexp.data(), logits.data(),
                        targets.data(), 1, V);
  EXPECT_EQ(row_sumexp[0], 2.0f);
  EXPECT_FLOAT_EQ(losses[0], 1e30f);
  const float dloss = 1.0f;
  cross_entropy_backward(d.data(), logits.data(), row_max.data(), row_sumexp.data(), targets.data(),
                         &dloss, 0, 1, V);
  EXPECT_EQ(d[0], 0.5f);
  EXPECT_EQ(d[1], 0.0f);
  EXPECT_EQ(d[2], -1.0f);
  EXPECT_EQ(d[3], 0.5f);
}

TEST(CrossEntropy, TargetOutsideTheVocabularyIsAnError) {
  const std::vector<float> logits(2 * 3, 0.0f);
  const std::vector<int32_t> targets = {1, 3};
  std::vector<float> losses(2), row_max(2), row_sumexp(2);
  EXPECT_THROW(cross_entropy_forward(losses.data(), row_max.data(), row_sumexp.data(),
                                     logits.data(), targets.data(), 2, 3),
               Error);
}

}  // namespace
}  // namespace magix::cpu
