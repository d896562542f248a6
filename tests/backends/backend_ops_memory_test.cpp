// The op-table sweep, memory and elementwise ops: zeros, empty, fill_zero, copy (F32 <-> BF16,
// same dtype, host <-> device), add, residual_forward, bias_backward, sum_of_squares and
// adamw_update, against fp64 references, on every registered backend.
#include <fmt/format.h>

#include <cfloat>
#include <cmath>
#include <limits>

#include "backend_ops_util.hpp"
#include "magix/hash.hpp"

namespace magix::test {
namespace {

class MemoryOps : public BackendOpsTest {};

constexpr DType kAllDtypes[] = {DType::kF32, DType::kBF16, DType::kI32};

// Shapes with no, one and many elements, of rank 0 to 3.
const std::vector<Shape> kShapes = {{}, {0}, {1}, {3, 0, 2}, {17}, {3, 33}, {2, 3, 65}};

TEST_P(MemoryOps, ZerosAndEmptyHaveShapeDtypeAndDevice) {
  for (DType dtype : kAllDtypes) {
    for (const Shape& shape : kShapes) {
      const std::string what =
          fmt::format("{} {} on {}", dtype_name(dtype), shape_str(shape), dev_name());
      SCOPED_TRACE(what);
      for (const Tensor& t : {be().zeros(shape, dtype), be().empty(shape, dtype)}) {
        EXPECT_TRUE(t.defined());
        EXPECT_EQ(t.shape(), shape);
        EXPECT_EQ(t.dtype(), dtype);
        EXPECT_EQ(t.device(), GetParam());
        EXPECT_EQ(t.numel(), shape_numel(shape));
      }
      const Tensor z = be().zeros(shape, dtype);
      expect_same("zeros", what, get(z), std::vector<double>(z.numel(), 0.0));
    }
  }
}

TEST_P(MemoryOps, FillZeroOverwritesGarbage) {
  for (DType dtype : kAllDtypes) {
    for (const Shape& shape : {Shape{0}, Shape{1}, Shape{3, 33}, Shape{70001}}) {
      const std::string what =
          fmt::format("{} {} on {}", dtype_name(dtype), shape_str(shape), dev_name());
      Tensor t = garbage(shape, dtype);
      be().fill_zero(t);
      EXPECT_EQ(t.shape(), shape) << what;
      expect_same("fill_zero", what, get(t), std::vector<double>(t.numel(), 0.0));
      if (dtype == DType::kBF16) {  // +0, not -0
        for (uint16_t bits : get_bits(t)) ASSERT_EQ(bits, 0) << what;
      }
    }
  }
}

// Values that exercise bf16 rounding: ties (to even, both ways), just off ties, signed zeros,
// denormals, the largest finite bf16 and values that round past it, infinities and NaN, then
// random values over many binades.
std::vector<float> conversion_values() {
  std::vector<float> v = {0.0f,
                          -0.0f,
                          1.0f,
                          -1.0f,
                          FLT_MIN,
                          -FLT_MIN,
                          FLT_TRUE_MIN,
                          1e-40f,
                          FLT_MAX,
                          -FLT_MAX,
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(),
                          bf16_value(0x7f7f),
                          std::nextafter(bf16_value(0x7f7f), FLT_MAX)};
  for (uint16_t b : {uint16_t{0x3f80}, uint16_t{0x3f81}, uint16_t{0x4049}, uint16_t{0xc2f7},
                     uint16_t{0x0001}, uint16_t{0x7f7e}}) {
    const float lo = bf16_value(b), hi = bf16_value(static_cast<uint16_t>(b + 1));
    const float mid = lo + (hi - lo) / 2;  // exact: a tie between two bf16 values
    v.insert(v.end(), {mid, std::nextafter(mid, lo), std::nextafter(mid, hi), -mid});
  }
  for (float x : uniform(1000, 11, -1.0f, 1.0f)) v.push_back(std::ldexp(x, int(x * 1000) % 120));
  return v;
}

TEST_P(MemoryOps, CopyConvertsF32ToBf16RoundingToNearestEven) {
  const std::vector<float> values = conversion_values();
  const Shape shape = {std::ssize(values)};
  const Input src = put(shape, DType::kF32, values);
  Tensor dst = garbage(shape, DType::kBF16);
  be().copy(dst, src.dev);
  const std::vector<uint16_t> bits = get_bits(dst);
  size_t bad = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t want = bf16_bits(values[i]);
    const bool same = std::isnan(values[i]) ? (bits[i] & 0x7fffu) > 0x7f80u : bits[i] == want;
    if (!same && bad++ < 5) {
      ADD_FAILURE() << "copy F32->BF16 on " << dev_name() << ": " << values[i] << " gave 0x"
                    << std::hex << bits[i] << ", want 0x" << want;
    }
  }
  record_error("copy F32->BF16 (elements differing)", static_cast<double>(bad), 0);
}

TEST_P(MemoryOps, CopyWidensEveryBf16Exactly) {
  Tensor host({65536}, DType::kBF16);
  std::vector<double> want(65536);
  for (uint32_t b = 0; b < 65536; ++b) {
    host.data<uint16_t>()[b] = static_cast<uint16_t>(b);
    want[b] = bf16_value(static_cast<uint16_t>(b));
  }
  Tensor src = be().empty({65536}, DType::kBF16), dst = garbage({256, 256}, DType::kF32);
  be().copy(src, host);
  be().copy(dst, src);  // device to device, (65536) into (256, 256)
  expect_same("copy BF16->F32", "every bit pattern on " + dev_name(), get(dst), want);
}

TEST_P(MemoryOps, CopySameDtypeKeepsBitsAcrossShapes) {
  const std::vector<float> values = conversion_values();
  const int64_t n = std::ssize(values);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const Input src = put({n}, dtype, values);
    Tensor dst = garbage({1, n}, dtype);
    be().copy(dst, src.dev);
    expect_same(fmt::format("copy {}->{}", dtype_name(dtype), dtype_name(dtype)), dev_name(),
                get(dst), src.ref);
  }
  const std::vector<int32_t> ids = uniform_ints(70001, 5, INT32_MIN, INT32_MAX);
  Tensor src = put_i32({70001}, ids), dst = garbage({70001}, DType::kI32);
  be().copy(dst, src);
  expect_same("copy I32->I32", dev_name(), get(dst), std::vector<double>(ids.begin(), ids.end()));
}

TEST_P(MemoryOps, AddIsOneFp32AdditionPerElement) {
  for (int64_t n : {1, 33, 70001}) {
    const auto a = uniform(n, 21, -4, 4), b = uniform(n, 22, -4, 4);
    Tensor dst = put({n}, DType::kF32, a).dev;
    be().add(dst, put({1, n}, DType::kF32, b).dev);
    std::vector<double> want(n);
    for (int64_t i = 0; i < n; ++i) want[i] = static_cast<float>(double(a[i]) + b[i]);
    expect_same("add F32", fmt::format("n={} on {}", n, dev_name()), get(dst), want);
  }
}

TEST_P(MemoryOps, ScaleIsOneFp32MultiplicationPerElement) {
  for (int64_t n : {1, 33, 70001}) {
    const auto a = uniform(n, 23, -4, 4);
    Tensor x = put({n}, DType::kF32, a).dev;
    be().scale(x, 0.37f);
    std::vector<double> want(n);
    for (int64_t i = 0; i < n; ++i) want[i] = static_cast<float>(a[i]) * 0.37f;
    expect_same("scale F32", fmt::format("n={} on {}", n, dev_name()), get(x), want);
  }
}

// dropout: the counter-based mask of the op table's formula (reproduced here), the 1 / (1 - p)
// rescale, BF16 inputs widened, in place, and a box [row0, col0] of a larger global tensor.
TEST_P(MemoryOps, DropoutIsTheCounterBasedMaskOfTheGlobalElement) {
  const int64_t rows = 37, cols = 300, global_cols = 1000, row0 = 5, col0 = 600;
  const uint64_t key = 0x1234567890abcdefull;
  for (const float p : {0.0f, 0.1f, 0.5f}) {
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      for (const bool in_place : {false, true}) {
        if (in_place && dtype != DType::kF32) continue;
        const Input x = put({rows, cols}, dtype, uniform(rows * cols, 31, -2, 2));
        Tensor out = in_place ? x.dev : garbage({rows, cols}, DType::kF32);
        be().dropout(out, x.dev, key, row0, col0, global_cols, p);
        const uint64_t threshold = static_cast<uint64_t>(std::llround(double(p) * 16777216.0));
        const float scale = 1.0f / (1.0f - p);
        std::vector<double> want(static_cast<size_t>(rows * cols));
        int64_t dropped = 0;
        for (int64_t n = 0; n < rows; ++n) {
          for (int64_t j = 0; j < cols; ++j) {
            const auto e = static_cast<uint64_t>((row0 + n) * global_cols + col0 + j);
            const bool keep = (splitmix64(key ^ splitmix64(e)) >> 40) >= threshold;
            const size_t i = static_cast<size_t>(n * cols + j);
            want[i] = keep ? static_cast<float>(x.ref[i]) * scale : 0.0f;
            dropped += keep ? 0 : 1;
          }
        }
        const std::string what = fmt::format("p={} {}{} on {}", p, dtype_name(dtype),
                                             in_place ? " in place" : "", dev_name());
        expect_same("dropout", what, get(out), want);
        // The share dropped is p (binomial: within 5 standard deviations).
        const double n = static_cast<double>(rows * cols);
        EXPECT_NEAR(dropped / n, p, 5 * std::sqrt(p * (1 - p) / n) + 1e-12) << what;
      }
    }
  }
}

// out = residual + y + bias, with out a fresh (garbage) tensor or aliasing residual or y.
// (129, 257) and the like: sizes above the CPU backend's threshold for several threads.
TEST_P(MemoryOps, ResidualForward) {
  enum class Out { kFresh, kResidual, kY };
  for (const Shape& shape :
       {Shape{1, 1}, Shape{3, 17}, Shape{17, 65}, Shape{2, 3, 33}, Shape{129, 257}}) {
    for (bool with_bias : {false, true}) {
      for (Out o : {Out::kFresh, Out::kResidual, Out::kY}) {
        const int64_t C = shape.back();
        const Input res = random(shape, DType::kF32, 31, -3, 3), y = random(shape, DType::kF32, 32);
        const Input bias = random({C}, DType::kF32, 33);
        Tensor out = o == Out::kFresh ? garbage(shape, DType::kF32)
                                      : (o == Out::kResidual ? res.dev : y.dev);
        be().residual_forward(out, res.dev, y.dev, with_bias ? &bias.dev : nullptr);
        std::vector<double> want = plus(res.ref, y.ref);
        for (size_t i = 0; i < want.size() && with_bias; ++i) want[i] += bias.ref[i % C];
        const char* alias[] = {"fresh out", "out = residual", "out = y"};
        expect_close("residual_forward F32",
                     fmt::format("{} {} {} on {}", shape_str(shape), with_bias ? "bias" : "no bias",
                                 alias[int(o)], dev_name()),
                     get(out), want);
      }
    }
  }
}

TEST_P(MemoryOps, BiasBackwardAccumulatesColumnSums) {
  for (const Shape& shape :
       {Shape{1, 1}, Shape{17, 33}, Shape{65, 3}, Shape{2, 3, 5}, Shape{129, 257}}) {
    const int64_t C = shape.back(), N = shape_numel(shape) / C;
    const Input dout = random(shape, DType::kF32, 41);
    Input dbias = random({C}, DType::kF32, 42);
    be().bias_backward(dbias.dev, dout.dev);
    std::vector<double> want = dbias.ref;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) want[c] += dout.ref[n * C + c];
    expect_close("bias_backward F32", fmt::format("dout {} on {}", shape_str(shape), dev_name()),
                 get(dbias.dev), want);
  }
}

TEST_P(MemoryOps, SumOfSquaresInDouble) {
  for (int64_t n : {0, 1, 17, 70001}) {
    const Input g = random({n}, DType::kF32, 51, -3, 3);
    double want = 0;
    for (double x : g.ref) want += x * x;
    const double got = be().sum_of_squares(g.dev);
    const double err = std::fabs(got - want) / std::max(want, 1e-300);
    record_error("sum_of_squares F32 (relative)", err, kF64Tol);
    EXPECT_LE(err, kF64Tol) << "n=" << n << " on " << dev_name() << ": got " << got << ", want "
                            << want;
  }
}

// One AdamW step in fp64 (decoupled weight decay, as torch.optim.AdamW): w, m, v updated.
void adamw_reference(std::vector<double>& w, const std::vector<double>& g, std::vector<double>& m,
                     std::vector<double>& v, const AdamWScalars& k) {
  for (size_t i = 0; i < w.size(); ++i) {
    const double gi = g[i] * k.grad_scale;
    m[i] = k.beta1 * m[i] + (1.0 - k.beta1) * gi;
    v[i] = k.beta2 * v[i] + (1.0 - k.beta2) * gi * gi;
    const double mhat = m[i] / k.bias1, vhat = v[i] / k.bias2;
    w[i] -= k.lr * (mhat / (std::sqrt(vhat) + k.eps) + k.weight_decay * w[i]);
  }
}

TEST_P(MemoryOps, AdamWUpdate) {
  for (DType wt : {DType::kF32, DType::kBF16}) {
    for (int64_t n : {1, 65, 40000}) {
      for (float wd : {0.0f, 0.1f}) {
        for (float grad_scale : {1.0f, 0.5f}) {
          AdamWScalars k;
          k.grad_scale = grad_scale;
          k.bias1 = 1.0f - std::pow(k.beta1, 3.0f);
          k.bias2 = 1.0f - std::pow(k.beta2, 3.0f);
          k.lr = 0.05f;  // large enough that a wrong update shows above fp32 rounding of w
          k.weight_decay = wd;
          Input w = random({n}, wt, 61, -2, 2), g = random({n}, DType::kF32, 62);
          Input m = random({n}, DType::kF32, 63, -0.1f, 0.1f);
          Input v = random({n}, DType::kF32, 64, 0.0f, 0.01f);
          be().adamw_update(w.dev, g.dev, m.dev, v.dev, k);
          adamw_reference(w.ref, g.ref, m.ref, v.ref, k);
          const std::string what = fmt::format("n={} weight_decay={} grad_scale={} on {}", n, wd,
                                               grad_scale, dev_name());
          if (wt == DType::kF32) {
            expect_close("adamw_update w F32", what, get(w.dev), w.ref);
          } else {
            expect_bf16_close("adamw_update w BF16", what, get(w.dev), w.ref);
          }
          expect_close("adamw_update m", what, get(m.dev), m.ref);
          expect_close("adamw_update v", what, get(v.dev), v.ref);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, MemoryOps, ::testing::ValuesIn(swept_devices()),
                         device_param_name);

}  // namespace
}  // namespace magix::test
