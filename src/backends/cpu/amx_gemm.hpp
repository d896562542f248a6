// magix's own AMX bf16 GEMM for the products of linear layers with few rows (docs/kernels.md,
// "AMX kernels"): out = x·Wᵀ with the weight W (N, K) read as stored, straight into the tiles
// (the output computed transposed, Cᵀ = W·xᵀ, and transposed back on the way out), and
// dx = dy·W with W (K, N) packed into the tiles' pair-interleaved form panel by panel. Each output
// is an fp32 sum over K in a fixed order (32-wide tile dot products, in order of K), whatever M,
// N and the thread count: the same on every mesh and any number of threads.
#pragma once

#include <cstdint>

namespace magix::cpu {

// True when the CPU has AMX-BF16 (with AVX512-BW) and Linux granted this process the tile data
// state (arch_prctl ARCH_REQ_XCOMP_PERM). Detected once.
bool amx_gemm_available();

// Whether amx_gemm_bf16 takes this product: A (M, K) row-major (not transposed), K a multiple of
// 32 and N of 16, and amx_gemm_available().
bool amx_gemm_takes(bool trans_a, int64_t M, int64_t N, int64_t K);

// C (M, N) = alpha A·op(B) [+ bias] [+ C], A (M, K) with leading dimension lda; B (N, K) if
// trans_b, else (K, N), with ldb; bias (N) fp32 or null; C fp32 (accumulate: add to it) or, if
// c_bf16, bf16 rounded to nearest even once from the fp32 result (accumulate false). Only for
// products amx_gemm_takes; uses the threads of OpenMP (one inside a parallel region).
void amx_gemm_bf16(bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
                   int64_t lda, const uint16_t* B, int64_t ldb, const float* bias, bool accumulate,
                   void* C, int64_t ldc, bool c_bf16);

}  // namespace magix::cpu
