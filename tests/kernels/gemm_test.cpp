// gemm (the BLAS path) against gemm_naive; matmul forward/backward against double references and
// finite differences; the engine in child processes with a forced non-AVX-512 core type.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include "backends/cpu/blas_library.hpp"
#include "backends/cpu/gemm.hpp"
#include "backends/cpu/matmul.hpp"
#include "backends/cpu/onednn_matmul.hpp"
#include "kernel_test_util.hpp"
#include "magix/error.hpp"

namespace magix::cpu {
namespace {

using test::random_floats;

TEST(GemmNaive, TwoByTwoByHand) {
  const float A[] = {1, 2, 3, 4}, B[] = {5, 6, 7, 8};
  float C[] = {1, 1, 1, 1};
  // C = 2 A·B + 0.5 C; A·B = [[19, 22], [43, 50]]
  gemm_naive(false, false, 2, 2, 2, 2.0f, A, 2, B, 2, 0.5f, C, 2);
  EXPECT_EQ(C[0], 38.5f);
  EXPECT_EQ(C[1], 44.5f);
  EXPECT_EQ(C[2], 86.5f);
  EXPECT_EQ(C[3], 100.5f);
  // A^T·B^T = (B·A)^T = [[23, 31], [34, 46]]
  gemm_naive(true, true, 2, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2);
  EXPECT_EQ(C[0], 23.0f);
  EXPECT_EQ(C[1], 31.0f);
  EXPECT_EQ(C[2], 34.0f);
  EXPECT_EQ(C[3], 46.0f);
}

// Runs gemm and gemm_naive on the same inputs (all transposes, odd sizes, padded leading
// dimensions) and checks |c - ref| <= 2 K eps (|alpha| sum_k |a||b| + |beta c|) + tiny, the
// standard worst-case bound for a float dot product of length K (gamma_K with margin).
void check_gemm_against_naive(float beta_value) {
  const int64_t sizes[][3] = {{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {64, 130, 31}, {129, 67, 200}};
  uint32_t seed = 1;
  for (const auto& s : sizes) {
    const int64_t M = s[0], N = s[1], K = s[2];
    for (int ta = 0; ta < 2; ta++) {
      for (int tb = 0; tb < 2; tb++) {
        const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K;
        const int64_t b_rows = tb ? N : K, b_cols = tb ? K : N;
        const int64_t lda = a_cols + 3, ldb = b_cols + 5, ldc = N + 2;
        auto A = random_floats(a_rows * lda, seed++);
        auto B = random_floats(b_rows * ldb, seed++);
        auto C0 = random_floats(M * ldc, seed++);
        if (beta_value == 0.0f) {
          // beta = 0 overwrites C: NaNs already there must not leak into the result.
          std::fill(C0.begin(), C0.end(), std::numeric_limits<float>::quiet_NaN());
        }
        auto C = C0, ref = C0;
        const float alpha = 0.75f;
        gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta_value, C.data(), ldc);
        gemm_naive(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta_value, ref.data(),
                   ldc);
        for (int64_t i = 0; i < M; i++) {
          for (int64_t j = 0; j < N; j++) {
            double bound = beta_value == 0.0f ? 0.0 : std::fabs(beta_value * C0[i * ldc + j]);
            for (int64_t k = 0; k < K; k++) {
              const float a = ta ? A[k * lda + i] : A[i * lda + k];
              const float b = tb ? B[j * ldb + k] : B[k * ldb + j];
              bound += std::fabs(alpha * a * b);
            }
            const double tol = 2.0 * (K + 2) * FLT_EPSILON * bound + 1e-30;
            ASSERT_NEAR(C[i * ldc + j], ref[i * ldc + j], tol)
                << "M=" << M << " N=" << N << " K=" << K << " ta=" << ta << " tb=" << tb << " at ("
                << i << ", " << j << ")";
          }
          // The padding between rows of C is never written.
          for (int64_t j = N; j < ldc; j++) {
            const float before = C0[i * ldc + j], after = C[i * ldc + j];
            ASSERT_TRUE(after == before || (std::isnan(after) && std::isnan(before)));
          }
        }
      }
    }
  }
}

TEST(Gemm, MatchesNaiveAllTransposesOddSizesPaddedRows) {
  check_gemm_against_naive(0.5f);
}
TEST(Gemm, BetaZeroOverwritesNaN) {
  check_gemm_against_naive(0.0f);
}

TEST(Gemm, EmptyAndZeroK) {
  float C[] = {1, 2, 3, 4};
  // K = 0: C = beta * C.
  gemm(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 3.0f, C, 2);
  EXPECT_EQ(C[0], 3.0f);
  EXPECT_EQ(C[3], 12.0f);
  gemm(false, false, 0, 2, 5, 1.0f, nullptr, 5, nullptr, 2, 0.0f, C, 2);  // M = 0: nothing
  EXPECT_EQ(C[0], 3.0f);
}

TEST(Gemm, BadLeadingDimensionIsAnError) {
  float A[6] = {}, B[6] = {}, C[4] = {};
  EXPECT_THROW(gemm(false, false, 2, 2, 3, 1.0f, A, 2, B, 2, 0.0f, C, 2), Error);  // lda < K
  EXPECT_THROW(gemm(false, false, 2, 2, 3, 1.0f, A, 3, B, 1, 0.0f, C, 2), Error);  // ldb < N
  EXPECT_THROW(gemm(false, false, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 1), Error);  // ldc < N
}

TEST(Gemm, BackendNameNamesTheLibrary) {
  const std::string name = gemm_backend_name();
  EXPECT_FALSE(name.empty());
  std::printf("gemm engine: %s (%s)\n", name.c_str(), blas_library().path.c_str());
}

// --- The engine in a fresh process (OpenBLAS reads OPENBLAS_CORETYPE only when loaded). ---

std::string self_path() {
  char buf[4096];
  const ssize_t len = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (len <= 0) return "";
  buf[len] = '\0';
  return buf;
}

// Runs this binary's GemmChild.<test> with the given environment prefix; returns its output
// and checks it ran (not skipped) and passed.
void run_child(const std::string& env, const std::string& test) {
  const std::string exe = self_path();
  ASSERT_FALSE(exe.empty());
  const std::string command = "env -u OPENBLAS_CORETYPE -u MAGIX_BLAS_LIBRARY " + env +
                              " MAGIX_TEST_CHILD=1 '" + exe + "' --gtest_filter=GemmChild." + test +
                              " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char line[1024];
  while (std::fgets(line, sizeof(line), pipe)) output += line;
  const int status = pclose(pipe);
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find("[       OK ] GemmChild." + test), std::string::npos) << output;
}

TEST(GemmEngine, ForcedHaswellCoreIsCorrect) {
  // The AVX2 kernels OpenBLAS uses on CPUs without AVX-512.
  run_child("OPENBLAS_CORETYPE=Haswell MAGIX_TEST_EXPECT_CORE=Haswell", "MatchesNaive");
}

TEST(GemmEngine, DefaultCoreIsCorrect) {
  run_child(
      std::string("MAGIX_TEST_EXPECT_CORE=") + (cpu_has_avx512() ? blas_avx512_coretype() : "-"),
      "MatchesNaive");
}

TEST(GemmEngine, MissingLibraryIsAClearError) {
  run_child("MAGIX_BLAS_LIBRARY=/nonexistent/libnoblas.so", "MissingLibrary");
}

#define MAGIX_ONLY_IN_CHILD()                                                 \
  if (std::getenv("MAGIX_TEST_CHILD") == nullptr) {                           \
    GTEST_SKIP() << "runs only in the child process started by GemmEngine.*"; \
  }

TEST(GemmChild, MatchesNaive) {
  MAGIX_ONLY_IN_CHILD();
  const std::string name = gemm_backend_name();
  const std::string core = std::getenv("MAGIX_TEST_EXPECT_CORE");
  if (core != "-") {
    EXPECT_NE(name.find("(" + core), std::string::npos) << name;
  }
  // magix sets OPENBLAS_CORETYPE only while loading the library.
  EXPECT_EQ(std::getenv("OPENBLAS_CORETYPE") == nullptr, core != "Haswell");
  check_gemm_against_naive(0.5f);
}

TEST(GemmChild, MissingLibrary) {
  MAGIX_ONLY_IN_CHILD();
  float A[1] = {1}, B[1] = {1}, C[1] = {0};
  try {
    gemm(false, false, 1, 1, 1, 1.0f, A, 1, B, 1, 0.0f, C, 1);
    ADD_FAILURE() << "gemm ran without a BLAS library";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("/nonexistent/libnoblas.so"), std::string::npos) << what;
    EXPECT_NE(what.find("MAGIX_BLAS_LIBRARY"), std::string::npos) << what;
  }
}

// --- matmul ---

// out (N, OC) = inp (N, C) · weight (OC, C)^T + bias, in double.
std::vector<double> matmul_ref(const std::vector<double>& inp, const std::vector<double>& weight,
                               const std::vector<double>& bias, int64_t N, int64_t C, int64_t OC) {
  std::vector<double> out(N * OC);
  for (int64_t n = 0; n < N; n++) {
    for (int64_t o = 0; o < OC; o++) {
      double acc = bias.empty() ? 0.0 : bias[o];
      for (int64_t c = 0; c < C; c++) acc += inp[n * C + c] * weight[o * C + c];
      out[n * OC + o] = acc;
    }
  }
  return out;
}

TEST(Matmul, ForwardMatchesReference) {
  const int64_t N = 37, C = 29, OC = 43;
  auto inp = random_floats(N * C, 11), weight = random_floats(OC * C, 12);
  auto bias = random_floats(OC, 13);
  std::vector<float> out(N * OC), out_nobias(N * OC);
  matmul_forward(out.data(), inp.data(), weight.data(), bias.data(), N, C, OC);
  matmul_forward(out_nobias.data(), inp.data(), weight.data(), nullptr, N, C, OC);
  // |inputs| <= 1: the error of a float dot product of length C is <= C eps sum|a b| <= C^2 eps.
  const double tol = 2.0 * C * C * FLT_EPSILON;
  test::expect_close(
      out,
      matmul_ref(test::to_double(inp), test::to_double(weight), test::to_double(bias), N, C, OC),
      0.0, tol, "out");
  test::expect_close(out_nobias,
                     matmul_ref(test::to_double(inp), test::to_double(weight), {}, N, C, OC), 0.0,
                     tol, "out without bias");
}

TEST(Matmul, BackwardMatchesFiniteDifferencesAndAccumulates) {
  const int64_t N = 5, C = 7, OC = 6;
  auto inp = random_floats(N * C, 21), weight = random_floats(OC * C, 22);
  auto bias = random_floats(OC, 23), dout = random_floats(N * OC, 24);
  // Gradients start non-zero: the backward pass must add to them.
  auto dinp = random_floats(N * C, 25), dweight = random_floats(OC * C, 26);
  auto dbias = random_floats(OC, 27);
  const auto dinp0 = dinp, dweight0 = dweight, dbias0 = dbias;
  matmul_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(), weight.data(),
                  N, C, OC);

  const auto w = test::to_double(dout);
  auto x = test::to_double(inp), W = test::to_double(weight), b = test::to_double(bias);
  auto g_inp = test::numeric_grad(
      [&](const std::vector<double>& v) { return test::dot(w, matmul_ref(v, W, b, N, C, OC)); }, x);
  auto g_w = test::numeric_grad(
      [&](const std::vector<double>& v) { return test::dot(w, matmul_ref(x, v, b, N, C, OC)); }, W);
  auto g_b = test::numeric_grad(
      [&](const std::vector<double>& v) { return test::dot(w, matmul_ref(x, W, v, N, C, OC)); }, b);
  for (size_t i = 0; i < g_inp.size(); i++) g_inp[i] += dinp0[i];
  for (size_t i = 0; i < g_w.size(); i++) g_w[i] += dweight0[i];
  for (size_t i = 0; i < g_b.size(); i++) g_b[i] += dbias0[i];
  // Float sums of <= 6 terms of size <= 1, plus the prior value: 1e-5 absolute is ~40 ulp.
  test::expect_close(dinp, g_inp, 0.0, 1e-5, "dinp");
  test::expect_close(dweight, g_w, 0.0, 1e-5, "dweight");
  test::expect_close(dbias, g_b, 0.0, 1e-5, "dbias");

  // Null gradients are skipped.
  auto dinp_only = dinp0;
  matmul_backward(dinp_only.data(), nullptr, nullptr, dout.data(), inp.data(), weight.data(), N, C,
                  OC);
  test::expect_close(dinp_only, g_inp, 0.0, 1e-5, "dinp alone");
}

// The skinny products of LoRA adapters (rank 8: u = x·Aᵀ, y += u·Bᵀ and their gradients) go
// through oneDNN's f32 matmul (a dimension <= 16); forward and both gradients against double
// references, accumulating into non-zero gradients.
TEST(Matmul, SkinnyProductsThroughOnednnMatchReference) {
  struct Case {
    int64_t N, C, OC;
  };
  for (const Case& k : {Case{129, 2048, 8}, Case{129, 8, 1024}, Case{3, 40, 50}}) {
    SCOPED_TRACE(::testing::Message() << "N " << k.N << " C " << k.C << " OC " << k.OC);
    const int64_t N = k.N, C = k.C, OC = k.OC;
    auto inp = random_floats(N * C, 31), weight = random_floats(OC * C, 32);
    auto dout = random_floats(N * OC, 33);
    const int64_t cached = onednn_cached_primitives();
    std::vector<float> out(N * OC, NAN);
    matmul_forward(out.data(), inp.data(), weight.data(), nullptr, N, C, OC);
    EXPECT_GT(onednn_cached_primitives(), cached) << "not through oneDNN";
    const auto x = test::to_double(inp), W = test::to_double(weight), dy = test::to_double(dout);
    // |inputs| <= 1: a float dot product of length K errs by <= K^2 eps (as above).
    const auto tol = [](int64_t K) { return 2.0 * K * K * FLT_EPSILON; };
    test::expect_close(out, matmul_ref(x, W, {}, N, C, OC), 0.0, tol(C), "out");
    auto dinp = random_floats(N * C, 34), dweight = random_floats(OC * C, 35);
    std::vector<double> want_dinp = test::to_double(dinp), want_dweight = test::to_double(dweight);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t o = 0; o < OC; ++o) {
        for (int64_t c = 0; c < C; ++c) {
          want_dinp[n * C + c] += dy[n * OC + o] * W[o * C + c];
          want_dweight[o * C + c] += dy[n * OC + o] * x[n * C + c];
        }
      }
    }
    matmul_backward(dinp.data(), dweight.data(), nullptr, dout.data(), inp.data(), weight.data(), N,
                    C, OC);
    test::expect_close(dinp, want_dinp, 0.0, tol(OC) + 1e-6, "dinp");
    test::expect_close(dweight, want_dweight, 0.0, tol(N) + 1e-6, "dweight");
  }
}

TEST(Matmul, BiasGradientOverManyRowsAndColumnBlocks) {
  const int64_t N = 300, C = 3, OC = 700;  // several 256-wide column blocks, one partial
  auto dout = random_floats(N * OC, 31);
  std::vector<float> dbias(OC, 1.0f);
  std::vector<float> inp(N * C), weight(OC * C);
  matmul_backward(nullptr, nullptr, dbias.data(), dout.data(), inp.data(), weight.data(), N, C, OC);
  std::vector<double> ref(OC, 1.0);
  for (int64_t n = 0; n < N; n++) {
    for (int64_t o = 0; o < OC; o++) ref[o] += dout[n * OC + o];
  }
  // A float sum of N terms in [-1, 1]: error <= N eps N.
  test::expect_close(dbias, ref, 0.0, N * N * FLT_EPSILON, "dbias");
}

}  // namespace
}  // namespace magix::cpu
