// The op table's argument checks live once, in Backend (src/backends/op_checks.cpp,
// op_checks_sequence.cpp): every op called with a bad argument (a wrong dtype, a wrong shape, a
// tensor of another device, a scalar out of range) fails with the same message on
// - the CPU backend,
// - the emulated device (tests/common/emulated_device.hpp), whose kernels check nothing,
// - a backend whose kernels do nothing but count their calls,
// and no kernel is reached: the error is thrown at the op's check in op_check* (Error::where)
// before the backend's kernel runs.
#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../common/emulated_device.hpp"
#include "backends/backend.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "magix/error.hpp"

namespace magix::test {
namespace {

constexpr DType F = DType::kF32, H = DType::kBF16, I = DType::kI32;
constexpr Device kOther = Device::kCuda;  // the device of the two test backends below

// A tensor of `device` over fresh host memory (never read by the kernels of this file's calls).
Tensor tagged(const Shape& shape, DType dtype, Device device) {
  if (device == Device::kCpu) return Tensor(shape, dtype);
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  return Tensor::from_storage(shape, dtype, device, std::make_shared<std::byte[]>(bytes + 1));
}

// A backend whose kernels do nothing but count their calls (zeros and empty only allocate):
// whatever it rejects, the op table rejected for it.
class CountingBackend final : public Backend {
 public:
  Device device() const override { return kOther; }
  std::string describe() const override { return "counting (no kernels)"; }
  int kernel_calls() const { return calls_.load(); }

 private:
  void hit() const { ++calls_; }
  Tensor do_zeros(const Shape& s, DType d) const override { return tagged(s, d, kOther); }
  Tensor do_empty(const Shape& s, DType d) const override { return tagged(s, d, kOther); }
  void do_fill_zero(Tensor&) const override { hit(); }
  void do_copy(Tensor&, const Tensor&) const override { hit(); }
  void do_add(Tensor&, const Tensor&) const override { hit(); }
  void do_scale(Tensor&, float) const override { hit(); }
  void do_dropout(Tensor&, const Tensor&, uint64_t, int64_t, int64_t, int64_t,
                  float) const override {
    hit();
  }
  void do_matmul_forward(Tensor&, const Tensor&, const Tensor&, const Tensor*) const override {
    hit();
  }
  void do_matmul_backward(Tensor*, Tensor*, Tensor*, const Tensor&, const Tensor&,
                          const Tensor&) const override {
    hit();
  }
  void do_matmul_decode(Tensor&, const Tensor&, const Tensor&, const Tensor*) const override {
    hit();
  }
  void do_residual_forward(Tensor&, const Tensor&, const Tensor&, const Tensor*) const override {
    hit();
  }
  void do_bias_backward(Tensor&, const Tensor&) const override { hit(); }
  void do_rmsnorm_forward(Tensor&, Tensor&, const Tensor&, const Tensor&, float,
                          float) const override {
    hit();
  }
  void do_rmsnorm_backward(Tensor&, Tensor*, const Tensor&, const Tensor&, const Tensor&,
                           const Tensor&, float) const override {
    hit();
  }
  void do_rope_table(Tensor&, const Tensor&, const Tensor&) const override { hit(); }
  void do_rope_forward(Tensor&, const Tensor&) const override { hit(); }
  void do_rope_backward(Tensor&, const Tensor&) const override { hit(); }
  void do_attention_forward(Tensor&, Tensor&, const Tensor&, const Tensor&, const Tensor&, float,
                            const AttentionMask&) const override {
    hit();
  }
  void do_attention_backward(Tensor&, Tensor&, Tensor&, const Tensor&, const Tensor&, const Tensor&,
                             const Tensor&, const Tensor&, const Tensor&, float,
                             const AttentionMask&) const override {
    hit();
  }
  void do_attention_decode(Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                           int64_t, float, int64_t, float) const override {
    hit();
  }
  void do_softcap_forward(Tensor&, float) const override { hit(); }
  void do_softcap_backward(Tensor&, const Tensor&, float) const override { hit(); }
  void do_glu_forward(Tensor&, const Tensor&, const Tensor&, Activation) const override { hit(); }
  void do_glu_backward(Tensor&, Tensor&, const Tensor&, const Tensor&, const Tensor&,
                       Activation) const override {
    hit();
  }
  void do_embedding_forward(Tensor&, const Tensor&, const Tensor&, int64_t, float) const override {
    hit();
  }
  void do_embedding_backward(Tensor&, const Tensor&, const Tensor&, int64_t, float) const override {
    hit();
  }
  void do_cross_entropy_max(Tensor&, const Tensor&) const override { hit(); }
  void do_cross_entropy_sumexp(Tensor&, Tensor&, const Tensor&, const Tensor&, const Tensor&,
                               int64_t) const override {
    hit();
  }
  void do_cross_entropy_loss(Tensor&, const Tensor&, const Tensor&, const Tensor&,
                             const Tensor&) const override {
    hit();
  }
  void do_cross_entropy_backward(Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                 const Tensor&, float, int64_t) const override {
    hit();
  }
  void do_adamw_update(Tensor&, const Tensor&, Tensor&, Tensor&,
                       const AdamWScalars&) const override {
    hit();
  }
  double do_sum_of_squares(const Tensor&) const override { return hit(), 0.0; }
  void do_lora_merge(Tensor&, const Tensor&, const Tensor&, float, const Tensor*) const override {
    hit();
  }
  void do_lora_project(Tensor&, Tensor&, const Tensor&, const Tensor&, const Tensor&,
                       float) const override {
    hit();
  }

  mutable std::atomic<int> calls_{0};
};

// The backend a call runs on: z makes its tensors (zeros of its device), x a tensor of the
// other device.
struct On {
  const Backend& b;
  Tensor z(const Shape& shape, DType dtype = F) const { return b.zeros(shape, dtype); }
  Tensor x(const Shape& shape, DType dtype = F) const {
    return tagged(shape, dtype, b.device() == Device::kCpu ? kOther : Device::kCpu);
  }
};

// A bad call and the message it must fail with: {dev} stands for the backend's device, {other}
// for the other one.
struct Case {
  std::string message;
  std::function<void(const On&)> call;
  // Error::where(): the op table's checks (op_check.hpp, op_checks.cpp, op_checks_sequence.cpp).
  std::string thrown_in = "backends/op_check";
};

// "<op>: <what> is a {other} <shape> tensor given to the {dev} backend ...".
std::string foreign(const std::string& op, const std::string& what, const Shape& shape) {
  return op + ": " + what + " is a {other} " + shape_str(shape) +
         " tensor given to the {dev} backend (move it with to_device or copy)";
}

std::vector<Case> bad_calls() {
  const AdamWScalars k;
  return {
      // ---- memory
      {"negative dimension in shape [2, -1]",
       [](const On& o) {
         (void)o.b.zeros({2, -1}, F);
       },
       "tensor/tensor.cpp"},
      {"negative dimension in shape [-3]", [](const On& o) { (void)o.b.empty({-3}, F); },
       "tensor/tensor.cpp"},
      {foreign("fill_zero", "t", {4}),
       [](const On& o) {
         Tensor t = o.x({4});
         o.b.fill_zero(t);
       }},
      {"copy: no conversion from F32 to I32 (4 elements)",
       [](const On& o) {
         Tensor d = o.z({4}, I);
         o.b.copy(d, o.z({4}));
       }},
      {"copy: src has 4 elements [4], expected 5",
       [](const On& o) {
         Tensor d = o.z({5});
         o.b.copy(d, o.z({4}));
       }},
      {"add: dst is BF16, must be F32",
       [](const On& o) {
         Tensor d = o.z({4}, H);
         o.b.add(d, o.z({4}));
       }},
      {"add: src has 5 elements [5], expected 4",
       [](const On& o) {
         Tensor d = o.z({4});
         o.b.add(d, o.z({5}));
       }},
      {foreign("add", "src", {4}),
       [](const On& o) {
         Tensor d = o.z({4});
         o.b.add(d, o.x({4}));
       }},
      {"scale: x is I32, must be F32",
       [](const On& o) {
         Tensor t = o.z({4}, I);
         o.b.scale(t, 2);
       }},
      {foreign("scale", "x", {4}),
       [](const On& o) {
         Tensor t = o.x({4});
         o.b.scale(t, 2);
       }},
      {"dropout: inp is I32, must be F32 or BF16",
       [](const On& o) {
         Tensor t = o.z({4});
         o.b.dropout(t, o.z({4}, I), 1, 0, 0, 4, 0.5f);
       }},
      {"dropout: p must be in [0, 1), got 1",
       [](const On& o) {
         Tensor t = o.z({4});
         o.b.dropout(t, o.z({4}), 1, 0, 0, 4, 1.0f);
       }},
      {"dropout: columns [2, 6) outside the 4 global columns",
       [](const On& o) {
         Tensor t = o.z({4});
         o.b.dropout(t, o.z({4}), 1, 0, 2, 4, 0.5f);
       }},
      {foreign("dropout", "out", {4}),
       [](const On& o) {
         Tensor t = o.x({4});
         o.b.dropout(t, o.z({4}), 1, 0, 0, 4, 0.5f);
       }},
      // ---- linear layers
      {"matmul_forward: no kernel for inp F32, weight BF16, out F32",
       [](const On& o) {
         Tensor out = o.z({2, 5});
         o.b.matmul_forward(out, o.z({2, 3}), o.z({5, 3}, H), nullptr);
       }},
      {"matmul_forward: inp [2, 3] and weight [5, 4] do not chain (weight is (OC, C))",
       [](const On& o) {
         Tensor out = o.z({2, 5});
         o.b.matmul_forward(out, o.z({2, 3}), o.z({5, 4}), nullptr);
       }},
      {"matmul_forward: bias has 4 elements [4], expected 5",
       [](const On& o) {
         Tensor out = o.z({2, 5}), bias = o.z({4});
         o.b.matmul_forward(out, o.z({2, 3}), o.z({5, 3}), &bias);
       }},
      {foreign("matmul_forward", "weight", {5, 3}),
       [](const On& o) {
         Tensor out = o.z({2, 5});
         o.b.matmul_forward(out, o.z({2, 3}), o.x({5, 3}), nullptr);
       }},
      {"matmul_backward: dinp is BF16, must be F32",
       [](const On& o) {
         Tensor dinp = o.z({2, 3}, H);
         o.b.matmul_backward(&dinp, nullptr, nullptr, o.z({2, 5}, H), o.z({2, 3}, H),
                             o.z({5, 3}, H));
       }},
      {"matmul_backward: dout has 8 elements [2, 4], expected 10",
       [](const On& o) {
         Tensor dinp = o.z({2, 3});
         o.b.matmul_backward(&dinp, nullptr, nullptr, o.z({2, 4}), o.z({2, 3}), o.z({5, 3}));
       }},
      {"matmul_backward: no kernel for dout F32, inp BF16, weight BF16",
       [](const On& o) {
         Tensor dinp = o.z({2, 3});
         o.b.matmul_backward(&dinp, nullptr, nullptr, o.z({2, 5}), o.z({2, 3}, H), o.z({5, 3}, H));
       }},
      {foreign("matmul_backward", "dout", {2, 5}),
       [](const On& o) {
         Tensor dw = o.z({5, 3});
         o.b.matmul_backward(nullptr, &dw, nullptr, o.x({2, 5}), o.z({2, 3}), o.z({5, 3}));
       }},
      {"matmul_decode: inp is BF16, must be F32",
       [](const On& o) {
         Tensor out = o.z({2, 5});
         o.b.matmul_decode(out, o.z({2, 3}, H), o.z({5, 3}, H), nullptr);
       }},
      {"matmul_decode: weight is I32, must be F32 or BF16",
       [](const On& o) {
         Tensor out = o.z({2, 5});
         o.b.matmul_decode(out, o.z({2, 3}), o.z({5, 3}, I), nullptr);
       }},
      {"matmul_decode: out has 8 elements [2, 4], expected 10",
       [](const On& o) {
         Tensor out = o.z({2, 4});
         o.b.matmul_decode(out, o.z({2, 3}), o.z({5, 3}), nullptr);
       }},
      {foreign("matmul_decode", "weight", {5, 3}),
       [](const On& o) {
         Tensor out = o.z({2, 5});
         o.b.matmul_decode(out, o.z({2, 3}), o.x({5, 3}), nullptr);
       }},
      // ---- residual stream
      {"residual_forward: y is BF16, must be F32",
       [](const On& o) {
         Tensor out = o.z({2, 3});
         o.b.residual_forward(out, o.z({2, 3}), o.z({2, 3}, H), nullptr);
       }},
      {"residual_forward: y has 8 elements [2, 4], expected 6",
       [](const On& o) {
         Tensor out = o.z({2, 3});
         o.b.residual_forward(out, o.z({2, 3}), o.z({2, 4}), nullptr);
       }},
      {"residual_forward: bias has 4 elements [4], expected 3",
       [](const On& o) {
         Tensor out = o.z({2, 3}), bias = o.z({4});
         o.b.residual_forward(out, o.z({2, 3}), o.z({2, 3}), &bias);
       }},
      {foreign("residual_forward", "y", {2, 3}),
       [](const On& o) {
         Tensor out = o.z({2, 3});
         o.b.residual_forward(out, o.z({2, 3}), o.x({2, 3}), nullptr);
       }},
      {"bias_backward: dbias is BF16, must be F32",
       [](const On& o) {
         Tensor db = o.z({3}, H);
         o.b.bias_backward(db, o.z({2, 3}));
       }},
      {"bias_backward: dbias has 4 elements [4], expected 3",
       [](const On& o) {
         Tensor db = o.z({4});
         o.b.bias_backward(db, o.z({2, 3}));
       }},
      {foreign("bias_backward", "dout", {2, 3}),
       [](const On& o) {
         Tensor db = o.z({3});
         o.b.bias_backward(db, o.x({2, 3}));
       }},
      // ---- RMSNorm
      {"rmsnorm_forward: out is I32, must be F32 or BF16",
       [](const On& o) {
         Tensor out = o.z({2, 3}, I), rstd = o.z({2});
         o.b.rmsnorm_forward(out, rstd, o.z({2, 3}), o.z({3}), 1e-6f, 0);
       }},
      {"rmsnorm_forward: weight has 4 elements [4], expected 3",
       [](const On& o) {
         Tensor out = o.z({2, 3}), rstd = o.z({2});
         o.b.rmsnorm_forward(out, rstd, o.z({2, 3}), o.z({4}), 1e-6f, 0);
       }},
      {foreign("rmsnorm_forward", "inp", {2, 3}),
       [](const On& o) {
         Tensor out = o.z({2, 3}), rstd = o.z({2});
         o.b.rmsnorm_forward(out, rstd, o.x({2, 3}), o.z({3}), 1e-6f, 0);
       }},
      {"rmsnorm_backward: dweight is BF16, must be F32",
       [](const On& o) {
         Tensor dinp = o.z({2, 3}), dw = o.z({3}, H);
         o.b.rmsnorm_backward(dinp, &dw, o.z({2, 3}), o.z({2, 3}), o.z({3}), o.z({2}), 0);
       }},
      {"rmsnorm_backward: dinp has 8 elements [2, 4], expected 6",
       [](const On& o) {
         Tensor dinp = o.z({2, 4});
         o.b.rmsnorm_backward(dinp, nullptr, o.z({2, 3}), o.z({2, 3}), o.z({3}), o.z({2}), 0);
       }},
      {foreign("rmsnorm_backward", "dinp", {2, 3}),
       [](const On& o) {
         Tensor dinp = o.x({2, 3});
         o.b.rmsnorm_backward(dinp, nullptr, o.z({2, 3}), o.z({2, 3}), o.z({3}), o.z({2}), 0);
       }},
      // ---- rotary position embedding
      {"rope_table: pos is F32, must be I32",
       [](const On& o) {
         Tensor t = o.z({2, 4});
         o.b.rope_table(t, o.z({2}), o.z({2}));
       }},
      {"rope_table: table has 6 elements [2, 3], expected 8",
       [](const On& o) {
         Tensor t = o.z({2, 3});
         o.b.rope_table(t, o.z({2}, I), o.z({2}));
       }},
      {"rope_table: no frequencies",
       [](const On& o) {
         Tensor t = o.z({2, 0});
         o.b.rope_table(t, o.z({2}, I), o.z({0}));
       }},
      {foreign("rope_table", "pos", {2}),
       [](const On& o) {
         Tensor t = o.z({2, 4});
         o.b.rope_table(t, o.x({2}, I), o.z({2}));
       }},
      {"rope_forward: x is I32, must be F32 or BF16",
       [](const On& o) {
         Tensor x = o.z({2, 1, 4}, I);
         o.b.rope_forward(x, o.z({2, 4}));
       }},
      {"rope_forward: table is BF16, must be F32",
       [](const On& o) {
         Tensor x = o.z({2, 1, 4});
         o.b.rope_forward(x, o.z({2, 4}, H));
       }},
      {"rope_forward: x [2, 3] is not (N=2, H, D=4) for the table [2, 4]",
       [](const On& o) {
         Tensor x = o.z({2, 3});
         o.b.rope_forward(x, o.z({2, 4}));
       }},
      {"rope_forward: x [2, 1, 4] is not (N=2, H, D>=6) for the table [2, 6]",
       [](const On& o) {
         Tensor x = o.z({2, 1, 4});  // a table wider than the heads
         o.b.rope_forward(x, o.z({2, 6}));
       }},
      {"rope_forward: x [3, 1, 8] is not (N=2, H, D>=4) for the table [2, 4]",
       [](const On& o) {
         Tensor x = o.z({3, 1, 8});
         o.b.rope_forward(x, o.z({2, 4}));
       }},
      {"rope_backward: table [2, 3] is not (N, R), R even",
       [](const On& o) {
         Tensor dx = o.z({2, 1, 6});
         o.b.rope_backward(dx, o.z({2, 3}));
       }},
      {foreign("rope_forward", "x", {2, 1, 4}),
       [](const On& o) {
         Tensor x = o.x({2, 1, 4});
         o.b.rope_forward(x, o.z({2, 4}));
       }},
      {"rope_backward: dx is BF16, must be F32",
       [](const On& o) {
         Tensor dx = o.z({2, 1, 4}, H);
         o.b.rope_backward(dx, o.z({2, 4}));
       }},
      {foreign("rope_backward", "table", {2, 4}),
       [](const On& o) {
         Tensor dx = o.z({2, 1, 4});
         o.b.rope_backward(dx, o.x({2, 4}));
       }},
      // ---- attention: q (1, 2, 2, 4), k and v (1, 2, 1, 4), lse (1, 2, 2)
      {"attention_forward: no kernel for q BF16, k BF16, v BF16, out F32",
       [](const On& o) {
         Tensor out = o.z({1, 2, 2, 4}), lse = o.z({1, 2, 2});
         const Tensor kv = o.z({1, 2, 1, 4}, H);
         o.b.attention_forward(out, lse, o.z({1, 2, 2, 4}, H), kv, kv, 1, {});
       }},
      {"attention_forward: q must be (B, T, H, D), got [2, 2, 4]",
       [](const On& o) {
         Tensor out = o.z({2, 2, 4}), lse = o.z({1, 2, 2});
         const Tensor kv = o.z({1, 2, 1, 4});
         o.b.attention_forward(out, lse, o.z({2, 2, 4}), kv, kv, 1, {});
       }},
      {"attention_forward: q [1, 2, 2, 4], k [1, 2, 1, 4], v [1, 2, 2, 4], out [1, 2, 2, 4] do "
       "not match",
       [](const On& o) {
         Tensor out = o.z({1, 2, 2, 4}), lse = o.z({1, 2, 2});
         o.b.attention_forward(out, lse, o.z({1, 2, 2, 4}), o.z({1, 2, 1, 4}), o.z({1, 2, 2, 4}), 1,
                               {});
       }},
      {"attention_forward: 3 query heads is not a multiple of 2 kv heads",
       [](const On& o) {
         Tensor out = o.z({1, 2, 3, 4}), lse = o.z({1, 3, 2});
         const Tensor kv = o.z({1, 2, 2, 4});
         o.b.attention_forward(out, lse, o.z({1, 2, 3, 4}), kv, kv, 1, {});
       }},
      {"attention_forward: key_valid is F32, must be I32",
       [](const On& o) {
         Tensor out = o.z({1, 2, 2, 4}), lse = o.z({1, 2, 2});
         const Tensor kv = o.z({1, 2, 1, 4}), valid = o.z({1, 2});
         o.b.attention_forward(out, lse, o.z({1, 2, 2, 4}), kv, kv, 1, {&valid, nullptr});
       }},
      {"attention_forward: segment has 3 elements [1, 3], expected 2",
       [](const On& o) {
         Tensor out = o.z({1, 2, 2, 4}), lse = o.z({1, 2, 2});
         const Tensor kv = o.z({1, 2, 1, 4}), segment = o.z({1, 3}, I);
         o.b.attention_forward(out, lse, o.z({1, 2, 2, 4}), kv, kv, 1, {nullptr, &segment});
       }},
      {foreign("attention_forward", "key_valid", {1, 2}),
       [](const On& o) {
         Tensor out = o.z({1, 2, 2, 4}), lse = o.z({1, 2, 2});
         const Tensor kv = o.z({1, 2, 1, 4}), valid = o.x({1, 2}, I);
         o.b.attention_forward(out, lse, o.z({1, 2, 2, 4}), kv, kv, 1, {&valid, nullptr});
       }},
      {foreign("attention_forward", "lse", {1, 2, 2}),
       [](const On& o) {
         Tensor out = o.z({1, 2, 2, 4}), lse = o.x({1, 2, 2});
         const Tensor kv = o.z({1, 2, 1, 4});
         o.b.attention_forward(out, lse, o.z({1, 2, 2, 4}), kv, kv, 1, {});
       }},
      {"attention_backward: no kernel for dq BF16, dk F32, dv F32, dout F32, out F32, q F32, k "
       "F32, v F32",
       [](const On& o) {
         Tensor dq = o.z({1, 2, 2, 4}, H), dk = o.z({1, 2, 1, 4}), dv = o.z({1, 2, 1, 4});
         const Tensor q = o.z({1, 2, 2, 4}), kv = o.z({1, 2, 1, 4});
         o.b.attention_backward(dq, dk, dv, q, q, o.z({1, 2, 2}), q, kv, kv, 1, {});
       }},
      {"attention_backward: q [1, 2, 2, 4], k [1, 2, 1, 4], v [1, 2, 1, 4] and their gradients "
       "do not match",
       [](const On& o) {
         Tensor dq = o.z({1, 2, 2, 4}), dk = o.z({1, 2, 2, 4}), dv = o.z({1, 2, 1, 4});
         const Tensor q = o.z({1, 2, 2, 4}), kv = o.z({1, 2, 1, 4});
         o.b.attention_backward(dq, dk, dv, q, q, o.z({1, 2, 2}), q, kv, kv, 1, {});
       }},
      {"attention_backward: lse has 3 elements [3], expected 4",
       [](const On& o) {
         Tensor dq = o.z({1, 2, 2, 4}), dk = o.z({1, 2, 1, 4}), dv = o.z({1, 2, 1, 4});
         const Tensor q = o.z({1, 2, 2, 4}), kv = o.z({1, 2, 1, 4});
         o.b.attention_backward(dq, dk, dv, q, q, o.z({3}), q, kv, kv, 1, {});
       }},
      {foreign("attention_backward", "q", {1, 2, 2, 4}),
       [](const On& o) {
         Tensor dq = o.z({1, 2, 2, 4}), dk = o.z({1, 2, 1, 4}), dv = o.z({1, 2, 1, 4});
         const Tensor q = o.z({1, 2, 2, 4}), kv = o.z({1, 2, 1, 4});
         o.b.attention_backward(dq, dk, dv, q, q, o.z({1, 2, 2}), o.x({1, 2, 2, 4}), kv, kv, 1, {});
       }},
      // ---- attention_decode: q, out (1, 2, 4), caches (1, 3, 2, 4), valid (1, 3)
      {"attention_decode: q is BF16, must be F32",
       [](const On& o) {
         Tensor out = o.z({1, 2, 4});
         const Tensor cache = o.z({1, 3, 2, 4});
         o.b.attention_decode(out, o.z({1, 2, 4}, H), cache, cache, o.z({1, 3}, I), 0, 1, 0, 0);
       }},
      {"attention_decode: the cache is BF16 / F32, must be F32 or BF16 (both)",
       [](const On& o) {
         Tensor out = o.z({1, 2, 4});
         o.b.attention_decode(out, o.z({1, 2, 4}), o.z({1, 3, 2, 4}, H), o.z({1, 3, 2, 4}),
                              o.z({1, 3}, I), 0, 1, 0, 0);
       }},
      {"attention_decode: q [1, 3, 4] (B, Hq, D) does not match the cache [1, 3, 2, 4] (B, S, "
       "Hkv, D)",
       [](const On& o) {
         Tensor out = o.z({1, 3, 4});
         const Tensor cache = o.z({1, 3, 2, 4});
         o.b.attention_decode(out, o.z({1, 3, 4}), cache, cache, o.z({1, 3}, I), 0, 1, 0, 0);
       }},
      {"attention_decode: valid has 2 elements [2], expected 3",
       [](const On& o) {
         Tensor out = o.z({1, 2, 4});
         const Tensor cache = o.z({1, 3, 2, 4});
         o.b.attention_decode(out, o.z({1, 2, 4}), cache, cache, o.z({2}, I), 0, 1, 0, 0);
       }},
      {"attention_decode: slot 3 (window 0) outside the cache's 3 slots",
       [](const On& o) {
         Tensor out = o.z({1, 2, 4});
         const Tensor cache = o.z({1, 3, 2, 4});
         o.b.attention_decode(out, o.z({1, 2, 4}), cache, cache, o.z({1, 3}, I), 3, 1, 0, 0);
       }},
      {"attention_decode: slot 9 (window 4) outside the cache's 3 slots",
       [](const On& o) {
         Tensor out = o.z({1, 2, 4});
         const Tensor cache = o.z({1, 3, 2, 4});  // a ring of 3 holds no window of 4
         o.b.attention_decode(out, o.z({1, 2, 4}), cache, cache, o.z({1, 3}, I), 9, 1, 4, 0);
       }},
      {foreign("attention_decode", "k_cache", {1, 3, 2, 4}),
       [](const On& o) {
         Tensor out = o.z({1, 2, 4});
         o.b.attention_decode(out, o.z({1, 2, 4}), o.x({1, 3, 2, 4}), o.z({1, 3, 2, 4}),
                              o.z({1, 3}, I), 0, 1, 0, 0);
       }},
      // ---- logit soft-capping
      {"softcap_forward: x is I32, must be F32 or BF16",
       [](const On& o) {
         Tensor x = o.z({2, 3}, I);
         o.b.softcap_forward(x, 2);
       }},
      {"softcap_forward: cap must be positive, got 0",
       [](const On& o) {
         Tensor x = o.z({2, 3});
         o.b.softcap_forward(x, 0);
       }},
      {foreign("softcap_forward", "x", {2, 3}),
       [](const On& o) {
         Tensor x = o.x({2, 3});
         o.b.softcap_forward(x, 2);
       }},
      {"softcap_backward: no kernel for dx BF16, y F32",
       [](const On& o) {
         Tensor dx = o.z({2, 3}, H);
         o.b.softcap_backward(dx, o.z({2, 3}), 2);
       }},
      {"softcap_backward: y has 8 elements [2, 4], expected 6",
       [](const On& o) {
         Tensor dx = o.z({2, 3});
         o.b.softcap_backward(dx, o.z({2, 4}), 2);
       }},
      {foreign("softcap_backward", "y", {2, 3}),
       [](const On& o) {
         Tensor dx = o.z({2, 3});
         o.b.softcap_backward(dx, o.x({2, 3}), 2);
       }},
      // ---- gated MLP
      {"glu_forward: no kernel for gate F32, up BF16, out F32",
       [](const On& o) {
         Tensor out = o.z({4});
         o.b.glu_forward(out, o.z({4}), o.z({4}, H), Activation::kSilu);
       }},
      {"glu_forward: up has 5 elements [5], expected 4",
       [](const On& o) {
         Tensor out = o.z({4});
         o.b.glu_forward(out, o.z({4}), o.z({5}), Activation::kSilu);
       }},
      {foreign("glu_forward", "gate", {4}),
       [](const On& o) {
         Tensor out = o.z({4});
         o.b.glu_forward(out, o.x({4}), o.z({4}), Activation::kSilu);
       }},
      {"glu_backward: dout is BF16, must be F32",
       [](const On& o) {
         Tensor dg = o.z({4}), du = o.z({4});
         o.b.glu_backward(dg, du, o.z({4}, H), o.z({4}), o.z({4}), Activation::kSilu);
       }},
      {"glu_backward: dgate has 5 elements [5], expected 4",
       [](const On& o) {
         Tensor dg = o.z({5}), du = o.z({4});
         o.b.glu_backward(dg, du, o.z({4}), o.z({4}), o.z({4}), Activation::kSilu);
       }},
      {"glu_backward: no kernel for dgate BF16, dup BF16, gate F32, up F32",
       [](const On& o) {
         Tensor dg = o.z({4}, H), du = o.z({4}, H);
         o.b.glu_backward(dg, du, o.z({4}), o.z({4}), o.z({4}), Activation::kGeluTanh);
       }},
      {foreign("glu_backward", "dgate", {4}),
       [](const On& o) {
         Tensor dg = o.x({4}), du = o.z({4});
         o.b.glu_backward(dg, du, o.z({4}), o.z({4}), o.z({4}), Activation::kSilu);
       }},
      // ---- token embedding: ids (2), table (5, 3)
      {"embedding_forward: table is I32, must be F32 or BF16",
       [](const On& o) {
         Tensor out = o.z({2, 3});
         o.b.embedding_forward(out, o.z({2}, I), o.z({5, 3}, I), 0, 1);
       }},
      {"embedding_forward: ids is F32, must be I32",
       [](const On& o) {
         Tensor out = o.z({2, 3});
         o.b.embedding_forward(out, o.z({2}), o.z({5, 3}), 0, 1);
       }},
      {"embedding_forward: out has 8 elements [2, 4], expected 6",
       [](const On& o) {
         Tensor out = o.z({2, 4});
         o.b.embedding_forward(out, o.z({2}, I), o.z({5, 3}), 0, 1);
       }},
      {"embedding_forward: row_start -1 < 0",
       [](const On& o) {
         Tensor out = o.z({2, 3});
         o.b.embedding_forward(out, o.z({2}, I), o.z({5, 3}), -1, 1);
       }},
      {foreign("embedding_forward", "table", {5, 3}),
       [](const On& o) {
         Tensor out = o.z({2, 3});
         o.b.embedding_forward(out, o.z({2}, I), o.x({5, 3}), 0, 1);
       }},
      {"embedding_backward: dtable is BF16, must be F32",
       [](const On& o) {
         Tensor dt = o.z({5, 3}, H);
         o.b.embedding_backward(dt, o.z({2, 3}), o.z({2}, I), 0, 1);
       }},
      {"embedding_backward: dout has 8 elements [2, 4], expected 6",
       [](const On& o) {
         Tensor dt = o.z({5, 3});
         o.b.embedding_backward(dt, o.z({2, 4}), o.z({2}, I), 0, 1);
       }},
      {foreign("embedding_backward", "dtable", {5, 3}),
       [](const On& o) {
         Tensor dt = o.x({5, 3});
         o.b.embedding_backward(dt, o.z({2, 3}), o.z({2}, I), 0, 1);
       }},
      // ---- softmax cross-entropy: logits (2, 3), row statistics and targets (2)
      {"cross_entropy_max: logits is I32, must be F32 or BF16",
       [](const On& o) {
         Tensor m = o.z({2});
         o.b.cross_entropy_max(m, o.z({2, 3}, I));
       }},
      {"cross_entropy_max: row_max has 3 elements [3], expected 2",
       [](const On& o) {
         Tensor m = o.z({3});
         o.b.cross_entropy_max(m, o.z({2, 3}));
       }},
      {"cross_entropy_max: bad sizes N=0 V=0",
       [](const On& o) {
         Tensor m = o.z({0});
         o.b.cross_entropy_max(m, o.z({2, 0}));
       }},
      {foreign("cross_entropy_max", "logits", {2, 3}),
       [](const On& o) {
         Tensor m = o.z({2});
         o.b.cross_entropy_max(m, o.x({2, 3}));
       }},
      {"cross_entropy_sumexp: targets is F32, must be I32",
       [](const On& o) {
         Tensor s = o.z({2}), t = o.z({2});
         o.b.cross_entropy_sumexp(s, t, o.z({2, 3}), o.z({2}), o.z({2}), 0);
       }},
      {"cross_entropy_sumexp: sumexp has 3 elements [3], expected 2",
       [](const On& o) {
         Tensor s = o.z({3}), t = o.z({2});
         o.b.cross_entropy_sumexp(s, t, o.z({2, 3}), o.z({2}), o.z({2}, I), 0);
       }},
      {foreign("cross_entropy_sumexp", "targets", {2}),
       [](const On& o) {
         Tensor s = o.z({2}), t = o.z({2});
         o.b.cross_entropy_sumexp(s, t, o.z({2, 3}), o.z({2}), o.x({2}, I), 0);
       }},
      {"cross_entropy_loss: losses is BF16, must be F32",
       [](const On& o) {
         Tensor l = o.z({2}, H);
         o.b.cross_entropy_loss(l, o.z({2}), o.z({2}), o.z({2}), o.z({2}, I));
       }},
      {"cross_entropy_loss: losses has 3 elements [3], expected 2",
       [](const On& o) {
         Tensor l = o.z({3});
         o.b.cross_entropy_loss(l, o.z({2}), o.z({2}), o.z({2}), o.z({2}, I));
       }},
      {foreign("cross_entropy_loss", "losses", {2}),
       [](const On& o) {
         Tensor l = o.x({2});
         o.b.cross_entropy_loss(l, o.z({2}), o.z({2}), o.z({2}), o.z({2}, I));
       }},
      {"cross_entropy_backward: dlogits is BF16, must be F32",
       [](const On& o) {
         Tensor d = o.z({2, 3}, H);
         o.b.cross_entropy_backward(d, o.z({2, 3}), o.z({2}), o.z({2}), o.z({2}, I), 1, 0);
       }},
      {"cross_entropy_backward: sumexp has 3 elements [3], expected 2",
       [](const On& o) {
         Tensor d = o.z({2, 3});
         o.b.cross_entropy_backward(d, o.z({2, 3}), o.z({2}), o.z({3}), o.z({2}, I), 1, 0);
       }},
      {foreign("cross_entropy_backward", "dlogits", {2, 3}),
       [](const On& o) {
         Tensor d = o.x({2, 3});
         o.b.cross_entropy_backward(d, o.z({2, 3}), o.z({2}), o.z({2}), o.z({2}, I), 1, 0);
       }},
      // ---- optimizer
      {"adamw_update: parameters are F32 or BF16, not I32",
       [k](const On& o) {
         Tensor w = o.z({4}, I), m = o.z({4}), v = o.z({4});
         o.b.adamw_update(w, o.z({4}), m, v, k);
       }},
      {"adamw_update: m is BF16, must be F32",
       [k](const On& o) {
         Tensor w = o.z({4}), m = o.z({4}, H), v = o.z({4});
         o.b.adamw_update(w, o.z({4}), m, v, k);
       }},
      {"adamw_update: v has 5 elements [5], expected 4",
       [k](const On& o) {
         Tensor w = o.z({4}), m = o.z({4}), v = o.z({5});
         o.b.adamw_update(w, o.z({4}), m, v, k);
       }},
      {foreign("adamw_update", "g", {4}),
       [k](const On& o) {
         Tensor w = o.z({4}), m = o.z({4}), v = o.z({4});
         o.b.adamw_update(w, o.x({4}), m, v, k);
       }},
      {"sum_of_squares: g is BF16, must be F32",
       [](const On& o) { (void)o.b.sum_of_squares(o.z({4}, H)); }},
      {foreign("sum_of_squares", "g", {4}),
       [](const On& o) { (void)o.b.sum_of_squares(o.x({4})); }},
      // ---- LoRA: w (5, 3), a (2, 3), b (5, 2)
      {"lora_merge: w is BF16, must be F32",
       [](const On& o) {
         Tensor w = o.z({5, 3}, H);
         o.b.lora_merge(w, o.z({2, 3}), o.z({5, 2}), 1, nullptr);
       }},
      {"lora_merge: w [5, 3], a [2, 4], b [5, 2] are not (O, I), (r, I), (O, r)",
       [](const On& o) {
         Tensor w = o.z({5, 3});
         o.b.lora_merge(w, o.z({2, 4}), o.z({5, 2}), 1, nullptr);
       }},
      {"lora_merge: base is I32, must be F32 or BF16",
       [](const On& o) {
         Tensor w = o.z({5, 3}), base = o.z({5, 3}, I);
         o.b.lora_merge(w, o.z({2, 3}), o.z({5, 2}), 1, &base);
       }},
      {"lora_merge: base has 6 elements [6], expected 15",
       [](const On& o) {
         Tensor w = o.z({5, 3}), base = o.z({6});
         o.b.lora_merge(w, o.z({2, 3}), o.z({5, 2}), 1, &base);
       }},
      {foreign("lora_merge", "base", {5, 3}),
       [](const On& o) {
         Tensor w = o.z({5, 3}), base = o.x({5, 3});
         o.b.lora_merge(w, o.z({2, 3}), o.z({5, 2}), 1, &base);
       }},
      {"lora_project: db is BF16, must be F32",
       [](const On& o) {
         Tensor da = o.z({2, 3}), db = o.z({5, 2}, H);
         o.b.lora_project(da, db, o.z({5, 3}), o.z({2, 3}), o.z({5, 2}), 1);
       }},
      {"lora_project: dw [5, 3], a [2, 3], b [5, 2] are not (O, I), (r, I), (O, r)",
       [](const On& o) {
         Tensor da = o.z({3, 5}), db = o.z({5, 2});
         o.b.lora_project(da, db, o.z({5, 3}), o.z({2, 3}), o.z({5, 2}), 1);
       }},
      {foreign("lora_project", "dw", {5, 3}),
       [](const On& o) {
         Tensor da = o.z({2, 3}), db = o.z({5, 2});
         o.b.lora_project(da, db, o.x({5, 3}), o.z({2, 3}), o.z({5, 2}), 1);
       }},
  };
}

// The message a case expects on `b`.
std::string expected(const Case& c, const Backend& b) {
  const Device other = b.device() == Device::kCpu ? kOther : Device::kCpu;
  return fmt::format(fmt::runtime(c.message), fmt::arg("dev", device_name(b.device())),
                     fmt::arg("other", device_name(other)));
}

// Runs the case on `b`: it must throw magix::Error with the expected message, at `thrown_in`.
void expect_rejected(const Case& c, const Backend& b, const std::string& name) {
  const std::string want = expected(c, b);
  try {
    c.call(On{b});
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), want) << "on " << name;
    EXPECT_NE(e.where().find(c.thrown_in), std::string::npos)
        << "on " << name << ": \"" << want << "\" thrown at " << e.where() << ", not in "
        << c.thrown_in;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "on " << name << ": \"" << want << "\": threw " << e.what()
                  << ", not magix::Error";
    return;
  }
  ADD_FAILURE() << "on " << name << ": did not throw \"" << want << "\"";
}

TEST(OpChecks, EveryBadCallFailsInTheOpTableWithOneMessageOnEveryBackend) {
  const EmulatedDeviceBackend emulated;
  const CountingBackend counting;
  const std::vector<Case> cases = bad_calls();
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    expect_rejected(c, cpu::cpu_backend(), "cpu");
    expect_rejected(c, emulated, "the emulated device");
    expect_rejected(c, counting, "a backend without checks");
  }
  EXPECT_EQ(counting.kernel_calls(), 0) << "a kernel ran for a rejected call";
  // Every op with tensor arguments has its cases (zeros and empty have theirs above).
  for (const char* op : {"fill_zero",
                         "copy",
                         "add",
                         "scale",
                         "dropout",
                         "matmul_forward",
                         "matmul_backward",
                         "matmul_decode",
                         "residual_forward",
                         "bias_backward",
                         "rmsnorm_forward",
                         "rmsnorm_backward",
                         "rope_table",
                         "rope_forward",
                         "rope_backward",
                         "attention_forward",
                         "attention_backward",
                         "attention_decode",
                         "softcap_forward",
                         "softcap_backward",
                         "glu_forward",
                         "glu_backward",
                         "embedding_forward",
                         "embedding_backward",
                         "cross_entropy_max",
                         "cross_entropy_sumexp",
                         "cross_entropy_loss",
                         "cross_entropy_backward",
                         "adamw_update",
                         "sum_of_squares",
                         "lora_merge",
                         "lora_project"}) {
    const std::string prefix = std::string(op) + ": ";
    int n = 0;
    for (const Case& c : cases) n += c.message.rfind(prefix, 0) == 0;
    EXPECT_GE(n, 1) << op << " has no bad call";
  }
}

TEST(OpChecks, NoKernelRunsForARejectedCall) {
  const CountingBackend counting;
  const On o{counting};
  // Arguments made first, then the rejected call: the counter must not move.
  Tensor out = o.z({2, 5});
  const Tensor inp = o.z({2, 3}), weight = o.z({5, 4}), host = o.x({5, 3});
  const int made = counting.kernel_calls();
  EXPECT_THROW(counting.matmul_forward(out, inp, weight, nullptr), Error);  // do not chain
  EXPECT_THROW(counting.matmul_forward(out, inp, host, nullptr), Error);    // on the host
  EXPECT_EQ(counting.kernel_calls(), made);
  // A good call reaches the kernel once.
  counting.matmul_forward(out, inp, o.z({5, 3}), nullptr);
  EXPECT_EQ(counting.kernel_calls(), made + 1);
}

TEST(OpChecks, CopyCrossesOnlyBetweenTheBackendsDeviceAndTheHost) {
  // The CPU backend refuses a device tensor on either side; a device backend copies from and to
  // the host.
  const EmulatedDeviceBackend emulated;
  Tensor host({4}, F);
  Tensor dev = emulated.zeros({4}, F);
  const Backend& cpu = cpu::cpu_backend();
  try {
    cpu.copy(host, dev);
    ADD_FAILURE() << "the cpu backend copied a cuda tensor";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "copy: src is a cuda [4] tensor given to the cpu backend (move it with to_device or "
              "copy)");
  }
  emulated.copy(dev, host);
  emulated.copy(host, dev);
}

}  // namespace
}  // namespace magix::test
