// An emulated device for tests: a Backend whose tensors are tagged Device::kCuda but whose
// storage is host memory, each op unwrapping its tensors to host views and running the CPU
// backend's op. It proves the device plumbing on a machine without a GPU:
// - model, training, LoRA, scoring and generation code sees a non-host device exactly as with a
//   real GPU backend (the same Device value, so the same branches), and every host access of one
//   of its tensors (Tensor::data, span, bytes, clone, to, fill_zero) throws;
// - every op rejects host tensors as a GPU backend must (only copy crosses), so a host buffer
//   passed to an op is found too: the op table's own check (backends/op_checks.cpp), as for every
//   backend, since this one checks nothing itself;
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
  // The device memory it reports (default: the host's), for the up-front fit checks.
  double memory_bytes() const override {
    return memory_bytes_ > 0 ? memory_bytes_ : Backend::memory_bytes();
  }
  void set_memory_bytes(double bytes) { memory_bytes_ = bytes; }

 private:
  double memory_bytes_ = 0;
  // Each kernel runs the CPU backend's op on host views of its tensors, which the op checked
  // (backends/op_checks.cpp): this backend checks nothing of its own.
  Tensor do_zeros(const Shape& shape, DType dtype) const override {
    return on_device(Tensor(shape, dtype));
  }
  Tensor do_empty(const Shape& shape, DType dtype) const override {
    Tensor h = Tensor::empty(shape, dtype);
    if (h.nbytes() > 0) std::memset(h.bytes(), 0xff, h.nbytes());  // NaN / -1: garbage
    return on_device(std::move(h));
  }
  void do_fill_zero(Tensor& t) const override {
    Tensor h = view(t);
    cpu().fill_zero(h);
  }
  // The one op that crosses: either side may be a host tensor.
  void do_copy(Tensor& dst, const Tensor& src) const override {
    Tensor d = any_view(dst), s = any_view(src);
    cpu().copy(d, s);
  }
  void do_add(Tensor& dst, const Tensor& src) const override {
    Tensor d = view(dst);
    cpu().add(d, view(src));
  }
  void do_scale(Tensor& x, float s) const override {
    Tensor h = view(x);
    cpu().scale(h, s);
  }
  void do_dropout(Tensor& out, const Tensor& inp, uint64_t key, int64_t row0, int64_t col0,
                  int64_t cols, float p) const override {
    Tensor o = view(out);
    cpu().dropout(o, view(inp), key, row0, col0, cols, p);
  }
  void do_matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight,
                         const Tensor* bias) const override {
    Tensor o = view(out);
    const Tensor b = opt(bias);
    cpu().matmul_forward(o, view(inp), view(weight), bias ? &b : nullptr);
  }
  void do_matmul_backward(Tensor* dinp, Tensor* dweight, Tensor* dbias, const Tensor& dout,
                          const Tensor& inp, const Tensor& weight) const override {
    Tensor di = opt(dinp), dw = opt(dweight), db = opt(dbias);
    cpu().matmul_backward(dinp ? &di : nullptr, dweight ? &dw : nullptr, dbias ? &db : nullptr,
                          view(dout), view(inp), view(weight));
  }
  void do_matmul_decode(Tensor& out, const Tensor& inp, const Tensor& weight,
                        const Tensor* bias) const override {
    Tensor o = view(out);
    const Tensor b = opt(bias);
    cpu().matmul_decode(o, view(inp), view(weight), bias ? &b : nullptr);
  }
  void do_residual_forward(Tensor& out, const Tensor& residual, const Tensor& y,
                           const Tensor* bias) const override {
    Tensor o = view(out);
    const Tensor b = opt(bias);
    cpu().residual_forward(o, view(residual), view(y), bias ? &b : nullptr);
  }
  void do_bias_backward(Tensor& dbias, const Tensor& dout) const override {
    Tensor d = view(dbias);
    cpu().bias_backward(d, view(dout));
  }
  void do_rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                          float eps, float offset) const override {
    Tensor o = view(out), r = view(rstd);
    cpu().rmsnorm_forward(o, r, view(inp), view(weight), eps, offset);
  }
  void do_rmsnorm_backward(Tensor& dinp, Tensor* dweight, const Tensor& dout, const Tensor& inp,
                           const Tensor& weight, const Tensor& rstd, float offset) const override {
    Tensor di = view(dinp), dw = opt(dweight);
    cpu().rmsnorm_backward(di, dweight ? &dw : nullptr, view(dout), view(inp), view(weight),
                           view(rstd), offset);
  }
  void do_rope_table(Tensor& table, const Tensor& pos, const Tensor& inv_freq) const override {
    Tensor t = view(table);
    cpu().rope_table(t, view(pos), view(inv_freq));
  }
  void do_rope_forward(Tensor& x, const Tensor& table) const override {
    Tensor h = view(x);
    cpu().rope_forward(h, view(table));
  }
  void do_rope_backward(Tensor& dx, const Tensor& table) const override {
    Tensor h = view(dx);
    cpu().rope_backward(h, view(table));
  }
  void do_attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                            const Tensor& v, float scale,
                            const AttentionMask& mask) const override {
    Tensor o = view(out), l = view(lse);
    MaskViews m(mask);
    cpu().attention_forward(o, l, view(q), view(k), view(v), scale, m.mask);
  }
  void do_attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                             const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                             const Tensor& v, float scale,
                             const AttentionMask& mask) const override {
    Tensor a = view(dq), b = view(dk), c = view(dv);
    MaskViews m(mask);
    cpu().attention_backward(a, b, c, view(dout), view(out), view(lse), view(q), view(k), view(v),
                             scale, m.mask);
  }
  void do_attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache,
                           const Tensor& v_cache, const Tensor& valid, int64_t slot, float scale,
                           int64_t window, float softcap) const override {
    Tensor o = view(out);
    cpu().attention_decode(o, view(q), view(k_cache), view(v_cache), view(valid), slot, scale,
                           window, softcap);
  }
  void do_softcap_forward(Tensor& x, float cap) const override {
    Tensor h = view(x);
    cpu().softcap_forward(h, cap);
  }
  void do_softcap_backward(Tensor& dx, const Tensor& y, float cap) const override {
    Tensor h = view(dx);
    cpu().softcap_backward(h, view(y), cap);
  }
  void do_glu_forward(Tensor& out, const Tensor& gate, const Tensor& up,
                      Activation act) const override {
    Tensor o = view(out);
    cpu().glu_forward(o, view(gate), view(up), act);
  }
  void do_glu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                       const Tensor& up, Activation act) const override {
    Tensor g = view(dgate), u = view(dup);
    cpu().glu_backward(g, u, view(dout), view(gate), view(up), act);
  }
  void do_embedding_forward(Tensor& out, const Tensor& ids, const Tensor& table, int64_t row_start,
                            float scale) const override {
    Tensor o = view(out);
    cpu().embedding_forward(o, view(ids), view(table), row_start, scale);
  }
  void do_embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& ids,
                             int64_t row_start, float scale) const override {
    Tensor d = view(dtable);
    cpu().embedding_backward(d, view(dout), view(ids), row_start, scale);
  }
  void do_cross_entropy_max(Tensor& row_max, const Tensor& logits) const override {
    Tensor m = view(row_max);
    cpu().cross_entropy_max(m, view(logits));
  }
  void do_cross_entropy_sumexp(Tensor& sumexp, Tensor& target_logit, const Tensor& logits,
                               const Tensor& row_max, const Tensor& targets,
                               int64_t v0) const override {
    Tensor s = view(sumexp), t = view(target_logit);
    cpu().cross_entropy_sumexp(s, t, view(logits), view(row_max), view(targets), v0);
  }
  void do_cross_entropy_loss(Tensor& losses, const Tensor& row_max, const Tensor& sumexp,
                             const Tensor& target_logit, const Tensor& targets) const override {
    Tensor l = view(losses);
    cpu().cross_entropy_loss(l, view(row_max), view(sumexp), view(target_logit), view(targets));
  }
  void do_cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& row_max,
                                 const Tensor& sumexp, const Tensor& targets, float dloss,
                                 int64_t v0) const override {
    Tensor d = view(dlogits);
    cpu().cross_entropy_backward(d, view(logits), view(row_max), view(sumexp), view(targets), dloss,
                                 v0);
  }
  void do_adamw_update(Tensor& w, const Tensor& g, Tensor& m, Tensor& v,
                       const AdamWScalars& k) const override {
    Tensor hw = view(w), hm = view(m), hv = view(v);
    cpu().adamw_update(hw, view(g), hm, hv, k);
  }
  double do_sum_of_squares(const Tensor& g) const override { return cpu().sum_of_squares(view(g)); }
  void do_lora_merge(Tensor& w, const Tensor& a, const Tensor& b, float scale,
                     const Tensor* base) const override {
    Tensor hw = view(w);
    const Tensor hb = opt(base);
    cpu().lora_merge(hw, view(a), view(b), scale, base ? &hb : nullptr);
  }
  void do_lora_project(Tensor& da, Tensor& db, const Tensor& dw, const Tensor& a, const Tensor& b,
                       float scale) const override {
    Tensor ha = view(da), hb = view(db);
    cpu().lora_project(ha, hb, view(dw), view(a), view(b), scale);
  }

  static const Backend& cpu() { return cpu::cpu_backend(); }

  // A host tensor's storage, now tagged as this device's (the host tensor keeps it alive).
  static Tensor on_device(Tensor host) {
    std::byte* p = host.bytes();
    const Shape shape = host.shape();
    const DType dtype = host.dtype();
    auto owner = std::make_shared<Tensor>(std::move(host));
    return Tensor::from_storage(shape, dtype, kDevice, std::shared_ptr<std::byte[]>(owner, p));
  }

  // A host view of a device tensor's storage, for one op (the op checked that the tensor lives on
  // this device: a host tensor given to an op fails there, as it must for a GPU backend).
  static Tensor view(const Tensor& t) {
    return Tensor::view_of(const_cast<std::byte*>(t.device_bytes()), t.shape(), t.dtype());
  }
  // copy: either side may be a host tensor.
  static Tensor any_view(const Tensor& t) { return t.device() == Device::kCpu ? t : view(t); }
  static Tensor opt(const Tensor* t) { return t ? view(*t) : Tensor(); }

  // An AttentionMask whose tensors are host views.
  struct MaskViews {
    explicit MaskViews(const AttentionMask& m) : mask(m) {
      if (m.key_valid) {
        key_valid = view(*m.key_valid);
        mask.key_valid = &key_valid;
      }
      if (m.segment) {
        segment = view(*m.segment);
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
  EmulatedDeviceBackend& backend() { return backend_; }

 private:
  EmulatedDeviceBackend backend_;
};

}  // namespace magix::test
