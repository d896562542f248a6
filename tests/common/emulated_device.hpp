// An emulated device for tests: a Backend whose tensors are tagged Device::kCuda but whose
// storage is host memory, each op unwrapping its tensors to host views and running the CPU
// backend's op. It proves the device plumbing on a machine without a GPU:
// - model, training, LoRA, scoring and generation code sees a non-host device exactly as with a
//   real GPU backend (the same Device value, so the same branches), and every host access of one
//   of its tensors (Tensor::data, span, bytes, clone, to, fill_zero) throws;
// - every op rejects host tensors as a GPU backend must (only copy crosses), so a host buffer
//   passed to an op is found too;
// - fresh buffers (empty) hold NaN bytes, as uninitialised device memory holds garbage;
// - the arithmetic is the CPU backend's, so a run on it must equal a CPU run bit for bit: any
//   difference is a plumbing defect (a value lost or staged wrongly), never numerics.
//
// Registered only by tests (set_backend_for_testing through EmulatedDeviceScope); the CLI can
// never reach it.
#pragma once

#include <cstring>
#include <memory>
#include <string>

#include "backends/backend.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "magix/error.hpp"

namespace magix::test {

class EmulatedDeviceBackend final : public Backend {
 public:
  static constexpr Device kDevice = Device::kCuda;

  Device device() const override { return kDevice; }
  std::string describe() const override {
    return "emulated cuda (host memory, cpu ops): " + cpu().describe();
  }

  Tensor zeros(const Shape& shape, DType dtype) const override {
    return on_device(Tensor(shape, dtype));
  }
  Tensor empty(const Shape& shape, DType dtype) const override {
    Tensor h = Tensor::empty(shape, dtype);
    if (h.nbytes() > 0) std::memset(h.bytes(), 0xff, h.nbytes());  // NaN / -1: garbage
    return on_device(std::move(h));
  }
  void fill_zero(Tensor& t) const override {
    Tensor h = view("fill_zero", t);
    cpu().fill_zero(h);
  }
  // The one op that crosses: either side may be a host tensor.
  void copy(Tensor& dst, const Tensor& src) const override {
    Tensor d = any_view("copy", dst), s = any_view("copy", src);
    cpu().copy(d, s);
  }
  void add(Tensor& dst, const Tensor& src) const override {
    Tensor d = view("add", dst);
    cpu().add(d, view("add", src));
  }
  void scale(Tensor& x, float s) const override {
    Tensor h = view("scale", x);
    cpu().scale(h, s);
  }
  void dropout(Tensor& out, const Tensor& inp, uint64_t key, int64_t row0, int64_t col0,
               int64_t cols, float p) const override {
    Tensor o = view("dropout", out);
    cpu().dropout(o, view("dropout", inp), key, row0, col0, cols, p);
  }
  void matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight,
                      const Tensor* bias) const override {
    const char* op = "matmul_forward";
    Tensor o = view(op, out);
    const Tensor b = opt(op, bias);
    cpu().matmul_forward(o, view(op, inp), view(op, weight), bias ? &b : nullptr);
  }
  void matmul_backward(Tensor* dinp, Tensor* dweight, Tensor* dbias, const Tensor& dout,
                       const Tensor& inp, const Tensor& weight) const override {
    const char* op = "matmul_backward";
    Tensor di = opt(op, dinp), dw = opt(op, dweight), db = opt(op, dbias);
    cpu().matmul_backward(dinp ? &di : nullptr, dweight ? &dw : nullptr, dbias ? &db : nullptr,
                          view(op, dout), view(op, inp), view(op, weight));
  }
  void matmul_decode(Tensor& out, const Tensor& inp, const Tensor& weight,
                     const Tensor* bias) const override {
    const char* op = "matmul_decode";
    Tensor o = view(op, out);
    const Tensor b = opt(op, bias);
    cpu().matmul_decode(o, view(op, inp), view(op, weight), bias ? &b : nullptr);
  }
  void residual_forward(Tensor& out, const Tensor& residual, const Tensor& y,
                        const Tensor* bias) const override {
    const char* op = "residual_forward";
    Tensor o = view(op, out);
    const Tensor b = opt(op, bias);
    cpu().residual_forward(o, view(op, residual), view(op, y), bias ? &b : nullptr);
  }
  void bias_backward(Tensor& dbias, const Tensor& dout) const override {
    Tensor d = view("bias_backward", dbias);
    cpu().bias_backward(d, view("bias_backward", dout));
  }
  void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                       float eps, float offset) const override {
    const char* op = "rmsnorm_forward";
    Tensor o = view(op, out), r = view(op, rstd);
    cpu().rmsnorm_forward(o, r, view(op, inp), view(op, weight), eps, offset);
  }
  void rmsnorm_backward(Tensor& dinp, Tensor* dweight, const Tensor& dout, const Tensor& inp,
                        const Tensor& weight, const Tensor& rstd, float offset) const override {
    const char* op = "rmsnorm_backward";
    Tensor di = view(op, dinp), dw = opt(op, dweight);
    cpu().rmsnorm_backward(di, dweight ? &dw : nullptr, view(op, dout), view(op, inp),
                           view(op, weight), view(op, rstd), offset);
  }
  void rope_table(Tensor& table, const Tensor& pos, const Tensor& inv_freq) const override {
    Tensor t = view("rope_table", table);
    cpu().rope_table(t, view("rope_table", pos), view("rope_table", inv_freq));
  }
  void rope_forward(Tensor& x, const Tensor& table) const override {
    Tensor h = view("rope_forward", x);
    cpu().rope_forward(h, view("rope_forward", table));
  }
  void rope_backward(Tensor& dx, const Tensor& table) const override {
    Tensor h = view("rope_backward", dx);
    cpu().rope_backward(h, view("rope_backward", table));
  }
  void attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                         const Tensor& v, float scale, const AttentionMask& mask) const override {
    const char* op = "attention_forward";
    Tensor o = view(op, out), l = view(op, lse);
    MaskViews m(*this, op, mask);
    cpu().attention_forward(o, l, view(op, q), view(op, k), view(op, v), scale, m.mask);
  }
  void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& out,
                          const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                          float scale, const AttentionMask& mask) const override {
    const char* op = "attention_backward";
    Tensor a = view(op, dq), b = view(op, dk), c = view(op, dv);
    MaskViews m(*this, op, mask);
    cpu().attention_backward(a, b, c, view(op, dout), view(op, out), view(op, lse), view(op, q),
                             view(op, k), view(op, v), scale, m.mask);
  }
  void attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                        const Tensor& valid, int64_t slot, float scale, int64_t window,
                        float softcap) const override {
    const char* op = "attention_decode";
    Tensor o = view(op, out);
    cpu().attention_decode(o, view(op, q), view(op, k_cache), view(op, v_cache), view(op, valid),
                           slot, scale, window, softcap);
  }
  void softcap_forward(Tensor& x, float cap) const override {
    Tensor h = view("softcap_forward", x);
    cpu().softcap_forward(h, cap);
  }
  void softcap_backward(Tensor& dx, const Tensor& y, float cap) const override {
    Tensor h = view("softcap_backward", dx);
    cpu().softcap_backward(h, view("softcap_backward", y), cap);
  }
  void glu_forward(Tensor& out, const Tensor& gate, const Tensor& up,
                   Activation act) const override {
    Tensor o = view("glu_forward", out);
    cpu().glu_forward(o, view("glu_forward", gate), view("glu_forward", up), act);
  }
  void glu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                    const Tensor& up, Activation act) const override {
    const char* op = "glu_backward";
    Tensor g = view(op, dgate), u = view(op, dup);
    cpu().glu_backward(g, u, view(op, dout), view(op, gate), view(op, up), act);
  }
  void embedding_forward(Tensor& out, const Tensor& ids, const Tensor& table, int64_t row_start,
                         float scale) const override {
    const char* op = "embedding_forward";
    Tensor o = view(op, out);
    cpu().embedding_forward(o, view(op, ids), view(op, table), row_start, scale);
  }
  void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& ids, int64_t row_start,
                          float scale) const override {
    const char* op = "embedding_backward";
    Tensor d = view(op, dtable);
    cpu().embedding_backward(d, view(op, dout), view(op, ids), row_start, scale);
  }
  void cross_entropy_max(Tensor& row_max, const Tensor& logits) const override {
    Tensor m = view("cross_entropy_max", row_max);
    cpu().cross_entropy_max(m, view("cross_entropy_max", logits));
  }
  void cross_entropy_sumexp(Tensor& sumexp, Tensor& target_logit, const Tensor& logits,
                            const Tensor& row_max, const Tensor& targets,
                            int64_t v0) const override {
    const char* op = "cross_entropy_sumexp";
    Tensor s = view(op, sumexp), t = view(op, target_logit);
    cpu().cross_entropy_sumexp(s, t, view(op, logits), view(op, row_max), view(op, targets), v0);
  }
  void cross_entropy_loss(Tensor& losses, const Tensor& row_max, const Tensor& sumexp,
                          const Tensor& target_logit, const Tensor& targets) const override {
    const char* op = "cross_entropy_loss";
    Tensor l = view(op, losses);
    cpu().cross_entropy_loss(l, view(op, row_max), view(op, sumexp), view(op, target_logit),
                             view(op, targets));
  }
  void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& row_max,
                              const Tensor& sumexp, const Tensor& targets, float dloss,
                              int64_t v0) const override {
    const char* op = "cross_entropy_backward";
    Tensor d = view(op, dlogits);
    cpu().cross_entropy_backward(d, view(op, logits), view(op, row_max), view(op, sumexp),
                                 view(op, targets), dloss, v0);
  }
  void adamw_update(Tensor& w, const Tensor& g, Tensor& m, Tensor& v,
                    const AdamWScalars& k) const override {
    const char* op = "adamw_update";
    Tensor hw = view(op, w), hm = view(op, m), hv = view(op, v);
    cpu().adamw_update(hw, view(op, g), hm, hv, k);
  }
  double sum_of_squares(const Tensor& g) const override {
    return cpu().sum_of_squares(view("sum_of_squares", g));
  }
  void lora_merge(Tensor& w, const Tensor& a, const Tensor& b, float scale,
                  const Tensor* base) const override {
    const char* op = "lora_merge";
    Tensor hw = view(op, w);
    const Tensor hb = opt(op, base);
    cpu().lora_merge(hw, view(op, a), view(op, b), scale, base ? &hb : nullptr);
  }
  void lora_project(Tensor& da, Tensor& db, const Tensor& dw, const Tensor& a, const Tensor& b,
                    float scale) const override {
    const char* op = "lora_project";
    Tensor ha = view(op, da), hb = view(op, db);
    cpu().lora_project(ha, hb, view(op, dw), view(op, a), view(op, b), scale);
  }

 private:
  static const Backend& cpu() { return cpu::cpu_backend(); }

  // A host tensor's storage, now tagged as this device's (the host tensor keeps it alive).
  static Tensor on_device(Tensor host) {
    std::byte* p = host.bytes();
    const Shape shape = host.shape();
    const DType dtype = host.dtype();
    auto owner = std::make_shared<Tensor>(std::move(host));
    return Tensor::from_storage(shape, dtype, kDevice, std::shared_ptr<std::byte[]>(owner, p));
  }

  // A host view of a device tensor's storage, for one op; a host tensor is an error, as it would
  // be for a GPU backend (its address is no device address).
  static Tensor view(const char* op, const Tensor& t) {
    MAGIX_CHECK(t.defined(), "{}: an undefined tensor", op);
    MAGIX_CHECK(t.device() == kDevice,
                "{}: a {} {} tensor given to the (emulated) {} backend; upload it with copy", op,
                device_name(t.device()), shape_str(t.shape()), device_name(kDevice));
    return Tensor::view_of(const_cast<std::byte*>(t.device_bytes()), t.shape(), t.dtype());
  }
  static Tensor any_view(const char* op, const Tensor& t) {
    MAGIX_CHECK(t.defined(), "{}: an undefined tensor", op);
    return t.device() == Device::kCpu ? t : view(op, t);
  }
  static Tensor opt(const char* op, const Tensor* t) { return t ? view(op, *t) : Tensor(); }

  // An AttentionMask whose tensors are host views.
  struct MaskViews {
    MaskViews(const EmulatedDeviceBackend&, const char* op, const AttentionMask& m) : mask(m) {
      if (m.key_valid) {
        key_valid = view(op, *m.key_valid);
        mask.key_valid = &key_valid;
      }
      if (m.segment) {
        segment = view(op, *m.segment);
        mask.segment = &segment;
      }
    }
    Tensor key_valid, segment;
    AttentionMask mask;
  };
};

// Registers the emulated backend for Device::kCuda for the scope's life.
class EmulatedDeviceScope {
 public:
  EmulatedDeviceScope() { set_backend_for_testing(EmulatedDeviceBackend::kDevice, &backend_); }
  ~EmulatedDeviceScope() { set_backend_for_testing(EmulatedDeviceBackend::kDevice, nullptr); }
  EmulatedDeviceScope(const EmulatedDeviceScope&) = delete;
  EmulatedDeviceScope& operator=(const EmulatedDeviceScope&) = delete;

 private:
  EmulatedDeviceBackend backend_;
};

}  // namespace magix::test
