// The op-table sweep, rejected calls: dtype combinations an op does not list, wrong shapes and
// tensors of another device must throw magix::Error (never crash, never compute), on every
// backend. Calls known to misbehave (attention_forward's q, k, v, out of another device; a
// decode cache with 0 kv heads) are in backend_ops_bugs_test.cpp.
#include <fmt/format.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "backend_ops_util.hpp"

namespace magix::test {
namespace {

// Named calls, each expected to throw.
using Calls = std::vector<std::pair<std::string, std::function<void()>>>;

class OpErrors : public BackendOpsTest {
 protected:
  Tensor z(const Shape& shape, DType dtype = DType::kF32) const { return be().zeros(shape, dtype); }
  // Each call must throw magix::Error; with name_the_op, its message must contain the op (the
  // first word of the call's name), as the table requires of dtype errors.
  void expect_all_throw(const Calls& calls, bool name_the_op = false) {
    for (const auto& [name, call] : calls) {
      const std::string op = name_the_op ? name.substr(0, name.find(' ')) : "";
      expect_error(name + " on " + dev_name(), call, op);
    }
  }
};

constexpr DType F = DType::kF32, H = DType::kBF16, I = DType::kI32;

TEST_P(OpErrors, UnsupportedDtypeCombinationsThrow) {
  const Backend& b = be();
  Tensor f4 = z({4}), h4 = z({4}, H), i4 = z({4}, I);
  Tensor f23 = z({2, 3}), h23 = z({2, 3}, H), f53 = z({5, 3}), h53 = z({5, 3}, H);
  Tensor f25 = z({2, 5}), h25 = z({2, 5}, H), h5 = z({5}, H), i23 = z({2, 3}, I),
         i53 = z({5, 3}, I);
  Tensor f3 = z({3}), h3 = z({3}, H), f2 = z({2}), h2 = z({2}, H), i2 = z({2}, I);
  Tensor q = z({1, 2, 2, 4}), qh = z({1, 2, 2, 4}, H), lse = z({1, 2, 2}), lseh = z({1, 2, 2}, H);
  Tensor mask_f = z({1, 2}), pos = z({2}, I), freq = z({2}), tbl = z({2, 4}), tbl_h = z({2, 4}, H);
  Tensor cache = z({1, 3, 2, 4}), cache_h = z({1, 3, 2, 4}, H), valid = z({1, 3}, I);
  Tensor qd = z({1, 2, 4}), qdh = z({1, 2, 4}, H), valid_f = z({1, 3});
  Tensor x = z({2, 1, 4}), xh = z({2, 1, 4}, H), xi = z({2, 1, 4}, I), f52 = z({5, 2}),
         h52 = z({5, 2}, H);
  const AttentionMask bad_valid{&mask_f, nullptr, 0}, bad_segment{nullptr, &mask_f, 0};
  AdamWScalars k;
  const Calls calls = {
      {"copy F32 -> I32", [&] { b.copy(i4, f4); }},
      {"copy I32 -> F32", [&] { b.copy(f4, i4); }},
      {"copy I32 -> BF16", [&] { b.copy(h4, i4); }},
      {"add BF16 += F32", [&] { b.add(h4, f4); }},
      {"add F32 += BF16", [&] { b.add(f4, h4); }},
      {"add I32 += I32", [&] { b.add(i4, i4); }},
      {"scale BF16", [&] { b.scale(h4, 2); }},
      {"scale I32", [&] { b.scale(i4, 2); }},
      {"dropout BF16 out", [&] { b.dropout(h4, f4, 1, 0, 0, 4, 0.5f); }},
      {"dropout I32 inp", [&] { b.dropout(f4, i4, 1, 0, 0, 4, 0.5f); }},
      {"matmul_forward F32 inp x BF16 weight", [&] { b.matmul_forward(f25, f23, h53, nullptr); }},
      {"matmul_forward BF16 inp x F32 weight", [&] { b.matmul_forward(f25, h23, f53, nullptr); }},
      {"matmul_forward F32 x F32 -> BF16", [&] { b.matmul_forward(h25, f23, f53, nullptr); }},
      {"matmul_forward BF16 bias", [&] { b.matmul_forward(f25, h23, h53, &h5); }},
      {"matmul_forward I32 x I32", [&] { b.matmul_forward(f25, i23, i53, nullptr); }},
      {"matmul_backward F32 dout, BF16 inp and weight",
       [&] { b.matmul_backward(&f23, nullptr, nullptr, f25, h23, h53); }},
      {"matmul_backward BF16 dinp",
       [&] { b.matmul_backward(&h23, nullptr, nullptr, h25, h23, h53); }},
      {"matmul_backward BF16 dweight",
       [&] { b.matmul_backward(nullptr, &h53, nullptr, f25, f23, f53); }},
      {"matmul_backward BF16 dbias",
       [&] { b.matmul_backward(nullptr, nullptr, &h5, f25, f23, f53); }},
      {"matmul_decode BF16 inp", [&] { b.matmul_decode(f25, h23, h53, nullptr); }},
      {"matmul_decode BF16 out", [&] { b.matmul_decode(h25, f23, h53, nullptr); }},
      {"matmul_decode I32 weight", [&] { b.matmul_decode(f25, f23, i53, nullptr); }},
      {"matmul_decode BF16 bias", [&] { b.matmul_decode(f25, f23, f53, &h5); }},
      {"residual_forward BF16 y", [&] { b.residual_forward(f23, f23, h23, nullptr); }},
      {"residual_forward BF16 out", [&] { b.residual_forward(h23, f23, f23, nullptr); }},
      {"residual_forward BF16 bias", [&] { b.residual_forward(f23, f23, f23, &h3); }},
      {"bias_backward BF16 dout", [&] { b.bias_backward(f3, h23); }},
      {"bias_backward BF16 dbias", [&] { b.bias_backward(h3, f23); }},
      {"rmsnorm_forward BF16 inp", [&] { b.rmsnorm_forward(f23, f2, h23, f3, 1e-6f, 0); }},
      {"rmsnorm_forward BF16 weight", [&] { b.rmsnorm_forward(f23, f2, f23, h3, 1e-6f, 0); }},
      {"rmsnorm_forward BF16 rstd", [&] { b.rmsnorm_forward(f23, h2, f23, f3, 1e-6f, 0); }},
      {"rmsnorm_forward I32 out", [&] { b.rmsnorm_forward(i23, f2, f23, f3, 1e-6f, 0); }},
      {"rmsnorm_backward BF16 dinp", [&] { b.rmsnorm_backward(h23, &f3, f23, f23, f3, f2, 0); }},
      {"rmsnorm_backward BF16 dout", [&] { b.rmsnorm_backward(f23, &f3, h23, f23, f3, f2, 0); }},
      {"rmsnorm_backward BF16 dweight", [&] { b.rmsnorm_backward(f23, &h3, f23, f23, f3, f2, 0); }},
      {"softcap_forward I32", [&] { b.softcap_forward(i23, 2.0f); }},
      {"softcap_forward cap 0", [&] { b.softcap_forward(f23, 0.0f); }},
      {"softcap_backward BF16 dx, F32 y", [&] { b.softcap_backward(h23, f23, 2.0f); }},
      {"rope_table BF16 table", [&] { b.rope_table(tbl_h, pos, freq); }},
      {"rope_table F32 pos", [&] { b.rope_table(tbl, f2, freq); }},
      {"rope_table BF16 inv_freq", [&] { b.rope_table(tbl, pos, h2); }},
      {"rope_forward I32 x", [&] { b.rope_forward(xi, tbl); }},
      {"rope_forward BF16 table", [&] { b.rope_forward(x, tbl_h); }},
      {"rope_backward BF16 dx", [&] { b.rope_backward(xh, tbl); }},
      {"attention_forward BF16 q, k, v, F32 out",
       [&] { b.attention_forward(q, lse, qh, qh, qh, 1, {}); }},
      {"attention_forward F32 q, BF16 k and v",
       [&] { b.attention_forward(q, lse, q, qh, qh, 1, {}); }},
      {"attention_forward BF16 lse", [&] { b.attention_forward(q, lseh, q, q, q, 1, {}); }},
      {"attention_forward F32 key_valid",
       [&] { b.attention_forward(q, lse, q, q, q, 1, bad_valid); }},
      {"attention_forward F32 segment",
       [&] { b.attention_forward(q, lse, q, q, q, 1, bad_segment); }},
      {"attention_backward BF16 dq",
       [&] { b.attention_backward(qh, q, q, q, q, lse, q, q, q, 1, {}); }},
      {"attention_backward BF16 dout",
       [&] { b.attention_backward(q, q, q, qh, q, lse, q, q, q, 1, {}); }},
      {"attention_decode BF16 q",
       [&] { b.attention_decode(qd, qdh, cache, cache, valid, 0, 1, 0, 0); }},
      {"attention_decode BF16 k, F32 v cache",
       [&] { b.attention_decode(qd, qd, cache_h, cache, valid, 0, 1, 0, 0); }},
      {"attention_decode F32 valid",
       [&] { b.attention_decode(qd, qd, cache, cache, valid_f, 0, 1, 0, 0); }},
      {"glu_forward F32 gate, BF16 up", [&] { b.glu_forward(f4, f4, h4, Activation::kSilu); }},
      {"glu_forward F32 -> BF16", [&] { b.glu_forward(h4, f4, f4, Activation::kSilu); }},
      {"glu_forward BF16 -> F32", [&] { b.glu_forward(f4, h4, h4, Activation::kGeluTanh); }},
      {"glu_backward BF16 dout", [&] { b.glu_backward(f4, f4, h4, f4, f4, Activation::kSilu); }},
      {"glu_backward BF16 grads, F32 gate",
       [&] { b.glu_backward(h4, h4, f4, f4, f4, Activation::kSilu); }},
      {"glu_backward F32 grads, BF16 gate",
       [&] { b.glu_backward(f4, f4, f4, h4, h4, Activation::kSilu); }},
      {"embedding_forward I32 table", [&] { b.embedding_forward(f23, i2, i53, 0, 1); }},
      {"embedding_forward F32 ids", [&] { b.embedding_forward(f23, f2, f53, 0, 1); }},
      {"embedding_forward BF16 out", [&] { b.embedding_forward(h23, i2, f53, 0, 1); }},
      {"embedding_backward BF16 dtable", [&] { b.embedding_backward(h53, f23, i2, 0, 1); }},
      {"embedding_backward F32 ids", [&] { b.embedding_backward(f53, f23, f2, 0, 1); }},
      {"cross_entropy_max I32 logits", [&] { b.cross_entropy_max(f2, i23); }},
      {"cross_entropy_sumexp F32 targets", [&] { b.cross_entropy_sumexp(f2, f2, f23, f2, f2, 0); }},
      {"cross_entropy_sumexp I32 logits", [&] { b.cross_entropy_sumexp(f2, f2, i23, f2, i2, 0); }},
      {"cross_entropy_loss BF16 losses", [&] { b.cross_entropy_loss(h2, f2, f2, f2, i2); }},
      {"cross_entropy_backward BF16 dlogits of F32 logits",
       [&] { b.cross_entropy_backward(h23, f23, f2, f2, i2, 1, 0); }},
      {"cross_entropy_backward F32 dlogits of BF16 logits",
       [&] { b.cross_entropy_backward(f23, h23, f2, f2, i2, 1, 0); }},
      {"cross_entropy_backward F32 targets",
       [&] { b.cross_entropy_backward(f23, f23, f2, f2, f2, 1, 0); }},
      {"adamw_update I32 w", [&] { b.adamw_update(i4, f4, f4, f4, k); }},
      {"adamw_update BF16 g", [&] { b.adamw_update(f4, h4, f4, f4, k); }},
      {"adamw_update BF16 m", [&] { b.adamw_update(f4, f4, h4, f4, k); }},
      {"sum_of_squares BF16", [&] { (void)b.sum_of_squares(h4); }},
      {"lora_merge BF16 w", [&] { b.lora_merge(h53, f23, f52, 1, nullptr); }},
      {"lora_merge BF16 a", [&] { b.lora_merge(f53, h23, f52, 1, nullptr); }},
      {"lora_merge I32 base", [&] { b.lora_merge(f53, f23, f52, 1, &i4); }},
      {"lora_project BF16 dw", [&] { b.lora_project(f23, f52, h53, f23, f52, 1); }},
      {"lora_project BF16 db", [&] { b.lora_project(f23, h52, f53, f23, f52, 1); }},
  };
  expect_all_throw(calls, /*name_the_op=*/true);
}

TEST_P(OpErrors, WrongShapesThrow) {
  const Backend& b = be();
  Tensor f4 = z({4}), f5 = z({5}), f3 = z({3}), f2 = z({2}), f6 = z({6}), i2 = z({2}, I);
  Tensor f23 = z({2, 3}), f24 = z({2, 4}), f25 = z({2, 5}), f26 = z({2, 6}), f53 = z({5, 3});
  Tensor f54 = z({5, 4}), f35 = z({3, 5}), f52 = z({5, 2}), f22 = z({2, 2});
  Tensor q = z({1, 2, 2, 4}), kv = z({1, 2, 1, 4}), lse = z({1, 2, 2});
  Tensor cache = z({1, 3, 2, 4}), valid = z({1, 3}, I), qd = z({1, 2, 4});
  Tensor f20 = z({2, 0}), qd3 = z({1, 2, 3}), qd34 = z({1, 3, 4});
  const Tensor mask3 = z({1, 3}, I);
  const AttentionMask long_valid{&mask3, nullptr, 0};
  AdamWScalars k;
  const Calls calls = {
      {"zeros with a negative dim",
       [&] {
         (void)b.zeros({2, -1}, F);
       }},
      {"empty with a negative dim", [&] { (void)b.empty({-3}, F); }},
      {"copy 4 elements into 5", [&] { b.copy(f5, f4); }},
      {"add 5 elements to 4", [&] { b.add(f4, f5); }},
      {"dropout 5 elements into 4", [&] { b.dropout(f4, f5, 1, 0, 0, 5, 0.5f); }},
      {"dropout p 1", [&] { b.dropout(f4, f4, 1, 0, 0, 4, 1.0f); }},
      {"dropout columns beyond cols", [&] { b.dropout(f4, f4, 1, 0, 2, 4, 0.5f); }},
      {"matmul_forward C 3 vs weight C 4", [&] { b.matmul_forward(f25, f23, f54, nullptr); }},
      {"matmul_forward out of 2x4", [&] { b.matmul_forward(f24, f23, f53, nullptr); }},
      {"matmul_forward bias of 4", [&] { b.matmul_forward(f25, f23, f53, &f4); }},
      {"matmul_forward 1-D weight", [&] { b.matmul_forward(f2, f23, f3, nullptr); }},
      {"matmul_forward 3-D weight",
       [&] {
         b.matmul_forward(f25, f23, z({1, 5, 3}), nullptr);
       }},
      {"matmul_backward dout 2x4",
       [&] { b.matmul_backward(&f23, nullptr, nullptr, f24, f23, f53); }},
      {"matmul_backward dinp 2x4",
       [&] { b.matmul_backward(&f24, nullptr, nullptr, f25, f23, f53); }},
      {"matmul_backward dweight 5x4",
       [&] { b.matmul_backward(nullptr, &f54, nullptr, f25, f23, f53); }},
      {"matmul_backward dbias 4", [&] { b.matmul_backward(nullptr, nullptr, &f4, f25, f23, f53); }},
      {"matmul_decode C 3 vs weight C 4", [&] { b.matmul_decode(f25, f23, f54, nullptr); }},
      {"matmul_decode out of 2x4", [&] { b.matmul_decode(f24, f23, f53, nullptr); }},
      {"residual_forward y of 2x4", [&] { b.residual_forward(f23, f23, f24, nullptr); }},
      {"residual_forward bias of 4", [&] { b.residual_forward(f23, f23, f23, &f4); }},
      {"bias_backward dbias of 4", [&] { b.bias_backward(f4, f23); }},
      {"rmsnorm_forward weight of 4", [&] { b.rmsnorm_forward(f23, f2, f23, f4, 1e-6f, 0); }},
      {"rmsnorm_forward rstd of 3", [&] { b.rmsnorm_forward(f23, f3, f23, f3, 1e-6f, 0); }},
      {"rmsnorm_forward out of 2x4", [&] { b.rmsnorm_forward(f24, f2, f23, f3, 1e-6f, 0); }},
      {"softcap_backward y of 2x4", [&] { b.softcap_backward(f23, f24, 2.0f); }},
      {"rmsnorm_forward C = 0", [&] { b.rmsnorm_forward(f20, f2, f20, z({0}), 1, 0); }},
      {"rmsnorm_backward dinp of 2x4", [&] { b.rmsnorm_backward(f24, &f3, f23, f23, f3, f2, 0); }},
      {"rmsnorm_backward dweight of 4", [&] { b.rmsnorm_backward(f23, &f4, f23, f23, f3, f2, 0); }},
      {"rope_table table of 2x3", [&] { b.rope_table(f23, i2, f2); }},
      {"rope_table table of 3x4 for 2 positions",
       [&] {
         Tensor t = z({3, 4});
         b.rope_table(t, i2, f2);
       }},
      {"rope_forward x not (N, H, D)", [&] { b.rope_forward(f23, f24); }},
      {"rope_forward odd table width", [&] { b.rope_forward(f26, f23); }},
      {"rope_backward dx not (N, H, D)", [&] { b.rope_backward(f26, f24); }},
      {"attention_forward 3-D q",
       [&] {
         b.attention_forward(q, lse, z({2, 2, 4}), kv, kv, 1, {});
       }},
      {"attention_forward k head dim 3",
       [&] {
         b.attention_forward(q, lse, q, z({1, 2, 1, 3}), kv, 1, {});
       }},
      {"attention_forward k with T=3",
       [&] {
         b.attention_forward(q, lse, q, z({1, 3, 1, 4}), z({1, 3, 1, 4}), 1, {});
       }},
      {"attention_forward v unlike k", [&] { b.attention_forward(q, lse, q, kv, q, 1, {}); }},
      {"attention_forward out unlike q", [&] { b.attention_forward(kv, lse, q, kv, kv, 1, {}); }},
      {"attention_forward lse of 3", [&] { b.attention_forward(q, f3, q, kv, kv, 1, {}); }},
      {"attention_forward 3 query heads, 2 kv heads",
       [&] {
         Tensor q3 = z({1, 2, 3, 4}), lse3 = z({1, 3, 2});
         b.attention_forward(q3, lse3, q3, z({1, 2, 2, 4}), z({1, 2, 2, 4}), 1, {});
       }},
      {"attention_forward 0 kv heads",
       [&] {
         b.attention_forward(q, lse, q, z({1, 2, 0, 4}), z({1, 2, 0, 4}), 1, {});
       }},
      {"attention_forward key_valid of 3",
       [&] { b.attention_forward(q, lse, q, kv, kv, 1, long_valid); }},
      {"attention_backward dk unlike k",
       [&] { b.attention_backward(q, q, kv, q, q, lse, q, kv, kv, 1, {}); }},
      {"attention_backward dout unlike q",
       [&] { b.attention_backward(q, kv, kv, kv, q, lse, q, kv, kv, 1, {}); }},
      {"attention_backward lse of 3",
       [&] { b.attention_backward(q, kv, kv, q, q, f3, q, kv, kv, 1, {}); }},
      {"attention_decode slot = S",
       [&] { b.attention_decode(qd, qd, cache, cache, valid, 3, 1, 0, 0); }},
      {"attention_decode slot = -1",
       [&] { b.attention_decode(qd, qd, cache, cache, valid, -1, 1, 0, 0); }},
      {"attention_decode valid of 2",
       [&] { b.attention_decode(qd, qd, cache, cache, i2, 0, 1, 0, 0); }},
      {"attention_decode q head dim 3",
       [&] { b.attention_decode(qd3, qd3, cache, cache, valid, 0, 1, 0, 0); }},
      {"attention_decode 3 query heads, 2 kv heads",
       [&] { b.attention_decode(qd34, qd34, cache, cache, valid, 0, 1, 0, 0); }},
      {"attention_decode 4-D q",
       [&] { b.attention_decode(q, q, cache, cache, valid, 0, 1, 0, 0); }},
      {"attention_decode v_cache unlike k_cache",
       [&] {
         b.attention_decode(qd, qd, cache, z({1, 3, 1, 4}), valid, 0, 1, 0, 0);
       }},
      {"glu_forward up of 5", [&] { b.glu_forward(f4, f4, f5, Activation::kSilu); }},
      {"glu_forward out of 5", [&] { b.glu_forward(f5, f4, f4, Activation::kSilu); }},
      {"glu_backward dgate of 5", [&] { b.glu_backward(f5, f4, f4, f4, f4, Activation::kSilu); }},
      {"embedding_forward out of 2x4", [&] { b.embedding_forward(f24, i2, f53, 0, 1); }},
      {"embedding_forward row_start -1", [&] { b.embedding_forward(f23, i2, f53, -1, 1); }},
      {"embedding_backward dout of 2x4", [&] { b.embedding_backward(f53, f24, i2, 0, 1); }},
      {"cross_entropy_max row_max of 3", [&] { b.cross_entropy_max(f3, f23); }},
      {"cross_entropy_max V = 0",
       [&] {
         b.cross_entropy_max(f2, z({2, 0}));
       }},
      {"cross_entropy_sumexp targets of 3",
       [&] { b.cross_entropy_sumexp(f2, f2, f23, f2, z({3}, I), 0); }},
      {"cross_entropy_sumexp sumexp of 3", [&] { b.cross_entropy_sumexp(f3, f2, f23, f2, i2, 0); }},
      {"cross_entropy_loss losses of 3", [&] { b.cross_entropy_loss(f3, f2, f2, f2, i2); }},
      {"cross_entropy_backward dlogits of 2x4",
       [&] { b.cross_entropy_backward(f24, f23, f2, f2, i2, 1, 0); }},
      {"cross_entropy_backward sumexp of 3",
       [&] { b.cross_entropy_backward(f23, f23, f2, f3, i2, 1, 0); }},
      {"adamw_update m of 5", [&] { b.adamw_update(f4, f4, f5, f4, k); }},
      {"lora_merge a (2, 4) for w (5, 3)", [&] { b.lora_merge(f53, f24, f52, 1, nullptr); }},
      {"lora_merge b (5, 3) for rank 2", [&] { b.lora_merge(f53, f23, f53, 1, nullptr); }},
      {"lora_merge base of 6", [&] { b.lora_merge(f53, f23, f52, 1, &f6); }},
      {"lora_project da (3, 5)", [&] { b.lora_project(f35, f52, f53, f23, f52, 1); }},
      {"lora_project db (2, 2)", [&] { b.lora_project(f23, f22, f53, f23, f52, 1); }},
  };
  expect_all_throw(calls);
}

TEST_P(OpErrors, TensorsOfAnotherDeviceThrow) {
  const Backend& b = be();
  auto x = [&](const Shape& shape, DType dtype = F) { return foreign(shape, dtype); };
  Tensor f4 = z({4}), f23 = z({2, 3}), f25 = z({2, 5}), f53 = z({5, 3}), f3 = z({3});
  Tensor f2 = z({2}), i2 = z({2}, I), f52 = z({5, 2}), rope = z({2, 1, 4}), x5 = x({5});
  Tensor q = z({1, 2, 2, 4}), kv = z({1, 2, 1, 4}), lse = z({1, 2, 2}), qd = z({1, 2, 4});
  Tensor cache = z({1, 3, 1, 4}), valid = z({1, 3}, I);
  Tensor x4 = x({4}), x23 = x({2, 3}), x25 = x({2, 5}), x53 = x({5, 3}), x2 = x({2}),
         xq = x(q.shape());
  Tensor xqd = x(qd.shape()), xrope = x({2, 1, 4}), rope_tbl = z({2, 4});
  const Tensor xvalid = x({1, 2}, I);
  const AttentionMask foreign_valid{&xvalid, nullptr, 0};
  AdamWScalars k;
  Calls calls = {
      {"fill_zero", [&] { b.fill_zero(x4); }},
      {"add dst", [&] { b.add(x4, f4); }},
      {"add src", [&] { b.add(f4, x4); }},
      {"scale x", [&] { b.scale(x4, 2); }},
      {"dropout out", [&] { b.dropout(x4, f4, 1, 0, 0, 4, 0.5f); }},
      {"dropout inp", [&] { b.dropout(f4, x4, 1, 0, 0, 4, 0.5f); }},
      {"matmul_forward out", [&] { b.matmul_forward(x25, f23, f53, nullptr); }},
      {"matmul_forward inp", [&] { b.matmul_forward(f25, x23, f53, nullptr); }},
      {"matmul_forward weight", [&] { b.matmul_forward(f25, f23, x53, nullptr); }},
      {"matmul_forward bias", [&] { b.matmul_forward(f25, f23, f53, &x5); }},
      {"matmul_backward dinp", [&] { b.matmul_backward(&x23, nullptr, nullptr, f25, f23, f53); }},
      {"matmul_backward dout", [&] { b.matmul_backward(&f23, nullptr, nullptr, x25, f23, f53); }},
      {"matmul_decode inp", [&] { b.matmul_decode(f25, x23, f53, nullptr); }},
      {"matmul_decode weight", [&] { b.matmul_decode(f25, f23, x53, nullptr); }},
      {"residual_forward y", [&] { b.residual_forward(f23, f23, x23, nullptr); }},
      {"bias_backward dout", [&] { b.bias_backward(f3, x23); }},
      {"rmsnorm_forward inp", [&] { b.rmsnorm_forward(f23, f2, x23, f3, 1e-6f, 0); }},
      {"rmsnorm_forward out", [&] { b.rmsnorm_forward(x23, f2, f23, f3, 1e-6f, 0); }},
      {"rmsnorm_backward dinp", [&] { b.rmsnorm_backward(x23, nullptr, f23, f23, f3, f2, 0); }},
      {"rope_table pos", [&] { b.rope_table(rope_tbl, x({2}, I), f2); }},
      {"rope_forward x", [&] { b.rope_forward(xrope, rope_tbl); }},
      {"rope_backward table",
       [&] {
         b.rope_backward(rope, x({2, 4}));
       }},
      {"attention_forward lse", [&] { b.attention_forward(q, xq, q, kv, kv, 1, {}); }},
      {"attention_forward key_valid",
       [&] { b.attention_forward(q, lse, q, kv, kv, 1, foreign_valid); }},
      {"attention_backward dq",
       [&] { b.attention_backward(xq, kv, kv, q, q, lse, q, kv, kv, 1, {}); }},
      {"attention_backward q",
       [&] { b.attention_backward(q, kv, kv, q, q, lse, xq, kv, kv, 1, {}); }},
      {"attention_decode q", [&] { b.attention_decode(qd, xqd, cache, cache, valid, 0, 1, 0, 0); }},
      {"attention_decode k_cache",
       [&] { b.attention_decode(qd, qd, x(cache.shape()), cache, valid, 0, 1, 0, 0); }},
      {"glu_forward gate", [&] { b.glu_forward(f4, x4, f4, Activation::kSilu); }},
      {"glu_forward out", [&] { b.glu_forward(x4, f4, f4, Activation::kSilu); }},
      {"glu_backward dgate", [&] { b.glu_backward(x4, f4, f4, f4, f4, Activation::kSilu); }},
      {"embedding_forward table", [&] { b.embedding_forward(f23, i2, x53, 0, 1); }},
      {"embedding_forward ids", [&] { b.embedding_forward(f23, x({2}, I), f53, 0, 1); }},
      {"embedding_backward dtable", [&] { b.embedding_backward(x53, f23, i2, 0, 1); }},
      {"cross_entropy_max logits", [&] { b.cross_entropy_max(f2, x23); }},
      {"cross_entropy_sumexp targets",
       [&] { b.cross_entropy_sumexp(f2, f2, f23, f2, x({2}, I), 0); }},
      {"cross_entropy_loss losses", [&] { b.cross_entropy_loss(x2, f2, f2, f2, i2); }},
      {"cross_entropy_backward dlogits",
       [&] { b.cross_entropy_backward(x23, f23, f2, f2, i2, 1, 0); }},
      {"adamw_update w", [&] { b.adamw_update(x4, f4, f4, f4, k); }},
      {"adamw_update g", [&] { b.adamw_update(f4, x4, f4, f4, k); }},
      {"sum_of_squares", [&] { (void)b.sum_of_squares(x4); }},
      {"lora_merge w", [&] { b.lora_merge(x53, f23, f52, 1, nullptr); }},
      {"lora_merge base", [&] { b.lora_merge(f53, f23, f52, 1, &x53); }},
      {"lora_project dw", [&] { b.lora_project(f23, f52, x53, f23, f52, 1); }},
  };
  // Only the CPU backend must refuse a device tensor in copy (device backends copy from and to
  // the host by design).
  if (GetParam() == Device::kCpu) {
    calls.push_back({"copy from another device", [&] { b.copy(f4, x4); }});
    calls.push_back({"copy to another device", [&] { b.copy(x4, f4); }});
  }
  expect_all_throw(calls);
}

INSTANTIATE_TEST_SUITE_P(Backends, OpErrors, ::testing::ValuesIn(swept_devices()),
                         device_param_name);

}  // namespace
}  // namespace magix::test
