// The next-token rule against HF's logits processors written out by hand, and the empirical
// distribution of its draws against the softmax it samples from.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "magix/generate.hpp"

namespace magix {
namespace {

TEST(Sampling, RepetitionPenaltyAsTransformers) {
  // HF: score < 0 -> score * penalty, else score / penalty; each previous id once.
  std::vector<float> logits = {2.0f, -2.0f, 1.5f, 0.5f};
  SamplingOptions o;
  o.repetition_penalty = 2.0f;
  EXPECT_EQ(choose_token(logits, {0, 1, 1, 0}, o, 0, 0), 2);  // 1.5 is now the largest
  EXPECT_EQ(logits, (std::vector<float>{1.0f, -4.0f, 1.5f, 0.5f}));
  logits = {2.0f, -2.0f, 1.0f, 0.5f};
  o.repetition_penalty = 1.0f;
  EXPECT_EQ(choose_token(logits, {0, 1}, o, 0, 0), 0);
}

TEST(Sampling, GreedyTakesTheFirstMaximum) {
  std::vector<float> logits = {0.0f, 3.0f, 3.0f, -1.0f};
  EXPECT_EQ(choose_token(logits, {}, SamplingOptions{}, 0, 0), 1);
}

TEST(Sampling, UniformIsACounterBasedFunction) {
  EXPECT_EQ(sampling_uniform(1, 2, 3), sampling_uniform(1, 2, 3));
  std::set<double> seen;
  for (uint64_t seed : {0, 1}) {
    for (int64_t p = 0; p < 10; ++p) {
      for (int64_t t = 0; t < 10; ++t) {
        const double u = sampling_uniform(seed, p, t);
        EXPECT_GE(u, 0.0);
        EXPECT_LT(u, 1.0);
        seen.insert(u);
      }
    }
  }
  EXPECT_EQ(seen.size(), 200u);  // no two keys share a draw
  // Mean and variance of many draws: those of U(0, 1) within 4 standard errors.
  const int n = 100000;
  double sum = 0, sq = 0;
  for (int i = 0; i < n; ++i) {
    const double u = sampling_uniform(42, i % 317, i / 317);
    sum += u;
    sq += u * u;
  }
  EXPECT_NEAR(sum / n, 0.5, 4 * std::sqrt(1.0 / 12 / n));
  EXPECT_NEAR(sq / n - (sum / n) * (sum / n), 1.0 / 12, 0.002);
}

// Draws for token indices 0..n-1 of one prompt -> frequency per id.
std::map<int32_t, double> frequencies(const std::vector<float>& logits, const SamplingOptions& o,
                                      int n) {
  std::map<int32_t, double> f;
  for (int t = 0; t < n; ++t) {
    std::vector<float> l = logits;
    f[choose_token(l, {}, o, 3, t)] += 1.0 / n;
  }
  return f;
}

// softmax(logits / temperature) over `keep` (the other ids get 0).
std::vector<double> expected(const std::vector<float>& logits, float temperature,
                             const std::set<int32_t>& keep) {
  std::vector<double> p(logits.size(), 0.0);
  double sum = 0;
  for (int32_t i : keep) sum += p[i] = std::exp(double(logits[i]) / temperature);
  for (double& v : p) v /= sum;
  return p;
}

void expect_distribution(const std::map<int32_t, double>& got, const std::vector<double>& want,
                         int n) {
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = got.count(int32_t(i)) ? got.at(int32_t(i)) : 0.0;
    if (want[i] == 0) {
      EXPECT_EQ(g, 0.0) << "id " << i << " is outside the kept set but was sampled";
    } else {  // 5 binomial standard errors
      EXPECT_NEAR(g, want[i], 5 * std::sqrt(want[i] * (1 - want[i]) / n) + 1e-9) << "id " << i;
    }
  }
}

const std::vector<float> kLogits = {1.0f, 2.5f, 0.3f, 2.0f, -1.0f, 1.7f, 0.9f, 2.2f};

TEST(Sampling, TemperatureDistribution) {
  SamplingOptions o;
  o.sample = true;
  o.temperature = 0.7f;
  const int n = 40000;
  expect_distribution(frequencies(kLogits, o, n), expected(kLogits, 0.7f, {0, 1, 2, 3, 4, 5, 6, 7}),
                      n);
}

TEST(Sampling, TopKNeverLeavesTheTopK) {
  SamplingOptions o;
  o.sample = true;
  o.temperature = 1.3f;
  o.top_k = 3;  // ids 1 (2.5), 7 (2.2), 3 (2.0)
  const int n = 40000;
  expect_distribution(frequencies(kLogits, o, n), expected(kLogits, 1.3f, {1, 7, 3}), n);
}

TEST(Sampling, TopPKeepsTheSmallestNucleusAsTransformers) {
  // probabilities 0.5, 0.3, 0.15, 0.05: HF sorts ascending (0.05, 0.15, 0.3, 0.5), cumulates
  // (0.05, 0.2, 0.5, 1.0) and removes cumulative <= 1 - top_p = 0.3: ids 3 and 2 go.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                                     std::log(0.05f)};
  SamplingOptions o;
  o.sample = true;
  o.temperature = 1.0f;
  o.top_p = 0.7f;
  const int n = 40000;
  expect_distribution(frequencies(logits, o, n), expected(logits, 1.0f, {0, 1}), n);
  // top_p = 0.4: 1 - 0.4 = 0.6 removes everything but id 0.
  o.top_p = 0.4f;
  expect_distribution(frequencies(logits, o, 200), {1, 0, 0, 0}, 200);
}

TEST(Sampling, TopKThenTopP) {
  // HF order: temperature, top-k, top-p. top_k = 3 leaves (2.5, 2.2, 2.0); at temperature 1 their
  // renormalised probabilities are about (0.43, 0.32, 0.26): top_p = 0.5 then drops id 3.
  SamplingOptions o;
  o.sample = true;
  o.temperature = 1.0f;
  o.top_k = 3;
  o.top_p = 0.5f;
  const int n = 40000;
  expect_distribution(frequencies(kLogits, o, n), expected(kLogits, 1.0f, {1, 7}), n);
}

}  // namespace
}  // namespace magix
