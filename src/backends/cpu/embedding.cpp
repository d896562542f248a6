#include "backends/cpu/embedding.hpp"

#include <algorithm>

#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"

namespace magix::cpu {

void embedding_forward(float* out, const int32_t* ids, const void* table, bool bf16, int64_t N,
                       int64_t C, int64_t row_start, int64_t rows, float scale) {
  MAGIX_CHECK(N >= 0 && C >= 0 && rows >= 0 && row_start >= 0,
              "embedding_forward: bad sizes N={} C={} rows={} row_start={}", N, C, rows, row_start);
  // out (N, C): one row per token; rows outside the shard are zero (another rank holds them).
#pragma omp parallel for if (N * C > (1 << 15))
  for (int64_t n = 0; n < N; n++) {
    float* o = out + n * C;
    const int64_t row = static_cast<int64_t>(ids[n]) - row_start;
    if (row < 0 || row >= rows) {
      std::fill(o, o + C, 0.0f);
      continue;
    }
    if (bf16) {
      const uint16_t* t = static_cast<const uint16_t*>(table) + row * C;
      for (int64_t c = 0; c < C; c++) o[c] = scale * bf16_to_float(t[c]);
    } else {
      const float* t = static_cast<const float*>(table) + row * C;
      for (int64_t c = 0; c < C; c++) o[c] = scale * t[c];
    }
  }
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t C,
                        int64_t row_start, int64_t rows, float scale) {
  MAGIX_CHECK(N >= 0 && C >= 0 && rows >= 0 && row_start >= 0,
              "embedding_backward: bad sizes N={} C={} rows={} row_start={}", N, C, rows,
              row_start);
  // Tokens may repeat, so threads split the channels, not the tokens: each thread owns a block
  // of columns of dtable and adds the tokens in order (no races, same sums for any thread count).
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for if (N * C > (1 << 15))
  for (int64_t b = 0; b < blocks; b++) {
    const int64_t c0 = b * kBlock;
    const int64_t c1 = std::min(C, c0 + kBlock);
    for (int64_t n = 0; n < N; n++) {
      const int64_t row = static_cast<int64_t>(ids[n]) - row_start;
      if (row < 0 || row >= rows) continue;
      float* d = dtable + row * C;
      const float* g = dout + n * C;
      for (int64_t c = c0; c < c1; c++) d[c] += scale * g[c];
    }
  }
}

}  // namespace magix::cpu
