// Matrix products with bf16 inputs and fp32 accumulation, the GEMMs of bf16 mixed precision.
// The engine is chosen at run time (docs/kernels.md, "bf16 GEMM engine"): on AMX, where the CPU
// and the OS allow it, magix's own AMX kernels for products of up to 512 rows against a B of at
// least 2^20 values (amx_gemm.hpp) and oneDNN's matmul for the rest; elsewhere (AVX512-BF16 without AMX, AVX-512, AVX2) the
// inputs are widened to fp32 and multiplied by the fp32 gemm() (OpenBLAS), which measured faster
// than oneDNN's non-AMX bf16 kernels. Both give fp32 sums of exact bf16 products, except that
// AMX (and AVX512-BF16) dot products treat denormal inputs as zero and flush denormal
// results (|x| < 2^-126) to zero; the widened path keeps denormals.
#pragma once

#include <cstdint>
#include <string>

namespace magix::cpu {

// Row-major C (M, N) = alpha * op(A) · op(B) + beta * C; A, B bf16 (uint16_t bit patterns),
// products accumulated in fp32; C fp32. A is (M, K), or (K, M) if trans_a; B is (K, N), or
// (N, K) if trans_b. beta is 0 (overwrite, NaNs in C not propagated) or 1 (accumulate); other
// values throw. Leading dimensions may exceed the row length (such operands are packed first).
// Safe to call from inside an OpenMP parallel region, where it runs on the calling thread only.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C,
               int64_t ldc);

// Same with a bf16 C (M, N): C = bf16(alpha * op(A) · op(B) + bias), rounded to nearest even
// once from the fp32 result; bias is (N) fp32, added to every row, or null for none.
void gemm_bf16_out_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb,
                        const float* bias, uint16_t* C, int64_t ldc);

// The engine gemm_bf16 uses in this process, e.g. "oneDNN 2.6.3 matmul (avx512_core_amx)" or
// "widened to fp32, OpenBLAS 0.3.21 (Haswell, OpenMP)". MAGIX_GEMM_BF16_ENGINE=amx|onednn|fp32
// forces one (read once, at the first call; amx only where the CPU has it).
std::string gemm_bf16_engine_name();

// Double-precision reference of gemm_bf16 (same arguments and checks), for the tests.
void gemm_bf16_naive(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta,
                     float* C, int64_t ldc);

}  // namespace magix::cpu
