#include "block.hpp"

#include <algorithm>
#include <span>

#include "kernels/cpu/matmul.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/cpu/rope.hpp"

namespace magix::model {
namespace {

float* f(Tensor& t) {
  return t.data<float>();
}
const float* f(const Tensor& t) {
  return t.data<float>();
}

// Row-parallel output: the partial sums of every model rank add up to the layer's output.
void all_reduce_model(float* x, int64_t n, const BlockDims& d) {
  if (d.model_comm && d.model_comm->size() > 1) {
    d.model_comm->all_reduce(std::span<float>(x, static_cast<size_t>(n)), ReduceOp::kSum);
  }
}

// out (N, C) = residual + y + bias
void add_residual_bias(float* out, const float* residual, const float* y, const float* bias,
                       int64_t N, int64_t C) {
#pragma omp parallel for
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      float v = y[n * C + c];
      if (bias) v += bias[c];
      out[n * C + c] = residual[n * C + c] + v;
    }
  }
}

void column_sums(float* dbias, const float* dy, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) dbias[c] += dy[n * C + c];
  }
}

}  // namespace

BlockActs BlockActs::allocate(const BlockDims& d) {
  const int64_t N = d.N();
  BlockActs a;
  a.ln1 = Tensor({N, d.C});
  a.rstd1 = Tensor({N});
  a.q = Tensor({N, d.Hq * d.D});
  a.k = Tensor({N, d.Hkv * d.D});
  a.v = Tensor({N, d.Hkv * d.D});
  a.att = Tensor({N, d.Hq * d.D});
  a.lse = Tensor({d.B, d.Hq, d.T});
  a.res2 = Tensor({N, d.C});
  a.ln2 = Tensor({N, d.C});
  a.rstd2 = Tensor({N});
  a.gate = Tensor({N, d.I});
  a.up = Tensor({N, d.I});
  a.h = Tensor({N, d.I});
  return a;
}

BlockScratch BlockScratch::allocate(const BlockDims& d) {
  const int64_t N = d.N();
  BlockScratch s;
  s.dln = Tensor({N, d.C});
  s.datt = Tensor({N, d.Hq * d.D});
  s.dq = Tensor({N, d.Hq * d.D});
  s.dk = Tensor({N, d.Hkv * d.D});
  s.dv = Tensor({N, d.Hkv * d.D});
  s.dh = Tensor({N, d.I});
  s.dgate = Tensor({N, d.I});
  s.dup = Tensor({N, d.I});
  return s;
}

void block_forward(float* out, const float* inp, const BlockWeights& w, BlockActs& a,
                   const BlockDims& d) {
  const int64_t N = d.N(), C = d.C, QD = d.Hq * d.D, KD = d.Hkv * d.D;
  // attention: ln1 -> q, k, v -> rope -> attention -> o_proj (+ all-reduce) -> residual
  cpu::rmsnorm_forward(f(a.ln1), f(a.rstd1), inp, w.ln1, N, C, d.eps, d.norm_offset);
  cpu::matmul_forward(f(a.q), f(a.ln1), w.wq, w.bq, N, C, QD);
  cpu::matmul_forward(f(a.k), f(a.ln1), w.wk, w.bk, N, C, KD);
  cpu::matmul_forward(f(a.v), f(a.ln1), w.wv, w.bv, N, C, KD);
  cpu::rope_forward(f(a.q), d.pos, d.inv_freq, N, d.Hq, d.D);
  cpu::rope_forward(f(a.k), d.pos, d.inv_freq, N, d.Hkv, d.D);
  cpu::attention_forward(f(a.att), f(a.lse), f(a.q), f(a.k), f(a.v), d.B, d.T, d.Hq, d.Hkv, d.D,
                         d.attn_scale, d.mask);
  // o_proj output goes to `out` first (a free (N, C) buffer), then res2 = inp + out + bo.
  cpu::matmul_forward(out, f(a.att), w.wo, nullptr, N, QD, C);
  all_reduce_model(out, N * C, d);
  add_residual_bias(f(a.res2), inp, out, w.bo, N, C);
  // MLP: ln2 -> gate, up -> act(gate) * up -> down_proj (+ all-reduce) -> residual
  cpu::rmsnorm_forward(f(a.ln2), f(a.rstd2), f(a.res2), w.ln2, N, C, d.eps, d.norm_offset);
  cpu::matmul_forward(f(a.gate), f(a.ln2), w.wg, w.bg, N, C, d.I);
  cpu::matmul_forward(f(a.up), f(a.ln2), w.wu, w.bu, N, C, d.I);
  cpu::glu_forward(f(a.h), f(a.gate), f(a.up), N * d.I, d.act);
  cpu::matmul_forward(out, f(a.h), w.wd, nullptr, N, d.I, C);
  all_reduce_model(out, N * C, d);
  add_residual_bias(out, f(a.res2), out, w.bd, N, C);
}

void block_backward(float* dx, const float* inp, const BlockWeights& w, BlockGrads& g,
                    const BlockActs& a, BlockScratch& s, const BlockDims& d) {
  const int64_t N = d.N(), C = d.C, QD = d.Hq * d.D, KD = d.Hkv * d.D;
  // MLP. dx = d out = d res2 (residual path) and d down_proj output.
  if (g.bd) column_sums(g.bd, dx, N, C);
  s.dh.fill_zero();
  cpu::matmul_backward(f(s.dh), g.wd, nullptr, dx, f(a.h), w.wd, N, d.I, C);
  s.dgate.fill_zero();
  s.dup.fill_zero();
  cpu::glu_backward(f(s.dgate), f(s.dup), f(s.dh), f(a.gate), f(a.up), N * d.I, d.act);
  s.dln.fill_zero();
  cpu::matmul_backward(f(s.dln), g.wg, g.bg, f(s.dgate), f(a.ln2), w.wg, N, C, d.I);
  cpu::matmul_backward(f(s.dln), g.wu, g.bu, f(s.dup), f(a.ln2), w.wu, N, C, d.I);
  all_reduce_model(f(s.dln), N * C, d);  // column-parallel inputs: sum over model ranks
  cpu::rmsnorm_backward(dx, g.ln2, f(s.dln), f(a.res2), w.ln2, f(a.rstd2), N, C, d.norm_offset);
  // Attention. dx = d res2 = d inp (residual path) and d o_proj output.
  if (g.bo) column_sums(g.bo, dx, N, C);
  s.datt.fill_zero();
  cpu::matmul_backward(f(s.datt), g.wo, nullptr, dx, f(a.att), w.wo, N, QD, C);
  s.dq.fill_zero();
  s.dk.fill_zero();
  s.dv.fill_zero();
  cpu::attention_backward(f(s.dq), f(s.dk), f(s.dv), f(s.datt), f(a.att), f(a.lse), f(a.q), f(a.k),
                          f(a.v), d.B, d.T, d.Hq, d.Hkv, d.D, d.attn_scale, d.mask);
  cpu::rope_backward(f(s.dq), d.pos, d.inv_freq, N, d.Hq, d.D);
  cpu::rope_backward(f(s.dk), d.pos, d.inv_freq, N, d.Hkv, d.D);
  s.dln.fill_zero();
  cpu::matmul_backward(f(s.dln), g.wq, g.bq, f(s.dq), f(a.ln1), w.wq, N, C, QD);
  cpu::matmul_backward(f(s.dln), g.wk, g.bk, f(s.dk), f(a.ln1), w.wk, N, C, KD);
  cpu::matmul_backward(f(s.dln), g.wv, g.bv, f(s.dv), f(a.ln1), w.wv, N, C, KD);
  all_reduce_model(f(s.dln), N * C, d);
  cpu::rmsnorm_backward(dx, g.ln1, f(s.dln), inp, w.ln1, f(a.rstd1), N, C, d.norm_offset);
}

}  // namespace magix::model
