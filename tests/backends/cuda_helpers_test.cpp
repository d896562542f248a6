// The host side of the CUDA kernels' arithmetic (src/backends/cuda/kernel_math.hpp), checked on
// the CPU against the CPU backend and magix's host conversions: bf16 rounding, the dropout mask,
// the attention mask predicate, the tile and grid arithmetic of the kernels (every element or
// visible (query, key) pair once, for awkward shapes) and the row-major -> column-major GEMM
// mapping of the cuBLASLt calls. Runs in every build: the header is plain C++ without nvcc.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "backends/backend.hpp"
#include "backends/cuda/kernel_math.hpp"
#include "magix/dtype_convert.hpp"
#include "magix/hash.hpp"

namespace magix::cuda {
namespace {

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

TEST(CudaHelpers, Bf16RoundingEqualsHostConversion) {
  std::vector<float> values = {0.0f,
                               -0.0f,
                               1.0f,
                               -1.0f,
                               FLT_MIN,
                               FLT_TRUE_MIN,
                               FLT_MAX,
                               -FLT_MAX,
                               std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::quiet_NaN(),
                               from_bits(0x7f800001u),   // a signalling NaN
                               from_bits(0x3f808000u),   // a tie, rounds to even (down)
                               from_bits(0x3f818000u),   // a tie, rounds to even (up)
                               from_bits(0x7f7f8000u)};  // rounds past the largest bf16
  std::mt19937 rng(7);
  for (int i = 0; i < 1 << 20; ++i) values.push_back(from_bits(static_cast<uint32_t>(rng())));
  for (float x : values) {
    ASSERT_EQ(bf16_round(x), float_to_bf16(x)) << "x bits " << std::hex << float_bits(x);
    const uint16_t h = float_to_bf16(x);
    const float w = bf16_widen(h), want = bf16_to_float(h);
    ASSERT_EQ(float_bits(w), float_bits(want));
    ASSERT_EQ(float_bits(bf16_rounded(x)), float_bits(want));
  }
}

TEST(CudaHelpers, SplitmixEqualsHostHash) {
  std::mt19937_64 rng(3);
  for (int i = 0; i < 10000; ++i) {
    const uint64_t x = rng();
    ASSERT_EQ(splitmix64(x), magix::splitmix64(x));
  }
}

// The kernel's keep bit for every element equals the CPU backend's dropout output: inputs of 1
// give keep_scale where kept and 0 where dropped.
TEST(CudaHelpers, DropoutMaskEqualsCpuBackend) {
  const Backend& cpu = backend_for(Device::kCpu);
  struct Case {
    uint64_t key;
    int64_t rows, cols_local, row0, col0, cols;
    float p;
  };
  const Case cases[] = {{1, 1, 1, 0, 0, 1, 0.5f},
                        {0x9e3779b97f4a7c15ull, 7, 33, 5, 3, 64, 0.1f},
                        {42, 16, 128, 1000, 128, 512, 0.9f},
                        {7, 3, 5, 0, 0, 5, 0.0f},
                        {~0ull, 9, 17, 123456, 40, 57, 0.3333f}};
  for (const Case& c : cases) {
    Tensor inp({c.rows, c.cols_local}), out({c.rows, c.cols_local});
    std::fill_n(inp.data<float>(), inp.numel(), 1.0f);
    cpu.dropout(out, inp, c.key, c.row0, c.col0, c.cols, c.p);
    const auto threshold = static_cast<uint64_t>(std::llround(double(c.p) * 16777216.0));
    const float keep_scale = 1.0f / (1.0f - c.p);
    int64_t kept = 0;
    for (int64_t n = 0; n < c.rows; ++n) {
      for (int64_t j = 0; j < c.cols_local; ++j) {
        const bool keep = dropout_keep(c.key, c.row0, c.col0, c.cols, n, j, threshold);
        const float got = out.data<float>()[n * c.cols_local + j];
        ASSERT_EQ(got, keep ? keep_scale : 0.0f) << "key " << c.key << " element " << n << "," << j;
        kept += keep;
      }
    }
    if (c.p == 0.0f) {
      EXPECT_EQ(kept, c.rows * c.cols_local);
    }
  }
}

// The CPU backend's attention with q = 0 (every visible key scores the same) and v = one-hot
// rows (key j writes dim j) outputs 1 / count at (i, j) exactly where query i sees key j: its
// mask rule, compared with attention_visible on random masks.
TEST(CudaHelpers, AttentionMaskPredicateEqualsCpuRule) {
  const Backend& cpu = backend_for(Device::kCpu);
  std::mt19937 rng(11);
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t B = 2, T = 1 + static_cast<int64_t>(rng() % 40), D = T;
    const int64_t window = trial % 3 == 0 ? 0 : static_cast<int64_t>(rng() % (T + 2));
    const bool use_valid = trial % 2 == 0, use_segment = trial % 4 < 2;
    Tensor q({B, T, 1, D}), k({B, T, 1, D}), v({B, T, 1, D}), out({B, T, 1, D}), lse({B, 1, T});
    Tensor valid({B, T}, DType::kI32), segment({B, T}, DType::kI32);
    for (int64_t b = 0; b < B; ++b) {
      int32_t seg = 0;
      for (int64_t t = 0; t < T; ++t) {
        v.data<float>()[(b * T + t) * D + t] = 1.0f;
        valid.data<int32_t>()[b * T + t] = rng() % 4 != 0;
        if (rng() % 5 == 0) seg = static_cast<int32_t>(rng() % 3);  // segments may recur
        segment.data<int32_t>()[b * T + t] = seg;
      }
    }
    AttentionMask mask;
    mask.key_valid = use_valid ? &valid : nullptr;
    mask.segment = use_segment ? &segment : nullptr;
    mask.window = window;
    cpu.attention_forward(out, lse, q, k, v, 1.0f, mask);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t i = 0; i < T; ++i) {
        for (int64_t j = 0; j < T; ++j) {
          const bool cpu_sees = out.data<float>()[(b * T + i) * D + j] > 0.0f;
          const int32_t vj = use_valid ? valid.data<int32_t>()[b * T + j] : 1;
          const int32_t si = use_segment ? segment.data<int32_t>()[b * T + i] : 0;
          const int32_t sj = use_segment ? segment.data<int32_t>()[b * T + j] : 0;
          ASSERT_EQ(attention_visible(i, j, window, vj, si, sj), cpu_sees)
              << "trial " << trial << " T " << T << " window " << window << " b " << b << " i " << i
              << " j " << j;
        }
      }
    }
  }
}

// The forward / dq loops (query blocks of kQueryRows, key tiles of kKeyTile from
// attention_key_begin to attention_key_end, lane = key) visit every causal, in-window
// (query, key) pair exactly once; so do the dk/dv loops (key blocks, query tiles from
// attention_query_begin to attention_query_end, lane = query).
TEST(CudaHelpers, AttentionTilesCoverEveryVisiblePairOnce) {
  for (int64_t T : {1, 2, 7, 8, 9, 31, 32, 33, 64, 100, 257}) {
    for (int64_t window : {0, 1, 2, 5, 32, 33, 1000}) {
      std::vector<int> fwd(T * T, 0), bwd(T * T, 0);
      for (int64_t i0 = 0; i0 < T; i0 += kQueryRows) {
        const int64_t rows = std::min<int64_t>(kQueryRows, T - i0);
        const int64_t jb = attention_key_begin(i0, window), je = attention_key_end(i0, rows);
        ASSERT_LE(je, T);
        for (int64_t j0 = jb; j0 < je; j0 += kKeyTile)
          for (int64_t w = 0; w < rows; ++w)
            for (int lane = 0; lane < 32; ++lane) {
              const int64_t i = i0 + w, j = j0 + lane;
              if (j < je && attention_visible(i, j, window, 1, 0, 0)) ++fwd[i * T + j];
            }
      }
      for (int64_t j0 = 0; j0 < T; j0 += kQueryRows) {
        const int64_t rows = std::min<int64_t>(kQueryRows, T - j0);
        const int64_t ib = attention_query_begin(j0), ie = attention_query_end(j0, rows, window, T);
        ASSERT_LE(ie, T);
        for (int64_t i0 = ib; i0 < ie; i0 += kKeyTile)
          for (int64_t w = 0; w < rows; ++w)
            for (int lane = 0; lane < 32; ++lane) {
              const int64_t i = i0 + lane, j = j0 + w;
              if (i < ie && attention_visible(i, j, window, 1, 0, 0)) ++bwd[i * T + j];
            }
      }
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < T; ++j) {
          const int want = j <= i && (window <= 0 || i - j < window);
          ASSERT_EQ(fwd[i * T + j], want)
              << "forward T " << T << " window " << window << " (" << i << ", " << j << ")";
          ASSERT_EQ(bwd[i * T + j], want)
              << "dk/dv T " << T << " window " << window << " (" << i << ", " << j << ")";
        }
    }
  }
}

TEST(CudaHelpers, HeadDimsAndKvHeadsCoverOnce) {
  for (int64_t D : {1, 31, 32, 33, 64, 80, 96, 128, 200, 256}) {
    std::vector<int> seen(D, 0);
    for (int lane = 0; lane < 32; ++lane)
      for (int c = 0; c < kDimsPerLane; ++c)
        if (lane + 32 * c < D) ++seen[lane + 32 * c];
    for (int64_t d = 0; d < D; ++d) ASSERT_EQ(seen[d], 1) << "D " << D << " dim " << d;
  }
  for (auto [Hq, Hkv] :
       {std::pair<int64_t, int64_t>{1, 1}, {4, 4}, {8, 2}, {12, 4}, {32, 8}, {7, 1}, {6, 3}}) {
    std::vector<int> per_kv(Hkv, 0);
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t g = kv_head(h, Hq, Hkv);
      ASSERT_GE(g, 0);
      ASSERT_LT(g, Hkv);
      ASSERT_EQ(g, h / (Hq / Hkv));  // the CPU backend's grouping
      ++per_kv[g];
    }
    for (int c : per_kv) ASSERT_EQ(c, Hq / Hkv);
  }
}

TEST(CudaHelpers, GridStrideLoopCoversEveryElementOnce) {
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{255}, int64_t{256}, int64_t{257},
                    int64_t{1000003}, kMaxBlocks * kThreads, kMaxBlocks * kThreads + 777}) {
    const int64_t blocks = elementwise_blocks(n);
    ASSERT_GE(blocks, 1);
    ASSERT_LE(blocks, kMaxBlocks);
    std::vector<uint8_t> seen(static_cast<size_t>(n), 0);
    const int64_t stride = blocks * kThreads;
    for (int64_t t = 0; t < stride; ++t)
      for (int64_t i = t; i < n; i += stride) ++seen[i];
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1) << "n " << n << " element " << i;
  }
}

// Row-major GEMMs, done the way the cuBLASLt call does them (the column-major product of
// column_major_gemm over the same memory), equal the naive row-major product exactly (the same
// sums in the same order).
TEST(CudaHelpers, ColumnMajorGemmMappingEqualsRowMajorProduct) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-1, 1);
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                             {3, 5, 7},
                             {8, 1, 4},
                             {1, 9, 2},
                             {6, 4, 1}}) {
        const int64_t pad = 3;
        // Row-major storage with leading dimensions larger than the rows.
        const int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
        std::vector<float> A((ta ? K : M) * lda), Bm((tb ? N : K) * ldb);
        for (float& x : A) x = dist(rng);
        for (float& x : Bm) x = dist(rng);
        auto a = [&](int64_t m, int64_t k) { return ta ? A[k * lda + m] : A[m * lda + k]; };
        auto b = [&](int64_t k, int64_t n) { return tb ? Bm[n * ldb + k] : Bm[k * ldb + n]; };
        std::vector<float> want(M * ldc, 0.0f), got(M * ldc, 0.0f);
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) {
            float s = 0;
            for (int64_t k = 0; k < K; ++k) s += a(m, k) * b(k, n);
            want[m * ldc + n] = s;
          }
        const ColumnMajorGemm g = column_major_gemm(ta, tb, M, N, K);
        ASSERT_LE(g.first_rows, ldb);
        ASSERT_LE(g.second_rows, lda);
        ASSERT_LE(g.m, ldc);
        // Column-major X (rows x cols, ld): element (r, c) at r + c * ld.
        auto first = [&](int64_t r, int64_t k) {  // op(first) (m x k)
          return g.trans_first ? Bm[k + r * ldb] : Bm[r + k * ldb];
        };
        auto second = [&](int64_t k, int64_t c) {  // op(second) (k x n)
          return g.trans_second ? A[c + k * lda] : A[k + c * lda];
        };
        for (int64_t r = 0; r < g.m; ++r)
          for (int64_t c = 0; c < g.n; ++c) {
            float s = 0;
            for (int64_t k = 0; k < g.k; ++k) s += first(r, k) * second(k, c);
            got[r + c * ldc] = s;
          }
        ASSERT_EQ(got, want) << "ta " << ta << " tb " << tb << " M " << M << " N " << N << " K "
                             << K;
      }
}

}  // namespace
}  // namespace magix::cuda
