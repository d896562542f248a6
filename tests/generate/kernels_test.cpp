// The decode-step kernels against naive double-precision references.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/attention_decode.hpp"
#include "backends/cpu/matmul_decode.hpp"

namespace magix::cpu {
namespace {

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(LinearRows, EqualsNaive) {
  for (int64_t N : {1, 3, 8, 9}) {  // 9 rows: the GEMM path
    for (int64_t C : {5, 37, 64, 100}) {
      const int64_t OC = 23;
      const auto x = randn(N * C, 1), w = randn(OC * C, 2), b = randn(OC, 3);
      std::vector<float> out(N * OC);
      matmul_decode(out.data(), x.data(), w.data(), b.data(), N, C, OC);
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t o = 0; o < OC; ++o) {
          double want = b[o];
          for (int64_t c = 0; c < C; ++c) want += double(x[n * C + c]) * w[o * C + c];
          EXPECT_NEAR(out[n * OC + o], want, 1e-5 * (1 + std::abs(want))) << N << " " << C;
        }
      }
    }
  }
}

// softmax over visible slots j (j <= slot, valid, slot - j < window) of q·k * scale, times v.
TEST(CachedAttention, EqualsNaive) {
  const int64_t B = 2, S = 11, Hq = 4, Hkv = 2, D = 6;
  const auto k = randn(B * S * Hkv * D, 4), v = randn(B * S * Hkv * D, 5), q = randn(B * Hq * D, 6);
  std::vector<int32_t> valid(B * S, 1);
  valid[0] = valid[1] = valid[2] = 0;  // row 0: three slots of left padding
  valid[S + 5] = 0;
  const float scale = 0.4f;
  for (int64_t window : {0, 4}) {
    for (int64_t slot : {3, 7, 10}) {
      std::vector<float> out(B * Hq * D);
      attention_decode(out.data(), q.data(), {k.data(), v.data(), valid.data(), S}, B, slot, Hq,
                       Hkv, D, scale, window);
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t h = 0; h < Hq; ++h) {
          const int64_t kvh = h / (Hq / Hkv);
          std::vector<double> p(S, 0.0);
          double mx = -1e300, sum = 0;
          for (int64_t j = 0; j <= slot; ++j) {
            if (!valid[b * S + j] || (window > 0 && slot - j >= window)) continue;
            double s = 0;
            for (int64_t d = 0; d < D; ++d) {
              s += double(q[(b * Hq + h) * D + d]) * k[((b * S + j) * Hkv + kvh) * D + d];
            }
            p[j] = s * scale;
            mx = std::max(mx, p[j]);
          }
          for (int64_t j = 0; j <= slot; ++j) {
            const bool vis = valid[b * S + j] && !(window > 0 && slot - j >= window);
            p[j] = vis ? std::exp(p[j] - mx) : 0.0;
            sum += p[j];
          }
          for (int64_t d = 0; d < D; ++d) {
            double want = 0;
            for (int64_t j = 0; j <= slot; ++j) {
              want += p[j] / sum * v[((b * S + j) * Hkv + kvh) * D + d];
            }
            EXPECT_NEAR(out[(b * Hq + h) * D + d], want, 1e-5) << b << h << slot << window;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace magix::cpu
