// Token embedding over a (possibly vocab-parallel) shard of the table.
#pragma once

#include <cstdint>

namespace magix::cpu {

// The shard holds rows [row_start, row_start + rows) of the table (rows, C).
// out (N, C) = scale * table[ids[n] - row_start] for ids inside the shard, 0 otherwise. The table
// is fp32, or bf16 bits (`bf16`: widened exactly, row by row; a bf16 model's table is never
// widened whole).
void embedding_forward(float* out, const int32_t* ids, const void* table, bool bf16, int64_t N,
                       int64_t C, int64_t row_start, int64_t rows, float scale);

// dtable (rows, C) += scale * dout[n] for every n whose id is inside the shard.
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t C,
                        int64_t row_start, int64_t rows, float scale);

}  // namespace magix::cpu
