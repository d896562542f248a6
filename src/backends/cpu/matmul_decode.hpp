// The linear layers of a decode step: few rows against a large weight, so the cost is reading
// the weight once; a BLAS GEMM with one row would pack (copy) the weight first.
#pragma once

#include <cstdint>

namespace magix::cpu {

// Up to kDecodeMaxRows rows take the row-by-row dot-product path; more go to
// cpu::matmul_forward.
inline constexpr int64_t kDecodeMaxRows = 8;

// out (N, OC) = inp (N, C) · weight (OC, C)^T + bias (OC); bias may be null.
void matmul_decode(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                   int64_t C, int64_t OC);

// The same with a bf16 weight, widened to fp32 as it is read (half the bytes per row). More than
// kDecodeMaxRows rows: a bf16 GEMM of the rows rounded to bf16.
void matmul_decode(float* out, const float* inp, const uint16_t* weight, const float* bias,
                   int64_t N, int64_t C, int64_t OC);

}  // namespace magix::cpu
