// LoRA's merge (W + scale · B · A) and the projection of a dense weight gradient onto the
// adapters, on one box of a weight.
#include "backends/cpu/lora.hpp"

#include <algorithm>
#include <vector>

#include "magix/dtype_convert.hpp"

namespace magix::cpu {

// w (ob, ib) += scale · (b (ob, r) · a (r, ib)), row by row (rows in parallel; each row's sum
// over r in a fixed order, so the result does not depend on the thread count). Memory-bound: a
// BLAS GEMM with an inner dimension of r runs far below its peak on these shapes.
// With `base` (F32 or BF16, shape (ob, ib)): w = base + scale · (b · a) in the same single pass
// (the W_eff rebuild of LoraModel), instead of w += ...
void lora_merge(float* w, const float* a, const float* b, int64_t ob, int64_t ib, int64_t r,
                float scale, const Tensor* base) {
  const float* base32 = base && base->dtype() == DType::kF32 ? base->data<float>() : nullptr;
  const uint16_t* base16 = base && base->dtype() == DType::kBF16 ? base->data<uint16_t>() : nullptr;
#pragma omp parallel
  {
    std::vector<float> acc(static_cast<size_t>(ib));
#pragma omp for schedule(static)
    for (int64_t o = 0; o < ob; ++o) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      float* ac = acc.data();
      for (int64_t k = 0; k < r; ++k) {
        const float bk = b[o * r + k];
        const float* ak = a + k * ib;
#pragma omp simd
        for (int64_t i = 0; i < ib; ++i) ac[i] += bk * ak[i];
      }
      float* wo = w + o * ib;
      if (base32) {
        const float* bo = base32 + o * ib;
#pragma omp simd
        for (int64_t i = 0; i < ib; ++i) wo[i] = bo[i] + scale * ac[i];
      } else if (base16) {
        const uint16_t* bo = base16 + o * ib;
#pragma omp simd
        for (int64_t i = 0; i < ib; ++i) wo[i] = bf16_to_float(bo[i]) + scale * ac[i];
      } else {
#pragma omp simd
        for (int64_t i = 0; i < ib; ++i) wo[i] += scale * ac[i];
      }
    }
  }
}

// The projection of one box of dW (ob, ib), reading dW once:
//   da (r, ib) += scale · b^T · dW      db (ob, r) = scale · dW · a^T
// Column blocks in parallel: a block owns its columns of da (rows summed in order) and writes
// its partial dot products for db, summed over the blocks in order afterwards, so the result
// does not depend on the thread count.
void lora_project(const float* dw, const float* a, const float* b, int64_t ob, int64_t ib,
                  int64_t r, float scale, float* da, float* db) {
  constexpr int64_t kCols = 512;
  const int64_t blocks = (ib + kCols - 1) / kCols;
  std::vector<float> part(static_cast<size_t>(ob * blocks * r));
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kCols, n = std::min(kCols, ib - c0);
    for (int64_t o = 0; o < ob; ++o) {
      const float* row = dw + o * ib + c0;
      float* out = part.data() + (o * blocks + blk) * r;
      int64_t k = 0;
      // Four ranks at a time: four independent accumulators, the row segment read once.
      for (; k + 4 <= r; k += 4) {
        const float *a0 = a + k * ib + c0, *a1 = a0 + ib, *a2 = a1 + ib, *a3 = a2 + ib;
        float *d0 = da + k * ib + c0, *d1 = d0 + ib, *d2 = d1 + ib, *d3 = d2 + ib;
        const float* bo = b + o * r + k;
        const float b0 = scale * bo[0], b1 = scale * bo[1], b2 = scale * bo[2], b3 = scale * bo[3];
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int64_t i = 0; i < n; ++i) {
          const float x = row[i];
          s0 += x * a0[i];
          s1 += x * a1[i];
          s2 += x * a2[i];
          s3 += x * a3[i];
          d0[i] += b0 * x;
          d1[i] += b1 * x;
          d2[i] += b2 * x;
          d3[i] += b3 * x;
        }
        out[k] = s0;
        out[k + 1] = s1;
        out[k + 2] = s2;
        out[k + 3] = s3;
      }
      for (; k < r; ++k) {
        const float* ak = a + k * ib + c0;
        float* dak = da + k * ib + c0;
        const float bk = scale * b[o * r + k];
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < n; ++i) {
          dot += row[i] * ak[i];
          dak[i] += bk * row[i];
        }
        out[k] = dot;
      }
    }
  }
  for (int64_t o = 0; o < ob; ++o) {
    for (int64_t k = 0; k < r; ++k) {
      float sum = 0.0f;
      for (int64_t blk = 0; blk < blocks; ++blk)
        sum += part[static_cast<size_t>((o * blocks + blk) * r + k)];
      db[o * r + k] = scale * sum;
    }
  }
}

}  // namespace magix::cpu
