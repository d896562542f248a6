// The op-table sweep, backward ops against central differences of their forward ops, both run
// through the table in fp32 (one check per family: matmul, rmsnorm, rope, glu, attention with and
// without score soft-capping, logit soft-capping, embedding, cross-entropy). The objective is f =
// sum(w · out) for a fixed random w, so the backward op receives dout = w; gradients start at zero.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "backend_ops_util.hpp"

namespace magix::test {
namespace {

class FiniteDiffOps : public BackendOpsTest {
 protected:
  // sum(w · out) in double.
  double objective(const std::vector<double>& w, const Tensor& out) const {
    const std::vector<double> y = get(out);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += w[i] * y[i];
    return s;
  }

  // Central differences of f (which reads the fp32 input x) at up to 24 coordinates spread over
  // x, compared with the analytic gradient `grad` (all of x) by max |fd - grad| / max |grad|.
  void expect_gradient(const std::string& key, const std::string& what,
                       const std::function<double(const std::vector<float>&)>& f,
                       std::vector<float> x, const std::vector<double>& grad) {
    ASSERT_EQ(x.size(), grad.size()) << what;
    constexpr float kStep = 1e-2f;
    const size_t stride = std::max<size_t>(1, x.size() / 24);
    std::vector<double> fd, an;
    for (size_t i = 0; i < x.size(); i += stride) {
      const float saved = x[i];
      x[i] = saved + kStep;
      const float up = x[i];
      const double f_up = f(x);
      x[i] = saved - kStep;
      const float down = x[i];
      const double f_down = f(x);
      x[i] = saved;
      fd.push_back((f_up - f_down) / (double(up) - double(down)));  // the step fp32 took
      an.push_back(grad[i]);
    }
    const double err = scaled_max_error(fd, an);
    record_error(key + " vs central differences", err, kFiniteDiffTol);
    EXPECT_LE(err, kFiniteDiffTol) << key << " | " << what << " on " << dev_name();
  }

  // Runs `fwd` with input `idx` of `inputs` replaced by x (a device copy of fp32 values).
  std::function<double(const std::vector<float>&)> through(
      const std::vector<std::vector<float>>& inputs, const std::vector<Shape>& shapes, size_t idx,
      const std::function<Tensor(const std::vector<Tensor>&)>& fwd, const std::vector<double>& w) {
    return [=, this](const std::vector<float>& x) {
      std::vector<Tensor> t;
      for (size_t i = 0; i < inputs.size(); ++i)
        t.push_back(put(shapes[i], DType::kF32, i == idx ? x : inputs[i]).dev);
      return objective(w, fwd(t));
    };
  }

  // Checks every input's gradient: grads[i] is the analytic gradient of input i.
  void expect_gradients(const std::string& key, const std::vector<std::string>& names,
                        const std::vector<std::vector<float>>& inputs,
                        const std::vector<Shape>& shapes,
                        const std::function<Tensor(const std::vector<Tensor>&)>& fwd,
                        const std::vector<double>& w, const std::vector<Tensor>& grads) {
    for (size_t i = 0; i < grads.size(); ++i) {
      expect_gradient(key + " d" + names[i], names[i], through(inputs, shapes, i, fwd, w),
                      inputs[i], get(grads[i]));
    }
  }

  std::vector<Tensor> put_all(const std::vector<std::vector<float>>& in,
                              const std::vector<Shape>& shapes) const {
    std::vector<Tensor> t;
    for (size_t i = 0; i < in.size(); ++i) t.push_back(put(shapes[i], DType::kF32, in[i]).dev);
    return t;
  }

  // Attention forward/backward with padding, packing and a window (and soft-capped scores when
  // `softcap` > 0) against finite differences of the forward.
  void check_attention_gradients(float softcap, const std::string& label) {
    const int64_t B = 2, T = 5, Hq = 2, Hkv = 1, D = 3;
    const float scale = 0.7f;
    const Tensor valid = put_i32({B, T}, {1, 1, 1, 1, 1, 0, 1, 1, 0, 1});
    const Tensor seg = put_i32({B, T}, {0, 0, 0, 1, 1, 0, 0, 0, 0, 0});
    const AttentionMask mask{&valid, &seg, 3, softcap};
    const std::vector<Shape> shapes = {{B, T, Hq, D}, {B, T, Hkv, D}, {B, T, Hkv, D}};
    const std::vector<std::vector<float>> in = {uniform(B * T * Hq * D, 541, -2, 2),
                                                uniform(B * T * Hkv * D, 542, -2, 2),
                                                uniform(B * T * Hkv * D, 543)};
    const std::vector<double> w = widen(uniform(B * T * Hq * D, 544));
    Tensor lse = be().empty({B, Hq, T}, DType::kF32);
    auto fwd = [&](const std::vector<Tensor>& t) {
      Tensor out = be().empty(shapes[0], DType::kF32);
      be().attention_forward(out, lse, t[0], t[1], t[2], scale, mask);
      return out;
    };
    const std::vector<Tensor> x = put_all(in, shapes);
    const Tensor out = fwd(x);
    std::vector<Tensor> g = {be().zeros(shapes[0], DType::kF32),
                             be().zeros(shapes[1], DType::kF32),
                             be().zeros(shapes[2], DType::kF32)};
    be().attention_backward(g[0], g[1], g[2],
                            put(shapes[0], DType::kF32, {w.begin(), w.end()}).dev, out, lse, x[0],
                            x[1], x[2], scale, mask);
    expect_gradients(label, {"q", "k", "v"}, in, shapes, fwd, w, g);
  }
};

TEST_P(FiniteDiffOps, Matmul) {
  const int64_t N = 3, C = 5, OC = 4;
  const std::vector<Shape> shapes = {{N, C}, {OC, C}, {OC}};
  const std::vector<std::vector<float>> in = {uniform(N * C, 501), uniform(OC * C, 502),
                                              uniform(OC, 503)};
  const std::vector<double> w = widen(uniform(N * OC, 504));
  auto fwd = [&](const std::vector<Tensor>& t) {
    Tensor out = be().empty({N, OC}, DType::kF32);
    be().matmul_forward(out, t[0], t[1], &t[2]);
    return out;
  };
  const std::vector<Tensor> x = put_all(in, shapes);
  std::vector<Tensor> g = {be().zeros(shapes[0], DType::kF32), be().zeros(shapes[1], DType::kF32),
                           be().zeros(shapes[2], DType::kF32)};
  be().matmul_backward(&g[0], &g[1], &g[2], put({N, OC}, DType::kF32, {w.begin(), w.end()}).dev,
                       x[0], x[1]);
  expect_gradients("matmul_backward", {"inp", "weight", "bias"}, in, shapes, fwd, w, g);
}

TEST_P(FiniteDiffOps, Rmsnorm) {
  const int64_t N = 3, C = 7;
  for (float offset : {0.0f, 1.0f}) {
    const std::vector<Shape> shapes = {{N, C}, {C}};
    const std::vector<std::vector<float>> in = {uniform(N * C, 511, -2, 2), uniform(C, 512)};
    const std::vector<double> w = widen(uniform(N * C, 513));
    Tensor rstd = be().empty({N}, DType::kF32);
    auto fwd = [&](const std::vector<Tensor>& t) {
      Tensor out = be().empty({N, C}, DType::kF32);
      be().rmsnorm_forward(out, rstd, t[0], t[1], 1e-6f, offset);
      return out;
    };
    const std::vector<Tensor> x = put_all(in, shapes);
    fwd(x);  // rstd of the unperturbed input
    std::vector<Tensor> g = {be().zeros(shapes[0], DType::kF32),
                             be().zeros(shapes[1], DType::kF32)};
    be().rmsnorm_backward(g[0], &g[1], put({N, C}, DType::kF32, {w.begin(), w.end()}).dev, x[0],
                          x[1], rstd, offset);
    expect_gradients(fmt::format("rmsnorm_backward offset {}", offset), {"inp", "weight"}, in,
                     shapes, fwd, w, g);
  }
}

TEST_P(FiniteDiffOps, Rope) {
  const int64_t N = 3, H = 2, D = 6;
  const std::vector<Shape> shapes = {{N, H, D}};
  const std::vector<std::vector<float>> in = {uniform(N * H * D, 521)};
  const std::vector<double> w = widen(uniform(N * H * D, 522));
  const Tensor pos = put_i32({N}, {7, 2, 300});
  const Tensor inv_freq = put({D / 2}, DType::kF32, {1.0f, 0.1f, 0.01f}).dev;
  Tensor table = be().empty({N, D}, DType::kF32);
  be().rope_table(table, pos, inv_freq);
  auto fwd = [&](const std::vector<Tensor>& t) {
    Tensor x = t[0];
    be().rope_forward(x, table);
    return x;
  };
  Tensor g = put(shapes[0], DType::kF32, {w.begin(), w.end()}).dev;  // rotated back in place
  be().rope_backward(g, table);
  expect_gradients("rope_backward", {"x"}, in, shapes, fwd, w, {g});
}

TEST_P(FiniteDiffOps, Glu) {
  const int64_t n = 9;
  for (Activation act : {Activation::kSilu, Activation::kGeluTanh}) {
    const std::vector<Shape> shapes = {{n}, {n}};
    std::vector<std::vector<float>> in = {uniform(n, 531, -4, 4), uniform(n, 532)};
    const std::vector<double> w = widen(uniform(n, 533));
    auto fwd = [&](const std::vector<Tensor>& t) {
      Tensor out = be().empty({n}, DType::kF32);
      be().glu_forward(out, t[0], t[1], act);
      return out;
    };
    const std::vector<Tensor> x = put_all(in, shapes);
    std::vector<Tensor> g = {be().empty({n}, DType::kF32), be().empty({n}, DType::kF32)};
    be().glu_backward(g[0], g[1], put({n}, DType::kF32, {w.begin(), w.end()}).dev, x[0], x[1], act);
    expect_gradients(act == Activation::kSilu ? "glu_backward silu" : "glu_backward gelu_tanh",
                     {"gate", "up"}, in, shapes, fwd, w, g);
  }
}

TEST_P(FiniteDiffOps, Attention) { check_attention_gradients(0, "attention_backward"); }

TEST_P(FiniteDiffOps, AttentionSoftcap) {
  check_attention_gradients(1.2f, "attention_backward softcap 1.2");
}

TEST_P(FiniteDiffOps, Softcap) {
  const int64_t N = 3, V = 5;
  const float cap = 1.5f;
  const std::vector<Shape> shapes = {{N, V}};
  const std::vector<std::vector<float>> in = {uniform(N * V, 561, -4, 4)};
  const std::vector<double> w = widen(uniform(N * V, 562));
  auto fwd = [&](const std::vector<Tensor>& t) {
    Tensor y = be().empty({N, V}, DType::kF32);
    be().copy(y, t[0]);
    be().softcap_forward(y, cap);
    return y;
  };
  const std::vector<Tensor> x = put_all(in, shapes);
  const Tensor y = fwd(x);
  std::vector<Tensor> g = {put({N, V}, DType::kF32, {w.begin(), w.end()}).dev};
  be().softcap_backward(g[0], y, cap);
  expect_gradients("softcap_backward", {"x"}, in, shapes, fwd, w, g);
}

TEST_P(FiniteDiffOps, Embedding) {
  const int64_t N = 6, C = 3, rows = 4, row_start = 2;
  const float scale = 1.5f;
  const Tensor ids = put_i32({N}, {2, 5, 0, 3, 9, 2});  // 0 and 9 outside the shard
  const std::vector<Shape> shapes = {{rows, C}};
  const std::vector<std::vector<float>> in = {uniform(rows * C, 551)};
  const std::vector<double> w = widen(uniform(N * C, 552));
  auto fwd = [&](const std::vector<Tensor>& t) {
    Tensor out = be().empty({N, C}, DType::kF32);
    be().embedding_forward(out, ids, t[0], row_start, scale);
    return out;
  };
  std::vector<Tensor> g = {be().zeros(shapes[0], DType::kF32)};
  be().embedding_backward(g[0], put({N, C}, DType::kF32, {w.begin(), w.end()}).dev, ids, row_start,
                          scale);
  expect_gradients("embedding_backward", {"table"}, in, shapes, fwd, w, g);
}

TEST_P(FiniteDiffOps, CrossEntropy) {
  const int64_t N = 4, V = 7;
  const float dloss = 0.25f;
  const Tensor targets = put_i32({N}, {3, -100, 0, 6});
  const std::vector<Shape> shapes = {{N, V}};
  const std::vector<std::vector<float>> in = {uniform(N * V, 561, -3, 3)};
  // f = dloss · sum of the losses: the three stages on one shard (v0 = 0).
  Tensor row_max = be().empty({N}, DType::kF32), sumexp = be().empty({N}, DType::kF32);
  auto fwd = [&](const std::vector<Tensor>& t) {
    Tensor target_logit = be().empty({N}, DType::kF32), losses = be().empty({N}, DType::kF32);
    be().cross_entropy_max(row_max, t[0]);
    be().cross_entropy_sumexp(sumexp, target_logit, t[0], row_max, targets, 0);
    be().cross_entropy_loss(losses, row_max, sumexp, target_logit, targets);
    return losses;
  };
  const std::vector<double> w(N, dloss);
  const std::vector<Tensor> x = put_all(in, shapes);
  fwd(x);
  std::vector<Tensor> g = {be().empty({N, V}, DType::kF32)};
  be().cross_entropy_backward(g[0], x[0], row_max, sumexp, targets, dloss, 0);
  expect_gradients("cross_entropy_backward", {"logits"}, in, shapes, fwd, w, g);
}

INSTANTIATE_TEST_SUITE_P(Backends, FiniteDiffOps, ::testing::ValuesIn(swept_devices()),
                         device_param_name);

}  // namespace
}  // namespace magix::test
