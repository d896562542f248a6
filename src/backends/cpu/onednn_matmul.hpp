// bf16 matrix products through oneDNN's matmul primitive (see docs/kernels.md, "bf16 GEMM
// engine"), and skinny fp32 ones. gemm_bf16.cpp calls the bf16 form; it packs operands with padded
// rows first, because oneDNN 2.6's fast (brgemm) matmul accepts dense row-major operands only.
#pragma once

#include <cstdint>
#include <string>

namespace magix::cpu {

// C (M, N) = alpha * op(A) · op(B) [+ bias] [+ C], products accumulated in fp32.
// A is dense (M, K), or (K, M) if trans_a; B is dense (K, N), or (N, K) if trans_b; bias is (N)
// fp32 or null; C is dense (M, N), fp32 or (c_bf16) bf16 rounded once at the end. accumulate
// adds the prior C (fp32 C only). Primitives are created once per shape and thread count and
// cached (thread-safe); each call brings its own scratchpad, so concurrent calls from the
// threads of an OpenMP parallel region are safe, each running on one thread.
void onednn_matmul_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const uint16_t* A, const uint16_t* B, const float* bias, bool accumulate,
                        void* C, bool c_bf16);

// C (M, N) = op(A) · op(B) [+ C] in fp32, dense operands as above (onednn_matmul_bf16): the
// skinny products of linear layers (matmul.cpp), where oneDNN's brgemm beats OpenBLAS.
void onednn_matmul_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                       const float* B, bool accumulate, float* C);

// The instruction set oneDNN dispatches to on this CPU (after ONEDNN_MAX_CPU_ISA), e.g.
// "avx512_core_amx", and whether that includes AMX with bf16 (which needs the CPU's amx_bf16 and
// the kernel's permission to use the tile state; oneDNN requests the permission itself).
std::string onednn_isa_name();
bool onednn_uses_amx();

// "oneDNN 2.6.3 matmul (avx512_core_amx)".
std::string onednn_matmul_name();

// Primitives in the cache (for the tests).
int64_t onednn_cached_primitives();

}  // namespace magix::cpu
