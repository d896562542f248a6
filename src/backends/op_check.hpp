// The checks of one op call (op_checks.cpp, op_checks_sequence.cpp): its name for every
// message, the backend's device, and the checks every op's tensors share.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

#include "backends/backend.hpp"
#include "backends/op_shapes.hpp"
#include "magix/error.hpp"

namespace magix::backends {

// A tensor argument and its name in messages.
using Named = std::pair<const char*, const Tensor*>;
using NamedList = std::initializer_list<Named>;

inline bool is(const Tensor& t, DType d) {
  return t.dtype() == d;
}

// The checks of one call: the op's name, for every message, and the backend's device.
class OpCheck {
 public:
  OpCheck(const Backend& backend, const char* op) : op_(op), device_(backend.device()) {}

  // t defined and on the backend's device.
  void on(const char* what, const Tensor& t) const {
    defined(what, t);
    if (t.device() != device_) foreign(what, t);
  }
  // copy: on the backend's device or on the host.
  void on_or_host(const char* what, const Tensor& t) const {
    defined(what, t);
    if (t.device() != device_ && t.device() != Device::kCpu) foreign(what, t);
  }
  void dtype(const char* what, const Tensor& t, DType want) const {
    on(what, t);
    MAGIX_CHECK(t.dtype() == want, "{}: {} is {}, must be {}", op_, what, dtype_name(t.dtype()),
                dtype_name(want));
  }
  // F32 or BF16.
  void float_kind(const char* what, const Tensor& t) const {
    on(what, t);
    MAGIX_CHECK(is(t, DType::kF32) || is(t, DType::kBF16), "{}: {} is {}, must be F32 or BF16", op_,
                what, dtype_name(t.dtype()));
  }
  void numel(const char* what, const Tensor& t, int64_t want) const {
    MAGIX_CHECK(t.numel() == want, "{}: {} has {} elements {}, expected {}", op_, what, t.numel(),
                shape_str(t.shape()), want);
  }
  // An optional F32 tensor of `want` elements (bias, a gradient).
  void f32_or_null(const char* what, const Tensor* t, int64_t want) const {
    if (!t) return;
    dtype(what, *t, DType::kF32);
    numel(what, *t, want);
  }
  // (B, T, H, D).
  Heads four_d(const char* what, const Tensor& t) const {
    MAGIX_CHECK(t.ndim() == 4, "{}: {} must be (B, T, H, D), got {}", op_, what,
                shape_str(t.shape()));
    return heads(t);
  }
  // weight (OC, C) chains with inp (N, C).
  void chains(const Tensor& inp, const Tensor& weight) const {
    MAGIX_CHECK(weight.ndim() == 2 && mat(inp).cols == mat(weight).cols,
                "{}: inp {} and weight {} do not chain (weight is (OC, C))", op_,
                shape_str(inp.shape()), shape_str(weight.shape()));
  }
  // Query head h reads KV head h / (Hq / Hkv).
  void head_counts(int64_t Hq, int64_t Hkv, int64_t D) const {
    MAGIX_CHECK(Hq > 0 && Hkv > 0 && Hq % Hkv == 0,
                "{}: {} query heads is not a multiple of {} kv heads", op_, Hq, Hkv);
    MAGIX_CHECK(D > 0, "{}: head dim {} is not positive", op_, D);
  }
  void mask(const AttentionMask& m, int64_t B, int64_t T) const {
    for (const auto& [what, t] : NamedList{{"key_valid", m.key_valid}, {"segment", m.segment}}) {
      if (!t) continue;
      dtype(what, *t, DType::kI32);
      numel(what, *t, B * T);
    }
  }
  // A vocabulary of at least one entry per row.
  void vocab(const Mat& logits) const {
    MAGIX_CHECK(logits.cols > 0, "{}: bad sizes N={} V={}", op_, logits.rows, logits.cols);
  }
  // A dtype combination the op does not list: its tensors' dtypes.
  [[noreturn]] void no_kernel(NamedList tensors) const {
    std::string dtypes;
    for (const auto& [what, t] : tensors) {
      dtypes += fmt::format("{}{} {}", dtypes.empty() ? "" : ", ", what, dtype_name(t->dtype()));
    }
    MAGIX_FAIL("{}: no kernel for {}", op_, dtypes);
  }
  const char* op() const { return op_; }

 private:
  void defined(const char* what, const Tensor& t) const {
    MAGIX_CHECK(t.defined(), "{}: {} is an undefined tensor", op_, what);
  }
  [[noreturn]] void foreign(const char* what, const Tensor& t) const {
    MAGIX_FAIL("{}: {} is a {} {} tensor given to the {} backend (move it with to_device or copy)",
               op_, what, device_name(t.device()), shape_str(t.shape()), device_name(device_));
  }

  const char* op_;
  Device device_;
};

// Every one of ts has dtype d.
inline bool all_of(std::initializer_list<const Tensor*> ts, DType d) {
  for (const Tensor* t : ts)
    if (!is(*t, d)) return false;
  return true;
}

}  // namespace magix::backends
