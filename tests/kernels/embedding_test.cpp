// Embedding forward/backward against a double reference and finite differences, and the
// vocab-parallel split: two shards summed equal one.
#include <gtest/gtest.h>

#include <cmath>

#include "backends/cpu/embedding.hpp"
#include "kernel_test_util.hpp"

namespace magix::cpu {
namespace {

using test::random_floats;

constexpr int64_t kVocab = 11, kC = 70, kN = 9;  // kC > 64: two column blocks in the backward
const std::vector<int32_t> kIds = {3, 0, 10, 3, 7, 3, 5, 10, 1};  // repeats on purpose

// out (N, C) = scale * table[ids - row_start] for ids in [row_start, row_start + rows), else 0.
std::vector<double> embedding_ref(const std::vector<double>& table, int64_t row_start, int64_t rows,
                                  double scale) {
  std::vector<double> out(kN * kC, 0.0);
  for (int64_t n = 0; n < kN; n++) {
    const int64_t row = kIds[n] - row_start;
    if (row < 0 || row >= rows) continue;
    for (int64_t c = 0; c < kC; c++) out[n * kC + c] = scale * table[row * kC + c];
  }
  return out;
}

TEST(Embedding, ForwardScalesRows) {
  auto table = random_floats(kVocab * kC, 1);
  // Gemma's normaliser in fp32, float(sqrt(hidden)), as HF casts it to the activation dtype.
  const float scale = static_cast<float>(std::sqrt(2048.0));
  std::vector<float> out(kN * kC);
  embedding_forward(out.data(), kIds.data(), table.data(), false, kN, kC, 0, kVocab, scale);
  for (int64_t n = 0; n < kN; n++) {
    for (int64_t c = 0; c < kC; c++) {
      // One fp32 multiply, exactly as torch's `embeds * normalizer`.
      ASSERT_EQ(out[n * kC + c], table[kIds[n] * kC + c] * scale);
    }
  }
  std::vector<float> plain(kN * kC);
  embedding_forward(plain.data(), kIds.data(), table.data(), false, kN, kC, 0, kVocab, 1.0f);
  test::expect_close(plain, embedding_ref(test::to_double(table), 0, kVocab, 1.0), 0.0, 0.0,
                     "unscaled");
}

TEST(Embedding, VocabShardsSumToTheFullResult) {
  auto table = random_floats(kVocab * kC, 2);
  auto dout = random_floats(kN * kC, 3);
  const float scale = 1.5f;
  std::vector<float> full(kN * kC), dfull(kVocab * kC, 0.0f);
  embedding_forward(full.data(), kIds.data(), table.data(), false, kN, kC, 0, kVocab, scale);
  embedding_backward(dfull.data(), dout.data(), kIds.data(), kN, kC, 0, kVocab, scale);

  // Shard 0 holds rows [0, 6), shard 1 rows [6, 11); the caller all-reduces (sums) the outputs.
  const int64_t split = 6;
  std::vector<float> out0(kN * kC), out1(kN * kC);
  embedding_forward(out0.data(), kIds.data(), table.data(), false, kN, kC, 0, split, scale);
  embedding_forward(out1.data(), kIds.data(), table.data() + split * kC, false, kN, kC, split,
                    kVocab - split, scale);
  for (int64_t i = 0; i < kN * kC; i++) {
    // Exactly one shard holds each id; the other contributes an exact 0.
    ASSERT_EQ(out0[i] + out1[i], full[i]) << i;
    ASSERT_TRUE(out0[i] == 0.0f || out1[i] == 0.0f) << i;
  }
  std::vector<float> d0(split * kC, 0.0f), d1((kVocab - split) * kC, 0.0f);
  embedding_backward(d0.data(), dout.data(), kIds.data(), kN, kC, 0, split, scale);
  embedding_backward(d1.data(), dout.data(), kIds.data(), kN, kC, split, kVocab - split, scale);
  for (int64_t i = 0; i < split * kC; i++) ASSERT_EQ(d0[i], dfull[i]);
  for (int64_t i = 0; i < (kVocab - split) * kC; i++) ASSERT_EQ(d1[i], dfull[split * kC + i]);
}

TEST(Embedding, BackwardMatchesFiniteDifferencesAndAccumulates) {
  auto table = random_floats(kVocab * kC, 4);
  auto dout = random_floats(kN * kC, 5);
  auto dtable = random_floats(kVocab * kC, 6);
  const auto dtable0 = dtable;
  const float scale = 0.5f;
  embedding_backward(dtable.data(), dout.data(), kIds.data(), kN, kC, 0, kVocab, scale);
  const auto w = test::to_double(dout);
  auto grad = test::numeric_grad(
      [&](const std::vector<double>& t) { return test::dot(w, embedding_ref(t, 0, kVocab, 0.5)); },
      test::to_double(table));
  for (size_t i = 0; i < grad.size(); i++) grad[i] += dtable0[i];
  // Id 3 appears three times: float sums of <= 4 terms of size <= 1.
  test::expect_close(dtable, grad, 0.0, 1e-6, "dtable");
}

TEST(Embedding, IdsOutsideTheShardGiveZeros) {
  auto table = random_floats(2 * 4, 7);
  const std::vector<int32_t> ids = {-1, 4, 5, 6, 7};
  std::vector<float> out(5 * 4, 9.0f);
  embedding_forward(out.data(), ids.data(), table.data(), false, 5, 4, 5, 2, 1.0f);
  for (int c = 0; c < 4; c++) {
    EXPECT_EQ(out[0 * 4 + c], 0.0f);
    EXPECT_EQ(out[1 * 4 + c], 0.0f);
    EXPECT_EQ(out[2 * 4 + c], table[c]);
    EXPECT_EQ(out[3 * 4 + c], table[4 + c]);
    EXPECT_EQ(out[4 * 4 + c], 0.0f);
  }
}

}  // namespace
}  // namespace magix::cpu
