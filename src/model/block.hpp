// One decoder block (pre-norm attention + gated MLP), forward and backward, on this rank's
// tensor-parallel slice: Hq/M query heads, Hkv/M kv heads, I/M intermediate units. Every numeric
// step is an op of the backend (backends/backend.hpp). Params use += in backward, activations =.
//
// Precision: the residual stream, norms, RoPE angles and arithmetic, attention's softmax and all
// gradients of parameters are fp32. `compute` (F32 or BF16) is the dtype of the GEMMs' inputs:
// with BF16 the GEMMs take bf16 weights and activations and accumulate in fp32, and the
// activations that feed GEMMs (normed inputs, q, k, v, the attention output, gate, up, their
// product) are kept in bf16.
//
// Low-rank adapters (LoRA): an adapted linear layer computes y = W·x + scale · B·(A·x) with the
// weight W as given (never merged); its backward adds scale · Aᵀ·(Bᵀ·dy) to dx and accumulates
// dA = scale · (Bᵀ·dy)ᵀ·x, dB = scale · dyᵀ·(A·x). The adapters' arithmetic is fp32 (bf16
// inputs are widened). On a row-parallel layer (x sharded over model) A's columns are the
// rank's slice of x, so scale · B·(A_m·x_m) is one more partial sum that the all-reduce after
// the layer adds up; dB is then partial too and the caller sums it over model.
//
// Variants (BlockDims): per-head RMSNorm of q and k before RoPE (qk_norm: qwen3, gemma3_text);
// sandwich norms (gemma2, gemma3_text): x + norm(attn(norm(x))), then the same around the MLP;
// soft-capped attention scores; the sliding layers' own RoPE table (gemma3_text).
//
// With a KV cache (generation) the block writes its keys and values into the cache; a decode
// call (one new token per row, slot > 0) attends against the whole cache and runs its linear
// layers row by row (matmul_decode, fp32 activations).
#pragma once

#include <array>
#include <cstdint>

#include "backends/backend.hpp"
#include "magix/communicator.hpp"
#include "magix/tensor.hpp"
#include "model/layer_params.hpp"

namespace magix::model {

struct BlockDims {
  int64_t B = 0, T = 0;            // rows, positions; N = B * T
  int64_t C = 0;                   // hidden size
  int64_t I = 0;                   // local intermediate size
  int64_t Hq = 0, Hkv = 0, D = 0;  // local heads, head dim
  float eps = 1e-6f;
  float norm_offset = 0.0f;
  float attn_scale = 1.0f;
  Activation act = Activation::kSilu;
  int64_t window = 0;           // this layer's sliding window (0: none)
  float softcap = 0;            // attention score soft-capping (0: none)
  bool qk_norm = false;         // q_norm / k_norm over each head before RoPE
  bool sandwich = false;        // norms on the attention and MLP outputs, pre_feedforward norm
  bool local_rope = false;      // RoPE from BlockContext::rope_local (gemma3_text sliding layers)
  DType compute = DType::kF32;  // dtype of the linear layers' inputs
  bool decode = false;          // one token per row against a KV cache
  int64_t N() const { return B * T; }
  // The dtype of activations that feed GEMMs (fp32 in decode calls).
  DType gemm_dtype() const { return decode ? DType::kF32 : compute; }
};

// What every layer of one call shares.
struct BlockContext {
  const Backend* ops = nullptr;
  const Tensor* rope = nullptr;        // (N, D) F32 rope_table of the N position ids
  const Tensor* rope_local = nullptr;  // (N, D) the same with the local frequencies, or null
  const Tensor* key_valid = nullptr;   // (B, T) I32, or null: every key valid
  const Tensor* segment = nullptr;     // (B, T) I32, or null: no packing
  Communicator* model_comm = nullptr;  // all-reduce after row-parallel layers
};

// One layer's slots of the generation cache. A call with T positions writes slots
// [slot, slot + T) of every row.
struct KvCache {
  Tensor k, v;                    // (B, S, Hkv, D) F32, or BF16 in bf16 mixed precision
  const Tensor* valid = nullptr;  // (B, S) I32: 1 where the slot holds a real token
  int64_t slot = 0;
  // A ring of a sliding-window layer: slot j is held at j mod S (S >= the window), so only the
  // window's last keys are kept; else slot j at j, and the slots written must fit.
  bool ring = false;
};

// A layer's weights as used (gathered over data; linear weights in the compute dtype, norms and
// biases F32), indexed by LayerParam; undefined where the config has none.
using BlockWeights = std::array<Tensor, kNumLayerParams>;
// Their F32 gradients, same layout; accumulated (+=).
using BlockGrads = std::array<Tensor, kNumLayerParams>;

// A layer's low-rank adapters as used (gathered over data like their weights; F32), indexed by
// LayerParam: a (r, in), b (out, r); undefined where the linear layer has none. da, db: their F32
// gradients (+=), undefined where none is wanted.
struct BlockAdapters {
  std::array<Tensor, kNumLayerParams> a, b, da, db;
  float scale = 1;
  // Dropout on each adapter's input (training): Backend::dropout with key
  // splitmix64(dropout_key ^ splitmix64(LayerParam)), rows from dropout_row0 (the global index
  // of this call's first token) and the layer's input columns [col0, col0 + local) of cols.
  float dropout = 0;
  uint64_t dropout_key = 0;
  int64_t dropout_row0 = 0;
  std::array<int64_t, kNumLayerParams> col0{}, cols{};
  // Parts of a fused weight's adapter (they share A): the mask is the fused weight's
  // (splitmix64(fused_of(LayerParam))), one for all its parts.
  std::array<bool, kNumLayerParams> fused_input{};
  bool any() const;
};

// What the backward pass needs of one block's forward pass (the input is kept by the caller).
struct BlockActs {
  Tensor ln1, rstd1;   // (N, C) gemm dtype, (N)
  Tensor q, k, v;      // (N, Hq*D), (N, Hkv*D) x2 gemm dtype; q and k after rope
  Tensor att, lse;     // (N, Hq*D) gemm dtype, (B, Hq, T) F32
  Tensor res2;         // (N, C) input + attention output
  Tensor ln2, rstd2;   // (N, C) gemm dtype, (N)
  Tensor gate, up, h;  // (N, I) each, gemm dtype; h = act(gate) * up
  // qk_norm: q, k before their norm (N, Hq*D), (N, Hkv*D) F32 and the rstd of each head
  // (N*Hq), (N*Hkv).
  Tensor q_raw, k_raw, rstd_q, rstd_k;
  // sandwich: o_proj's and down_proj's outputs before their norms (N, C) F32, and their rstd (N).
  Tensor att_out, rstd_att_out, mlp_out, rstd_mlp_out;
  std::array<Tensor, kNumLayerParams> lora_u;  // (N, r) F32: scale · A·x of each adapted layer
  static BlockActs allocate(const BlockDims& d, const Backend& ops);
};

// Backward scratch, reused by every block.
struct BlockScratch {
  Tensor dln;                  // (N, C) F32
  Tensor datt, dq, dk, dv;     // (N, Hq*D), (N, Hkv*D) x2 F32 (datt: d(o_proj input))
  Tensor dh;                   // (N, I) F32
  Tensor dgate, dup;           // (N, I) gemm dtype
  Tensor dx_in;                // (N, C) d out as a GEMM input (bf16 compute only)
  Tensor datt_in;              // (N, Hq*D) datt as attention's dout (bf16 compute only)
  Tensor dq_in, dk_in, dv_in;  // dq, dk, dv as GEMM inputs (bf16 compute only)
  Tensor dq_raw, dk_raw;       // qk_norm: d(q, k before their norm) F32
  Tensor dnormed;              // sandwich: d(an output norm's input) (N, C) F32
  static BlockScratch allocate(const BlockDims& d, const Backend& ops);
};

// out (N, C) = block(inp (N, C)); fills acts. With a cache, writes the layer's keys and values
// into it (and a decode call attends against it). `lora`: the layer's adapters (not in decode
// calls), or null.
void block_forward(Tensor& out, const Tensor& inp, const BlockWeights& w, BlockActs& acts,
                   const BlockDims& d, const BlockContext& ctx, KvCache* cache = nullptr,
                   const BlockAdapters* lora = nullptr);

// dx (N, C) holds d loss / d out on entry and d loss / d inp on exit. Undefined gradients in `g`
// (frozen parameters) are not computed. `lora`: the adapters the forward pass used, or null.
void block_backward(Tensor& dx, const Tensor& inp, const BlockWeights& w, BlockGrads& g,
                    const BlockActs& acts, BlockScratch& s, const BlockDims& d,
                    const BlockContext& ctx, BlockAdapters* lora = nullptr);

}  // namespace magix::model
