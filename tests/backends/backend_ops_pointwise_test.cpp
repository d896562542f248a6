// The op-table sweep, row-wise and elementwise layers: rmsnorm (offset 0 and 1, F32 and BF16
// out), rope (positions not 0..N-1), glu (SiLU and tanh-GELU, F32 and BF16), logit soft-capping
// (F32 and BF16), forward and backward, against fp64 references, on every backend.
#include <fmt/format.h>

#include <cmath>
#include <numbers>

#include "backend_ops_util.hpp"

namespace magix::test {
namespace {

class PointwiseOps : public BackendOpsTest {};

// ---- rmsnorm: out = x · r · (weight + offset), r = 1 / sqrt(mean(x²) + eps) ------------------

constexpr float kEps = 1e-6f;

const std::vector<Shape> kNormShapes = {{1, 1}, {3, 17}, {17, 65}, {2, 3, 256}, {129, 257}};

// Row 0 scaled down so that mean(x²) is of the order of eps (eps matters there).
std::vector<float> norm_input(const Shape& shape, uint32_t seed) {
  std::vector<float> x = uniform(shape_numel(shape), seed, -2, 2);
  for (int64_t c = 0; c < shape.back(); ++c) x[c] *= 1e-3f;
  return x;
}

// The rstd of each row of x (N, C), in double.
std::vector<double> rstd_reference(const std::vector<double>& x, int64_t N, int64_t C) {
  std::vector<double> r(N);
  for (int64_t n = 0; n < N; ++n) {
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += x[n * C + c] * x[n * C + c];
    r[n] = 1.0 / std::sqrt(ss / C + kEps);
  }
  return r;
}

TEST_P(PointwiseOps, RmsnormForward) {
  for (const Shape& shape : kNormShapes) {
    for (float offset : {0.0f, 1.0f}) {
      for (DType out_dt : {DType::kF32, DType::kBF16}) {
        const int64_t C = shape.back(), N = shape_numel(shape) / C;
        const Input x = put(shape, DType::kF32, norm_input(shape, 201));
        const Input w = random({C}, DType::kF32, 202, -0.5f, 0.5f);
        Tensor out = garbage(shape, out_dt), rstd = garbage({N}, DType::kF32);
        be().rmsnorm_forward(out, rstd, x.dev, w.dev, kEps, offset);
        const std::vector<double> r = rstd_reference(x.ref, N, C);
        std::vector<double> want(N * C);
        for (int64_t i = 0; i < N * C; ++i) want[i] = x.ref[i] * r[i / C] * (w.ref[i % C] + offset);
        const std::string what =
            fmt::format("x {} offset {} on {}", shape_str(shape), offset, dev_name());
        const std::string key = fmt::format("rmsnorm_forward F32->{}", dtype_name(out_dt));
        if (out_dt == DType::kF32) {
          expect_close(key, what, get(out), want);
        } else {
          expect_bf16_close(key, what, get(out), want);
        }
        expect_close("rmsnorm_forward rstd", what, get(rstd), r);
      }
    }
  }
}

TEST_P(PointwiseOps, RmsnormBackwardAccumulates) {
  for (const Shape& shape : kNormShapes) {
    for (float offset : {0.0f, 1.0f}) {
      for (bool with_dweight : {true, false}) {
        const int64_t C = shape.back(), N = shape_numel(shape) / C;
        const Input x = put(shape, DType::kF32, norm_input(shape, 211));
        const Input w = random({C}, DType::kF32, 212, -0.5f, 0.5f);
        const Input dout = random(shape, DType::kF32, 213);
        // rstd as the forward saved it: the reference's, rounded to fp32.
        const std::vector<double> r64 = rstd_reference(x.ref, N, C);
        const Input rstd = put({N}, DType::kF32, std::vector<float>(r64.begin(), r64.end()));
        Input dinp = random(shape, DType::kF32, 214), dw = random({C}, DType::kF32, 215);
        be().rmsnorm_backward(dinp.dev, with_dweight ? &dw.dev : nullptr, dout.dev, x.dev, w.dev,
                              rstd.dev, offset);
        // dx = r g dy - x r³ / C · sum(dy g x), dweight = sum over rows of dy x r (g = w + offset).
        std::vector<double> want_dinp = dinp.ref, want_dw = dw.ref;
        for (int64_t n = 0; n < N; ++n) {
          const double r = rstd.ref[n];
          double dot = 0;
          for (int64_t c = 0; c < C; ++c)
            dot += dout.ref[n * C + c] * (w.ref[c] + offset) * x.ref[n * C + c];
          for (int64_t c = 0; c < C; ++c) {
            const int64_t i = n * C + c;
            want_dinp[i] += r * (w.ref[c] + offset) * dout.ref[i] - x.ref[i] * r * r * r / C * dot;
            if (with_dweight) want_dw[c] += dout.ref[i] * x.ref[i] * r;
          }
        }
        const std::string what = fmt::format("x {} offset {} dweight:{} on {}", shape_str(shape),
                                             offset, with_dweight, dev_name());
        expect_close("rmsnorm_backward dinp", what, get(dinp.dev), want_dinp);
        expect_close("rmsnorm_backward dweight", what, get(dw.dev), want_dw,
                     with_dweight ? kF32Tol : 0.0);
      }
    }
  }
}

// ---- rope: (x[i], x[i + R/2]) rotated by the fp32 angle float(pos) · inv_freq[i] --------------
// R = D rotates whole heads (x given as (N, H·D)); R < D the first R dims of each head of a 3-D x
// (partial_rotary_factor), the other D - R passed through untouched.

struct RopeShape {
  int64_t N, H, D, R;
};

TEST_P(PointwiseOps, RopeForwardAndBackward) {
  const RopeShape shapes[] = {{1, 1, 2, 2},    {17, 3, 8, 8},   {5, 2, 34, 34}, {33, 4, 64, 64},
                              {65, 8, 64, 64}, {17, 3, 16, 12}, {5, 2, 34, 10}, {33, 4, 64, 48}};
  for (const RopeShape& s : shapes) {
    for (int mode = 0; mode < 3; ++mode) {  // forward F32, backward F32, forward BF16
      const bool backward = mode == 1, bf16 = mode == 2;
      std::vector<float> inv_freq(s.R / 2);
      for (int64_t i = 0; i < s.R / 2; ++i)
        inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / s.R));
      // Positions out of order, repeated, and large (up to 10^5).
      std::vector<int32_t> pos = uniform_ints(s.N, 221, 0, 5000);
      pos[0] = 100000;
      if (s.N > 2) pos[2] = pos[1];
      const Input x = random({s.N, s.H, s.D}, bf16 ? DType::kBF16 : DType::kF32, 222, -2, 2);
      const Input freq = put({s.R / 2}, DType::kF32, inv_freq);
      const Tensor p = put_i32({s.N}, pos);
      // Whole heads: (N, H·D) reads the same as (N, H, D).
      Tensor xt = s.R == s.D ? x.dev.reshape({s.N, s.H * s.D}) : x.dev;
      Tensor table = be().empty({s.N, s.R}, DType::kF32);
      be().rope_table(table, p, freq.dev);
      if (backward) {
        be().rope_backward(xt, table);
      } else {
        be().rope_forward(xt, table);
      }
      std::vector<double> want = x.ref;
      const int64_t half = s.R / 2;
      for (int64_t n = 0; n < s.N; ++n) {
        for (int64_t i = 0; i < half; ++i) {
          // The table's angle: one fp32 multiply; cos/sin of it in double.
          const double a = static_cast<float>(static_cast<float>(pos[n]) * inv_freq[i]);
          const double c = std::cos(a), sn = backward ? -std::sin(a) : std::sin(a);
          for (int64_t h = 0; h < s.H; ++h) {
            const int64_t i1 = (n * s.H + h) * s.D + i, i2 = i1 + half;
            want[i1] = x.ref[i1] * c - x.ref[i2] * sn;
            want[i2] = x.ref[i2] * c + x.ref[i1] * sn;
          }
        }
      }
      const std::string what =
          fmt::format("N={} H={} D={} R={} on {}", s.N, s.H, s.D, s.R, dev_name());
      const std::vector<double> got = get(xt);
      if (bf16) {
        expect_bf16_close("rope_forward BF16", what, got, want);
      } else {
        expect_close(backward ? "rope_backward F32" : "rope_forward F32", what, got, want);
      }
      // The dims past R are the input's, bit for bit.
      for (int64_t nh = 0; nh < s.N * s.H; ++nh) {
        for (int64_t i = s.R; i < s.D; ++i) {
          ASSERT_EQ(got[nh * s.D + i], x.ref[nh * s.D + i]) << what << " dim " << i;
        }
      }
    }
  }
}

// ---- glu: out = act(gate) · up ---------------------------------------------------------------

double act_reference(double x, Activation act) {
  if (act == Activation::kSilu) return x / (1.0 + std::exp(-x));
  const double u = std::sqrt(2.0 / std::numbers::pi) * (x + 0.044715 * x * x * x);
  return 0.5 * x * (1.0 + std::tanh(u));
}

double act_grad_reference(double x, Activation act) {
  if (act == Activation::kSilu) {
    const double s = 1.0 / (1.0 + std::exp(-x));
    return s * (1.0 + x * (1.0 - s));
  }
  const double k = std::sqrt(2.0 / std::numbers::pi);
  const double t = std::tanh(k * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3 * 0.044715 * x * x);
}

const char* act_name(Activation act) {
  return act == Activation::kSilu ? "silu" : "gelu_tanh";
}

const std::vector<Shape> kGluShapes = {{1}, {17}, {33, 65}, {3, 5, 7}, {200, 257}};

TEST_P(PointwiseOps, GluForward) {
  for (Activation act : {Activation::kSilu, Activation::kGeluTanh}) {
    for (DType dt : {DType::kF32, DType::kBF16}) {
      for (const Shape& shape : kGluShapes) {
        const Input gate = random(shape, dt, 231, -8, 8), up = random(shape, dt, 232, -2, 2);
        Tensor out = garbage(shape, dt);
        be().glu_forward(out, gate.dev, up.dev, act);
        std::vector<double> want(gate.ref.size());
        for (size_t i = 0; i < want.size(); ++i)
          want[i] = act_reference(gate.ref[i], act) * up.ref[i];
        const std::string key = fmt::format("glu_forward {} {}", act_name(act), dtype_name(dt));
        const std::string what = fmt::format("{} on {}", shape_str(shape), dev_name());
        if (dt == DType::kF32) {
          expect_close(key, what, get(out), want);
        } else {
          expect_bf16_close(key, what, get(out), want);
        }
      }
    }
  }
}

TEST_P(PointwiseOps, GluBackwardWrites) {
  for (Activation act : {Activation::kSilu, Activation::kGeluTanh}) {
    for (DType dt : {DType::kF32, DType::kBF16}) {
      for (const Shape& shape : kGluShapes) {
        const Input gate = random(shape, dt, 241, -8, 8), up = random(shape, dt, 242, -2, 2);
        const Input dout = random(shape, DType::kF32, 243);
        Tensor dgate = garbage(shape, dt), dup = garbage(shape, dt);  // written (=)
        be().glu_backward(dgate, dup, dout.dev, gate.dev, up.dev, act);
        std::vector<double> want_dgate(gate.ref.size()), want_dup(gate.ref.size());
        for (size_t i = 0; i < want_dup.size(); ++i) {
          want_dgate[i] = dout.ref[i] * up.ref[i] * act_grad_reference(gate.ref[i], act);
          want_dup[i] = dout.ref[i] * act_reference(gate.ref[i], act);
        }
        const std::string key = fmt::format("glu_backward {} {}", act_name(act), dtype_name(dt));
        const std::string what = fmt::format("{} on {}", shape_str(shape), dev_name());
        if (dt == DType::kF32) {
          expect_close(key + " dgate", what, get(dgate), want_dgate);
          expect_close(key + " dup", what, get(dup), want_dup);
        } else {
          expect_bf16_close(key + " dgate", what, get(dgate), want_dgate);
          expect_bf16_close(key + " dup", what, get(dup), want_dup);
        }
      }
    }
  }
}

// ---- softcap: y = cap · tanh(x / cap); dx *= 1 - (y / cap)² ----------------------------------

TEST_P(PointwiseOps, SoftcapForwardAndBackward) {
  for (const float cap : {0.5f, 30.0f}) {
    for (DType dt : {DType::kF32, DType::kBF16}) {
      for (const Shape& shape : kGluShapes) {
        const Input x = random(shape, dt, 251, -3 * cap, 3 * cap);
        Tensor y = garbage(shape, dt);
        be().copy(y, x.dev);
        be().softcap_forward(y, cap);
        std::vector<double> want(x.ref.size());
        for (size_t i = 0; i < want.size(); ++i) want[i] = cap * std::tanh(x.ref[i] / cap);
        const std::string what =
            fmt::format("{} cap {} {} on {}", shape_str(shape), cap, dtype_name(dt), dev_name());
        // The backward takes y as the forward wrote it (its dtype's values).
        const std::vector<double> y_got = get(y);
        Input dx = random(shape, dt, 252);
        std::vector<double> want_dx(x.ref.size());
        for (size_t i = 0; i < want.size(); ++i) {
          const double t = y_got[i] / cap;
          want_dx[i] = dx.ref[i] * (1 - t * t);
        }
        be().softcap_backward(dx.dev, y, cap);
        if (dt == DType::kF32) {
          expect_close("softcap_forward", what, y_got, want);
          expect_close("softcap_backward", what, get(dx.dev), want_dx);
        } else {
          expect_bf16_close("softcap_forward BF16", what, y_got, want);
          expect_bf16_close("softcap_backward BF16", what, get(dx.dev), want_dx);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, PointwiseOps, ::testing::ValuesIn(swept_devices()),
                         device_param_name);

}  // namespace
}  // namespace magix::test
