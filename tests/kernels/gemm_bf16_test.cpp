// gemm_bf16 / gemm_bf16_out_bf16 against the double reference gemm_bf16_naive: all transposes,
// odd sizes, padded rows, beta 0 and 1, alpha != 1, bias; calls from inside an OpenMP parallel
// region; on AMX CPUs magix's AMX kernels directly (their tails of rows, columns and K chunks,
// and results independent of the split of rows, columns and threads); and, in child processes
// with oneDNN's ISA capped, the engines of CPUs without AMX (AVX512-BF16 only, AVX-512 only,
// AVX2) and oneDNN forced where it is not the default.
#include <gtest/gtest.h>
#include <omp.h>
#include <unistd.h>

#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/amx_gemm.hpp"
#include "backends/cpu/gemm_bf16.hpp"
#include "backends/cpu/onednn_matmul.hpp"
#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"

namespace magix::cpu {
namespace {

constexpr uint16_t kBf16NaN = 0x7fc0;

// Uniform values in [-1, 1] rounded to bf16.
std::vector<uint16_t> random_bf16(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<uint16_t> v(n);
  for (uint16_t& x : v) x = float_to_bf16(dist(rng));
  return v;
}

// A (rows, cols) matrix with leading dimension ld; the padding holds NaNs, so reading it would
// poison the result.
std::vector<uint16_t> padded_bf16(int64_t rows, int64_t cols, int64_t ld, uint32_t seed) {
  std::vector<uint16_t> m = random_bf16(rows * ld, seed);
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t c = cols; c < ld; c++) m[r * ld + c] = kBf16NaN;
  }
  return m;
}

struct Case {
  int64_t M, N, K;
  bool trans_a, trans_b;
  int64_t pad;  // added to every leading dimension; 0: dense operands
};

std::string describe(const Case& c) {
  return "M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) +
         (c.trans_a ? " T" : " N") + (c.trans_b ? "T" : "N") + " pad=" + std::to_string(c.pad);
}

std::vector<Case> cases() {
  const int64_t sizes[][3] = {{1, 1, 1},    {3, 1, 17},    {1, 33, 3},      {17, 33, 65},
                              {65, 17, 33}, {64, 130, 31}, {129, 67, 200},  {33, 65, 1},
                              {2, 300, 17}, {300, 2, 40},  {130, 272, 288}, {17, 48, 64}};
  std::vector<Case> out;
  for (const auto& s : sizes) {
    for (int t = 0; t < 4; t++) {
      for (int64_t pad : {0, 5}) out.push_back({s[0], s[1], s[2], (t & 1) != 0, (t & 2) != 0, pad});
    }
  }
  return out;
}

// sum_k |alpha a_ik b_kj| + |beta c_ij|: what the fp32 rounding errors are proportional to.
double magnitude(const Case& c, float alpha, const std::vector<uint16_t>& A, int64_t lda,
                 const std::vector<uint16_t>& B, int64_t ldb, int64_t i, int64_t j) {
  double sum = 0.0;
  for (int64_t k = 0; k < c.K; k++) {
    const uint16_t a = c.trans_a ? A[k * lda + i] : A[i * lda + k];
    const uint16_t b = c.trans_b ? B[j * ldb + k] : B[k * ldb + j];
    sum += std::fabs(static_cast<double>(alpha) * bf16_to_float(a) * bf16_to_float(b));
  }
  return sum;
}

// The products of two bf16 values are exact in fp32 (8 + 8 significant bits), so the only errors
// are the fp32 additions: at most gamma_K = K eps / (1 - K eps) times sum |a b| for any order of
// summation, plus one rounding each for alpha and for adding beta C. 2 (K + 2) eps covers that
// with margin (eps = 2^-24 = FLT_EPSILON / 2).
double fp32_tolerance(int64_t K, double magnitude) {
  return 2.0 * (K + 2) * FLT_EPSILON * magnitude + 1e-30;
}

void check_against_naive(float alpha, float beta) {
  uint32_t seed = 100;
  for (const Case& c : cases()) {
    const int64_t a_rows = c.trans_a ? c.K : c.M, a_cols = c.trans_a ? c.M : c.K;
    const int64_t b_rows = c.trans_b ? c.N : c.K, b_cols = c.trans_b ? c.K : c.N;
    const int64_t lda = a_cols + c.pad, ldb = b_cols + c.pad, ldc = c.N + c.pad;
    const auto A = padded_bf16(a_rows, a_cols, lda, seed++);
    const auto B = padded_bf16(b_rows, b_cols, ldb, seed++);
    std::vector<float> C0(c.M * ldc);
    std::mt19937 rng(seed++);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (float& x : C0) x = beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : dist(rng);
    std::vector<float> C = C0, ref = C0;
    gemm_bf16(c.trans_a, c.trans_b, c.M, c.N, c.K, alpha, A.data(), lda, B.data(), ldb, beta,
              C.data(), ldc);
    gemm_bf16_naive(c.trans_a, c.trans_b, c.M, c.N, c.K, alpha, A.data(), lda, B.data(), ldb, beta,
                    ref.data(), ldc);
    for (int64_t i = 0; i < c.M; i++) {
      for (int64_t j = 0; j < c.N; j++) {
        const double prior = beta == 0.0f ? 0.0 : std::fabs(C0[i * ldc + j]);
        const double tol = fp32_tolerance(c.K, magnitude(c, alpha, A, lda, B, ldb, i, j) + prior);
        ASSERT_NEAR(C[i * ldc + j], ref[i * ldc + j], tol)
            << describe(c) << " alpha=" << alpha << " beta=" << beta << " at (" << i << ", " << j
            << ")";
      }
      for (int64_t j = c.N; j < ldc; j++) {  // the padding of C is never written
        const float before = C0[i * ldc + j], after = C[i * ldc + j];
        ASSERT_TRUE(after == before || (std::isnan(after) && std::isnan(before))) << describe(c);
      }
    }
  }
}

TEST(GemmBf16Naive, TwoByTwoByHand) {
  const uint16_t A[] = {float_to_bf16(1), float_to_bf16(2), float_to_bf16(3), float_to_bf16(4)};
  const uint16_t B[] = {float_to_bf16(5), float_to_bf16(6), float_to_bf16(7), float_to_bf16(8)};
  float C[] = {1, 1, 1, 1};
  // C = 2 A·B + C; A·B = [[19, 22], [43, 50]]
  gemm_bf16_naive(false, false, 2, 2, 2, 2.0f, A, 2, B, 2, 1.0f, C, 2);
  EXPECT_EQ(C[0], 39.0f);
  EXPECT_EQ(C[1], 45.0f);
  EXPECT_EQ(C[2], 87.0f);
  EXPECT_EQ(C[3], 101.0f);
  // A^T·B^T = (B·A)^T = [[23, 31], [34, 46]]
  gemm_bf16_naive(true, true, 2, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2);
  EXPECT_EQ(C[0], 23.0f);
  EXPECT_EQ(C[1], 31.0f);
  EXPECT_EQ(C[2], 34.0f);
  EXPECT_EQ(C[3], 46.0f);
}

TEST(GemmBf16, BetaZeroOverwritesNaN) {
  check_against_naive(1.0f, 0.0f);
}
TEST(GemmBf16, BetaOneAccumulates) {
  check_against_naive(1.0f, 1.0f);
}
TEST(GemmBf16, AlphaScales) {
  check_against_naive(-0.375f, 1.0f);
  check_against_naive(0.125f, 0.0f);
}

// ulp of bf16 at |x| (normal range): 2^(exponent - 7).
double bf16_ulp(double x) {
  int exponent = 0;
  std::frexp(x, &exponent);  // x = f 2^exponent, f in [0.5, 1)
  return std::ldexp(1.0, exponent - 1 - 7);
}

// gemm_bf16_out_bf16 without bias, with bias, and with bias and alpha != 1: every entry within
// half a bf16 ulp (plus the fp32 tolerance) of the exact result.
void check_out_bf16_against_naive() {
  uint32_t seed = 500;
  for (const Case& c : cases()) {
    for (int variant = 0; variant < 3; variant++) {
      const bool with_bias = variant > 0;
      const float alpha = variant == 2 ? 0.75f : 1.0f;  // the bias is not scaled by alpha
      const int64_t a_rows = c.trans_a ? c.K : c.M, a_cols = c.trans_a ? c.M : c.K;
      const int64_t b_rows = c.trans_b ? c.N : c.K, b_cols = c.trans_b ? c.K : c.N;
      const int64_t lda = a_cols + c.pad, ldb = b_cols + c.pad, ldc = c.N + c.pad;
      const auto A = padded_bf16(a_rows, a_cols, lda, seed++);
      const auto B = padded_bf16(b_rows, b_cols, ldb, seed++);
      std::vector<float> bias(c.N);
      std::mt19937 rng(seed++);
      std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
      for (float& x : bias) x = dist(rng);
      std::vector<uint16_t> C(c.M * ldc, kBf16NaN);
      gemm_bf16_out_bf16(c.trans_a, c.trans_b, c.M, c.N, c.K, alpha, A.data(), lda, B.data(), ldb,
                         with_bias ? bias.data() : nullptr, C.data(), ldc);
      std::vector<float> exact(c.M * c.N);
      gemm_bf16_naive(c.trans_a, c.trans_b, c.M, c.N, c.K, alpha, A.data(), lda, B.data(), ldb,
                      0.0f, exact.data(), c.N);
      for (int64_t i = 0; i < c.M; i++) {
        for (int64_t j = 0; j < c.N; j++) {
          const double want = static_cast<double>(exact[i * c.N + j]) + (with_bias ? bias[j] : 0.0);
          const double got = bf16_to_float(C[i * ldc + j]);
          // One rounding to bf16 (half an ulp) of an fp32 result that is itself within the fp32
          // tolerance (plus one rounding for the bias) of the exact value.
          const double fp32_err =
              fp32_tolerance(c.K, magnitude(c, alpha, A, lda, B, ldb, i, j) + std::fabs(want));
          const double tol = 0.5 * bf16_ulp(std::fabs(want) + fp32_err) + fp32_err;
          ASSERT_NEAR(got, want, tol) << describe(c) << " bias=" << with_bias << " alpha=" << alpha
                                      << " at (" << i << ", " << j << ")";
        }
        for (int64_t j = c.N; j < ldc; j++) ASSERT_EQ(C[i * ldc + j], kBf16NaN) << describe(c);
      }
    }
  }
}

TEST(GemmBf16, OutBf16IsTheRoundedResultWithBias) {
  check_out_bf16_against_naive();
}

TEST(GemmBf16, DecoderShapesMatchNaiveOnSampledEntries) {
  // The three products of a linear layer (N rows 256, C 96, OC 160): forward out = inp·W^T,
  // dinp += dout·W, dW += dout^T·inp.
  const int64_t N = 256, C = 96, OC = 160;
  const auto inp = random_bf16(N * C, 1), W = random_bf16(OC * C, 2), dout = random_bf16(N * OC, 3);
  struct Product {
    bool ta, tb;
    int64_t M, Ncols, K;
    const std::vector<uint16_t>&a, &b;
    int64_t lda, ldb;
    float beta;
  };
  const Product products[] = {{false, true, N, OC, C, inp, W, C, C, 0.0f},
                              {false, false, N, C, OC, dout, W, OC, C, 1.0f},
                              {true, false, OC, C, N, dout, inp, OC, C, 1.0f}};
  for (const Product& p : products) {
    std::vector<float> out(p.M * p.Ncols, 0.5f), ref = out;
    gemm_bf16(p.ta, p.tb, p.M, p.Ncols, p.K, 1.0f, p.a.data(), p.lda, p.b.data(), p.ldb, p.beta,
              out.data(), p.Ncols);
    gemm_bf16_naive(p.ta, p.tb, p.M, p.Ncols, p.K, 1.0f, p.a.data(), p.lda, p.b.data(), p.ldb,
                    p.beta, ref.data(), p.Ncols);
    for (size_t i = 0; i < out.size(); i++) {
      // |a|, |b| <= 1: sum |a b| <= K.
      ASSERT_NEAR(out[i], ref[i], fp32_tolerance(p.K, p.K + 0.5)) << "product " << &p - products;
    }
  }
}

TEST(GemmBf16, DenormalsAreFlushedOnlyByOnednn) {
  // AMX and AVX512-BF16 dot products treat denormal inputs as zero and flush denormal sums; the
  // widened fp32 path (OpenBLAS, default MXCSR) keeps them. Pinned here so a change is noticed.
  const float tiny = std::ldexp(1.0f, -130);  // an fp32 and bf16 denormal
  const uint16_t A[2] = {float_to_bf16(std::ldexp(1.0f, -70)), float_to_bf16(tiny)};
  const uint16_t B[2] = {float_to_bf16(std::ldexp(1.0f, -60)), float_to_bf16(1.0f)};
  const bool flushes = gemm_bf16_engine_name().find("oneDNN") != std::string::npos;
  float C = -1.0f;
  gemm_bf16(false, false, 1, 1, 1, 1.0f, &A[0], 1, &B[0], 1, 0.0f, &C, 1);  // 2^-70 2^-60
  EXPECT_EQ(C, flushes ? 0.0f : tiny);
  gemm_bf16(false, false, 1, 1, 1, 1.0f, &A[1], 1, &B[1], 1, 0.0f, &C, 1);  // 2^-130 * 1
  EXPECT_EQ(C, flushes ? 0.0f : tiny);
  uint16_t Cb = 0xffff;
  gemm_bf16_out_bf16(false, false, 1, 1, 1, 1.0f, &A[0], 1, &B[0], 1, nullptr, &Cb, 1);
  EXPECT_EQ(bf16_to_float(Cb), flushes ? 0.0f : tiny);
}

TEST(GemmBf16, EmptyZeroKAndZeroAlpha) {
  float C[] = {1, 2, 3, 4};
  gemm_bf16(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 1.0f, C, 2);  // K = 0, beta 1
  EXPECT_EQ(C[0], 1.0f);
  EXPECT_EQ(C[3], 4.0f);
  gemm_bf16(false, false, 0, 2, 5, 1.0f, nullptr, 5, nullptr, 2, 0.0f, C, 2);  // M = 0
  EXPECT_EQ(C[0], 1.0f);
  const uint16_t A[4] = {}, B[4] = {};
  C[1] = std::numeric_limits<float>::quiet_NaN();
  gemm_bf16(false, false, 2, 2, 2, 0.0f, A, 2, B, 2, 0.0f, C, 2);  // alpha 0, beta 0: zeros
  for (float c : C) EXPECT_EQ(c, 0.0f);
  const float bias[2] = {1.5f, -2.0f};
  uint16_t Cb[4] = {};
  gemm_bf16_out_bf16(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, bias, Cb, 2);
  EXPECT_EQ(bf16_to_float(Cb[2]), 1.5f);
  EXPECT_EQ(bf16_to_float(Cb[3]), -2.0f);
}

TEST(GemmBf16, BadArgumentsAreErrors) {
  uint16_t A[6] = {}, B[6] = {};
  float C[4] = {};
  EXPECT_THROW(gemm_bf16(false, false, 2, 2, 3, 1.0f, A, 2, B, 2, 0.0f, C, 2), Error);  // lda
  EXPECT_THROW(gemm_bf16(false, false, 2, 2, 3, 1.0f, A, 3, B, 1, 0.0f, C, 2), Error);  // ldb
  EXPECT_THROW(gemm_bf16(false, false, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 1), Error);  // ldc
  EXPECT_THROW(gemm_bf16(false, false, 2, 2, 3, 1.0f, A, 3, B, 2, 0.5f, C, 2), Error);  // beta
  EXPECT_THROW(gemm_bf16(false, false, -1, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2), Error);
}

int threads_in_process() {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    (void)entry;
    count++;
  }
  return count;
}

TEST(GemmBf16, ConcurrentCallsInsideAParallelRegion) {
  // Each thread of the region multiplies its own operands of one shared shape, so they share a
  // cached primitive: created once outside the region (2 threads) and once inside (1 thread).
  const int64_t M = 96, N = 80, K = 112;
  constexpr int kThreads = 4;
  std::vector<std::vector<uint16_t>> As, Bs;
  std::vector<std::vector<float>> refs;
  for (int t = 0; t < kThreads; t++) {
    As.push_back(random_bf16(M * K, 900 + t));
    Bs.push_back(random_bf16(N * K, 950 + t));
    refs.emplace_back(M * N);
    gemm_bf16_naive(false, true, M, N, K, 1.0f, As[t].data(), K, Bs[t].data(), K, 0.0f,
                    refs[t].data(), N);
  }
  std::vector<float> outside(M * N);
  gemm_bf16(false, true, M, N, K, 1.0f, As[0].data(), K, Bs[0].data(), K, 0.0f, outside.data(), N);
  const int64_t cached = onednn_cached_primitives();
  std::vector<std::vector<float>> got(kThreads, std::vector<float>(M * N));
  for (int repeat = 0; repeat < 3; repeat++) {
#pragma omp parallel for num_threads(kThreads) schedule(static, 1)
    for (int t = 0; t < kThreads; t++) {
      gemm_bf16(false, true, M, N, K, 1.0f, As[t].data(), K, Bs[t].data(), K, 0.0f, got[t].data(),
                N);
    }
    for (int t = 0; t < kThreads; t++) {
      for (int64_t i = 0; i < M * N; i++) {
        ASSERT_NEAR(got[t][i], refs[t][i], fp32_tolerance(K, K)) << "thread " << t << " at " << i;
      }
    }
  }
  for (int64_t i = 0; i < M * N; i++) ASSERT_NEAR(outside[i], refs[0][i], fp32_tolerance(K, K));
  // oneDNN runs on libgomp's threads: no second pool, no threads beyond the region's team.
  EXPECT_LE(threads_in_process(), std::max(kThreads, omp_get_max_threads()));
  if (gemm_bf16_engine_name().find("oneDNN") != std::string::npos) {
    // One more primitive, for one thread, shared by every call inside the region (none if the
    // calls outside run on one thread too).
    EXPECT_EQ(onednn_cached_primitives(), cached + (omp_get_max_threads() > 1 ? 1 : 0));
  }
}

// --- magix's AMX kernels, called directly (CPUs with AMX-BF16 only). ---

#define MAGIX_NEEDS_AMX()                                                                  \
  if (!amx_gemm_available()) {                                                             \
    GTEST_SKIP() << "this CPU (or its OS) offers no AMX-BF16: the kernels never run here"; \
  }

TEST(AmxGemm, TakesOnlyWholeTiles) {
  const bool amx = amx_gemm_available();
  EXPECT_EQ(amx_gemm_takes(false, 1, 16, 32), amx);
  EXPECT_EQ(amx_gemm_takes(false, 300, 272, 288), amx);
  EXPECT_FALSE(amx_gemm_takes(true, 16, 16, 32));   // A transposed
  EXPECT_FALSE(amx_gemm_takes(false, 16, 24, 32));  // N not a multiple of 16
  EXPECT_FALSE(amx_gemm_takes(false, 16, 16, 48));  // K not a multiple of 32
  EXPECT_FALSE(amx_gemm_takes(false, 0, 16, 32));
}

// Every output against the double reference: rows below, at and past a tile (16), a pair of
// tiles (32) and a row chunk (128); columns of one tile, an odd number of tiles and past a panel
// (256); K of one tile, several, and past a K chunk (256); padded leading dimensions; alpha,
// accumulation, bias, bf16 output.
TEST(AmxGemm, MatchesNaive) {
  MAGIX_NEEDS_AMX();
  uint32_t seed = 7000;
  for (const int64_t M : {1, 16, 17, 33, 130, 300}) {
    for (const int64_t N : {16, 48, 272}) {
      for (const int64_t K : {32, 96, 288}) {
        for (const bool trans_b : {false, true}) {
          const int64_t pad = (M + N + K) % 3 == 0 ? 0 : 6;
          const int64_t lda = K + pad, ldb = (trans_b ? K : N) + pad, ldc = N + pad;
          const auto A = padded_bf16(M, K, lda, seed++);
          const auto B = padded_bf16(trans_b ? N : K, trans_b ? K : N, ldb, seed++);
          const Case c{M, N, K, false, trans_b, pad};
          std::vector<float> bias(N);
          std::mt19937 rng(seed++);
          std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
          for (float& x : bias) x = dist(rng);
          std::vector<float> C0(M * ldc);
          for (float& x : C0) x = dist(rng);
          for (int variant = 0; variant < 3; variant++) {
            // 0: C = A·op(B); 1: C += -0.375 A·op(B); 2: bf16 C = bf16(0.75 A·op(B) + bias)
            const float alpha = variant == 0 ? 1.0f : variant == 1 ? -0.375f : 0.75f;
            std::vector<float> exact(M * N);
            gemm_bf16_naive(false, trans_b, M, N, K, alpha, A.data(), lda, B.data(), ldb, 0.0f,
                            exact.data(), N);
            std::vector<float> C = C0;
            std::vector<uint16_t> Cb(M * ldc, kBf16NaN);
            if (variant < 2) {
              amx_gemm_bf16(trans_b, M, N, K, alpha, A.data(), lda, B.data(), ldb, nullptr,
                            variant == 1, C.data(), ldc, false);
            } else {
              amx_gemm_bf16(trans_b, M, N, K, alpha, A.data(), lda, B.data(), ldb, bias.data(),
                            false, Cb.data(), ldc, true);
            }
            for (int64_t i = 0; i < M; i++) {
              for (int64_t j = 0; j < N; j++) {
                const double mag = magnitude(c, alpha, A, lda, B, ldb, i, j);
                if (variant < 2) {
                  const double prior = variant == 1 ? C0[i * ldc + j] : 0.0;
                  const double tol = fp32_tolerance(K, mag + std::fabs(prior));
                  ASSERT_NEAR(C[i * ldc + j], exact[i * N + j] + prior, tol)
                      << describe(c) << " variant " << variant << " at (" << i << ", " << j << ")";
                } else {
                  const double want = static_cast<double>(exact[i * N + j]) + bias[j];
                  const double fp32_err = fp32_tolerance(K, mag + std::fabs(want));
                  ASSERT_NEAR(bf16_to_float(Cb[i * ldc + j]), want,
                              0.5 * bf16_ulp(std::fabs(want) + fp32_err) + fp32_err)
                      << describe(c) << " bf16 at (" << i << ", " << j << ")";
                }
              }
              for (int64_t j = N; j < ldc; j++) {  // the padding of C is never written
                ASSERT_EQ(C[i * ldc + j], C0[i * ldc + j]) << describe(c);
                ASSERT_EQ(Cb[i * ldc + j], kBf16NaN) << describe(c);
              }
            }
          }
        }
      }
    }
  }
}

// Each output is the same fp32 sum whatever rows and columns are computed with it and however
// many threads share the work: what makes a product split between tensor-parallel ranks (a slice
// of the weight's rows or columns) or data-parallel ranks (a slice of the rows) give the bits of
// the whole.
TEST(AmxGemm, ResultsDoNotDependOnTheSplit) {
  MAGIX_NEEDS_AMX();
  const int64_t M = 150, N = 320, K = 544;
  const auto A = random_bf16(M * K, 71);
  for (const bool trans_b : {false, true}) {
    const auto B = random_bf16(N * K, trans_b ? 72 : 73);
    const int64_t ldb = trans_b ? K : N;
    std::vector<float> whole(M * N);
    amx_gemm_bf16(trans_b, M, N, K, 1.0f, A.data(), K, B.data(), ldb, nullptr, false, whole.data(),
                  N, false);
    // Rows 37 .. 37 + 64 and columns 48 .. 48 + 112 alone, on one thread.
    const int64_t m0 = 37, rows = 64, n0 = 48, cols = 112;
    const uint16_t* b_part = trans_b ? B.data() + n0 * ldb : B.data() + n0;
    std::vector<float> part(rows * cols);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    amx_gemm_bf16(trans_b, rows, cols, K, 1.0f, A.data() + m0 * K, K, b_part, ldb, nullptr, false,
                  part.data(), cols, false);
    omp_set_num_threads(saved);
    for (int64_t i = 0; i < rows; i++) {
      for (int64_t j = 0; j < cols; j++) {
        ASSERT_EQ(part[i * cols + j], whole[(m0 + i) * N + n0 + j])
            << "trans_b " << trans_b << " at (" << i << ", " << j << ")";
      }
    }
  }
}

// gemm_bf16 hands a product of few rows against a large weight (B of 2^20 values) to the AMX
// kernels: the same bits as calling them, and the double reference's values.
TEST(AmxGemm, GemmBf16RoutesLargeWeightProductsToThem) {
  MAGIX_NEEDS_AMX();
  if (gemm_bf16_engine_name().rfind("magix AMX", 0) != 0) {
    GTEST_SKIP() << "the engine is forced by the environment: " << gemm_bf16_engine_name();
  }
  const int64_t M = 40, N = 1024, K = 1024;
  const auto A = random_bf16(M * K, 81);
  for (const bool trans_b : {false, true}) {
    const auto B = random_bf16(N * K, trans_b ? 82 : 83);
    const int64_t ldb = trans_b ? K : N;
    std::vector<float> routed(M * N, 0.25f), direct = routed, ref = routed;
    gemm_bf16(false, trans_b, M, N, K, 1.0f, A.data(), K, B.data(), ldb, 1.0f, routed.data(), N);
    amx_gemm_bf16(trans_b, M, N, K, 1.0f, A.data(), K, B.data(), ldb, nullptr, true, direct.data(),
                  N, false);
    gemm_bf16_naive(false, trans_b, M, N, K, 1.0f, A.data(), K, B.data(), ldb, 1.0f, ref.data(), N);
    for (int64_t i = 0; i < M * N; i++) {
      ASSERT_EQ(routed[i], direct[i]) << "trans_b " << trans_b << " at " << i;
      ASSERT_NEAR(routed[i], ref[i], fp32_tolerance(K, K + 0.25)) << "trans_b " << trans_b;
    }
  }
}

// Calls from the threads of a parallel region (each configures its own tiles and runs on its own
// thread, with its own scratch) give each thread's product.
TEST(AmxGemm, ConcurrentCallsInsideAParallelRegion) {
  MAGIX_NEEDS_AMX();
  const int64_t M = 33, N = 96, K = 320;
  constexpr int kThreads = 4;
  std::vector<std::vector<uint16_t>> As, Bs;
  std::vector<std::vector<float>> refs;
  for (int t = 0; t < kThreads; t++) {
    As.push_back(random_bf16(M * K, 1200 + t));
    Bs.push_back(random_bf16(N * K, 1300 + t));
    refs.emplace_back(M * N);
    gemm_bf16_naive(false, t % 2 == 0, M, N, K, 1.0f, As[t].data(), K, Bs[t].data(),
                    t % 2 == 0 ? K : N, 0.0f, refs[t].data(), N);
  }
  std::vector<std::vector<float>> got(kThreads, std::vector<float>(M * N));
  for (int repeat = 0; repeat < 3; repeat++) {
#pragma omp parallel for num_threads(kThreads) schedule(static, 1)
    for (int t = 0; t < kThreads; t++) {
      amx_gemm_bf16(t % 2 == 0, M, N, K, 1.0f, As[t].data(), K, Bs[t].data(), t % 2 == 0 ? K : N,
                    nullptr, false, got[t].data(), N, false);
    }
    for (int t = 0; t < kThreads; t++) {
      for (int64_t i = 0; i < M * N; i++) {
        ASSERT_NEAR(got[t][i], refs[t][i], fp32_tolerance(K, K)) << "thread " << t << " at " << i;
      }
    }
  }
}

TEST(AmxGemm, ProductsItDoesNotTakeAreErrors) {
  MAGIX_NEEDS_AMX();
  const std::vector<uint16_t> A(16 * 48), B(48 * 24);
  std::vector<float> C(16 * 24);
  EXPECT_THROW(amx_gemm_bf16(false, 16, 24, 48, 1.0f, A.data(), 48, B.data(), 24, nullptr, false,
                             C.data(), 24, false),
               Error);
}

// Which engine a CPU like this one gets: magix's AMX kernels beside oneDNN's matmul with AMX
// where the CPU (and the OS) allow it, else bf16 widened to fp32 for OpenBLAS.
std::string expected_engine() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("amx-bf16") && __builtin_cpu_supports("amx-tile")) {
    return "magix AMX kernels";
  }
  return "widened to fp32, OpenBLAS";
}

TEST(GemmBf16, EngineNameReportsTheIsa) {
  if (std::getenv("ONEDNN_MAX_CPU_ISA") != nullptr || std::getenv("DNNL_MAX_CPU_ISA") != nullptr ||
      std::getenv("MAGIX_GEMM_BF16_ENGINE") != nullptr) {
    GTEST_SKIP() << "the engine is capped or forced by the environment";
  }
  const std::string name = gemm_bf16_engine_name();
  std::printf("bf16 gemm engine: %s\n", name.c_str());
  EXPECT_NE(name.find(expected_engine()), std::string::npos)
      << name << "; expected " << expected_engine()
      << " (on an AMX CPU a lower ISA means the kernel refused AMX to this process)";
}

// --- Other CPUs' engines, in child processes (oneDNN reads ONEDNN_MAX_CPU_ISA once). ---

std::string self_path() {
  char buf[4096];
  const ssize_t len = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (len <= 0) return "";
  buf[len] = '\0';
  return buf;
}

// Runs this binary's GemmBf16Child.<test> with `env`; checks that it ran and passed.
void run_child(const std::string& env, const std::string& test) {
  const std::string exe = self_path();
  ASSERT_FALSE(exe.empty());
  const std::string command =
      "env -u ONEDNN_MAX_CPU_ISA -u DNNL_MAX_CPU_ISA -u MAGIX_GEMM_BF16_ENGINE " + env +
      " MAGIX_TEST_CHILD=1 '" + exe + "' --gtest_filter=GemmBf16Child." + test + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char line[1024];
  while (std::fgets(line, sizeof(line), pipe)) output += line;
  const int status = pclose(pipe);
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find("[       OK ] GemmBf16Child." + test), std::string::npos) << output;
  EXPECT_EQ(output.find("[  SKIPPED ]"), std::string::npos) << output;
}

TEST(GemmBf16Engine, Avx512Bf16WithoutAmxWidensToFp32) {
  // What an AMD EPYC with AVX512-BF16 (no AMX) gets.
  run_child("ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 MAGIX_TEST_EXPECT=widened", "MatchesNaive");
}

TEST(GemmBf16Engine, Avx512WithoutBf16WidensToFp32) {
  run_child("ONEDNN_MAX_CPU_ISA=AVX512_CORE MAGIX_TEST_EXPECT=widened", "MatchesNaive");
}

TEST(GemmBf16Engine, Avx2WidensToFp32WithHaswellKernels) {
  run_child("ONEDNN_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell MAGIX_TEST_EXPECT=Haswell",
            "MatchesNaive");
}

TEST(GemmBf16Engine, ForcedOnednnOnAvx512Bf16) {
  // oneDNN's AVX512-BF16 kernels (MAGIX_GEMM_BF16_ENGINE=onednn on a CPU without AMX).
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512bf16")) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  run_child(
      "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 MAGIX_GEMM_BF16_ENGINE=onednn "
      "MAGIX_TEST_EXPECT=avx512_core_bf16",
      "MatchesNaiveScaledAndAccumulated");
}

TEST(GemmBf16Engine, ForcedOnednnEmulationOnAvx512) {
  // oneDNN's own bf16 emulation (slow, never chosen by default) is still correct.
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) GTEST_SKIP() << "this CPU has no AVX-512";
  run_child("ONEDNN_MAX_CPU_ISA=AVX512_CORE MAGIX_GEMM_BF16_ENGINE=onednn MAGIX_TEST_EXPECT=oneDNN",
            "MatchesNaiveScaledAndAccumulated");
}

TEST(GemmBf16Engine, ForcedOnednnOnAmxLeavesMagixKernelsOut) {
  // MAGIX_GEMM_BF16_ENGINE=onednn on an AMX CPU: oneDNN's matmul for every product.
  if (!amx_gemm_available()) GTEST_SKIP() << "this CPU (or its OS) offers no AMX-BF16";
  run_child("MAGIX_GEMM_BF16_ENGINE=onednn MAGIX_TEST_EXPECT=oneDNN", "OnlyOnednnMatchesNaive");
}

TEST(GemmBf16Engine, ForcedOnednnOnAvx2IsAClearError) {
  run_child("ONEDNN_MAX_CPU_ISA=AVX2 MAGIX_GEMM_BF16_ENGINE=onednn", "OnednnRefuses");
}

#define MAGIX_ONLY_IN_CHILD()                                                     \
  if (std::getenv("MAGIX_TEST_CHILD") == nullptr) {                               \
    GTEST_SKIP() << "runs only in the child process started by GemmBf16Engine.*"; \
  }

TEST(GemmBf16Child, MatchesNaive) {
  MAGIX_ONLY_IN_CHILD();
  const std::string name = gemm_bf16_engine_name();
  std::printf("bf16 gemm engine: %s\n", name.c_str());
  EXPECT_NE(name.find(std::getenv("MAGIX_TEST_EXPECT")), std::string::npos) << name;
  check_against_naive(1.0f, 0.0f);
  check_against_naive(0.5f, 1.0f);
  check_out_bf16_against_naive();
}

TEST(GemmBf16Child, MatchesNaiveScaledAndAccumulated) {
  MAGIX_ONLY_IN_CHILD();
  const std::string name = gemm_bf16_engine_name();
  std::printf("bf16 gemm engine: %s\n", name.c_str());
  EXPECT_NE(name.find(std::getenv("MAGIX_TEST_EXPECT")), std::string::npos) << name;
  check_against_naive(0.5f, 1.0f);
}

TEST(GemmBf16Child, OnlyOnednnMatchesNaive) {
  MAGIX_ONLY_IN_CHILD();
  const std::string name = gemm_bf16_engine_name();
  std::printf("bf16 gemm engine: %s\n", name.c_str());
  EXPECT_EQ(name.rfind(std::getenv("MAGIX_TEST_EXPECT"), 0), 0u) << name;
  EXPECT_EQ(name.find("magix AMX"), std::string::npos) << name;
  check_against_naive(0.5f, 1.0f);
}

TEST(GemmBf16Child, OnednnRefuses) {
  MAGIX_ONLY_IN_CHILD();
  const uint16_t A[4] = {}, B[4] = {};
  float C[4] = {};
  try {
    gemm_bf16(false, false, 2, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2);
    ADD_FAILURE() << "oneDNN ran a bf16 matmul capped at AVX2";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("oneDNN matmul"), std::string::npos) << what;
    EXPECT_NE(what.find("avx2"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace magix::cpu
