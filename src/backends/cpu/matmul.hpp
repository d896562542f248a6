// Linear layers in torch layout (weight is (OC, C)).
#pragma once

#include <cstdint>

namespace magix::cpu {

// out (N, OC) = inp (N, C) · weight (OC, C)^T + bias (OC); bias may be null.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                    int64_t C, int64_t OC);

// Gradients accumulate (+=): dinp (N, C) += dout · weight; dweight (OC, C) += dout^T · inp;
// dbias (OC) += column sums of dout. Any of dinp, dweight, dbias may be null (skipped).
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int64_t C, int64_t OC);

// bf16 inputs (uint16_t bit patterns), fp32 accumulation (gemm_bf16); out fp32 with the bias
// added after the product, or bf16 rounded once after the bias.
void matmul_forward(float* out, const uint16_t* inp, const uint16_t* weight, const float* bias,
                    int64_t N, int64_t C, int64_t OC);
void matmul_forward(uint16_t* out, const uint16_t* inp, const uint16_t* weight, const float* bias,
                    int64_t N, int64_t C, int64_t OC);

// bf16 dout, inp, weight; fp32 gradients accumulated (+=) as in the fp32 version.
void matmul_backward(float* dinp, float* dweight, float* dbias, const uint16_t* dout,
                     const uint16_t* inp, const uint16_t* weight, int64_t N, int64_t C, int64_t OC);

}  // namespace magix::cpu
