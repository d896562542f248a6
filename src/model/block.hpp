// One decoder block (pre-norm attention + gated MLP), forward and backward, on this rank's
// tensor-parallel slice: Hq/M query heads, Hkv/M kv heads, I/M intermediate units.
// Params use += in backward, activations =.
#pragma once

#include <cstdint>

#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/glu.hpp"
#include "magix/communicator.hpp"
#include "magix/tensor.hpp"

namespace magix::model {

struct BlockDims {
  int64_t B = 0, T = 0;            // rows, positions; N = B * T
  int64_t C = 0;                   // hidden size
  int64_t I = 0;                   // local intermediate size
  int64_t Hq = 0, Hkv = 0, D = 0;  // local heads, head dim
  float eps = 1e-6f;
  float norm_offset = 0.0f;
  float attn_scale = 1.0f;
  cpu::Activation act = cpu::Activation::kSilu;
  cpu::AttentionMask mask;             // key_valid, segments, this layer's sliding window
  const int32_t* pos = nullptr;        // (N) position ids
  const float* inv_freq = nullptr;     // (D/2)
  Communicator* model_comm = nullptr;  // all-reduce after row-parallel layers
  int64_t N() const { return B * T; }
};

// Weights as used (gathered over data). Biases may be null.
struct BlockWeights {
  const float* ln1 = nullptr;                // (C)
  const float *wq = nullptr, *bq = nullptr;  // (Hq*D, C), (Hq*D)
  const float *wk = nullptr, *bk = nullptr;  // (Hkv*D, C)
  const float *wv = nullptr, *bv = nullptr;  // (Hkv*D, C)
  const float *wo = nullptr, *bo = nullptr;  // (C, Hq*D), (C)
  const float* ln2 = nullptr;                // (C)
  const float *wg = nullptr, *bg = nullptr;  // (I, C)
  const float *wu = nullptr, *bu = nullptr;  // (I, C)
  const float *wd = nullptr, *bd = nullptr;  // (C, I), (C)
};

// Gradients, same layout; accumulated (+=). Null where the weight is null.
struct BlockGrads {
  float* ln1 = nullptr;
  float *wq = nullptr, *bq = nullptr, *wk = nullptr, *bk = nullptr, *wv = nullptr, *bv = nullptr;
  float *wo = nullptr, *bo = nullptr;
  float* ln2 = nullptr;
  float *wg = nullptr, *bg = nullptr, *wu = nullptr, *bu = nullptr, *wd = nullptr, *bd = nullptr;
};

// What the backward pass needs of one block's forward pass (the input is kept by the caller).
struct BlockActs {
  Tensor ln1, rstd1;   // (N, C), (N)
  Tensor q, k, v;      // (N, Hq*D), (N, Hkv*D) x2; q and k after rope
  Tensor att, lse;     // (N, Hq*D), (B, Hq, T)
  Tensor res2;         // (N, C) input + attention output
  Tensor ln2, rstd2;   // (N, C), (N)
  Tensor gate, up, h;  // (N, I) each; h = act(gate) * up
  static BlockActs allocate(const BlockDims& d);
};

// Backward scratch, reused by every block.
struct BlockScratch {
  Tensor dln;               // (N, C)
  Tensor datt, dq, dk, dv;  // (N, Hq*D), (N, Hkv*D) x2 (datt also holds d(o_proj input))
  Tensor dh, dgate, dup;    // (N, I)
  static BlockScratch allocate(const BlockDims& d);
};

// out (N, C) = block(inp (N, C)); fills acts.
void block_forward(float* out, const float* inp, const BlockWeights& w, BlockActs& acts,
                   const BlockDims& d);

// dx (N, C) holds d loss / d out on entry and d loss / d inp on exit.
void block_backward(float* dx, const float* inp, const BlockWeights& w, BlockGrads& g,
                    const BlockActs& acts, BlockScratch& s, const BlockDims& d);

}  // namespace magix::model
