// The op-table sweep, linear layers and LoRA: matmul_forward (F32, BF16 -> F32, BF16 -> BF16),
// matmul_backward (F32, BF16), matmul_decode (F32 and BF16 weights, 1..17 rows), lora_merge
// (no base, F32 and BF16 base) and lora_project, against fp64 references, on every backend.
#include <fmt/format.h>

#include <cmath>

#include "backend_ops_util.hpp"

namespace magix::test {
namespace {

class LinearOps : public BackendOpsTest {};

// inp (rows of inp.back() = C) times weight (OC, C).
struct MatmulShape {
  Shape inp;
  int64_t OC;
};

// Odd sizes, one row, a 3-D input, a C long enough for blocked kernels and N·OC large enough
// for several threads.
const std::vector<MatmulShape> kMatmulShapes = {{{1, 1}, 1},     {{3, 17}, 5},  {{17, 33}, 65},
                                                {{65, 64}, 3},   {{7, 256}, 9}, {{2, 3, 17}, 5},
                                                {{129, 17}, 257}};

struct MatmulDtypes {
  DType in, out;  // inp and weight are `in`
};

std::string show(const MatmulShape& s) {
  return fmt::format("inp {} weight [{}, {}]", shape_str(s.inp), s.OC, s.inp.back());
}

// out (N, OC) = inp (N, C) · weightᵀ (+ bias), in double.
std::vector<double> matmul_reference(const std::vector<double>& inp, const std::vector<double>& w,
                                     const std::vector<double>* bias, int64_t N, int64_t C,
                                     int64_t OC) {
  std::vector<double> out(N * OC);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t o = 0; o < OC; ++o) {
      double s = bias ? (*bias)[o] : 0.0;
      for (int64_t c = 0; c < C; ++c) s += inp[n * C + c] * w[o * C + c];
      out[n * OC + o] = s;
    }
  }
  return out;
}

TEST_P(LinearOps, MatmulForward) {
  const MatmulDtypes combos[] = {
      {DType::kF32, DType::kF32}, {DType::kBF16, DType::kF32}, {DType::kBF16, DType::kBF16}};
  for (const MatmulDtypes& d : combos) {
    for (const MatmulShape& s : kMatmulShapes) {
      for (bool with_bias : {false, true}) {
        const int64_t C = s.inp.back(), N = shape_numel(s.inp) / C;
        const Input inp = random(s.inp, d.in, 101), w = random({s.OC, C}, d.in, 102);
        const Input bias = random({s.OC}, DType::kF32, 103);
        Tensor out = garbage({N, s.OC}, d.out);
        be().matmul_forward(out, inp.dev, w.dev, with_bias ? &bias.dev : nullptr);
        const auto want =
            matmul_reference(inp.ref, w.ref, with_bias ? &bias.ref : nullptr, N, C, s.OC);
        const std::string key = fmt::format("matmul_forward {}x{}->{}", dtype_name(d.in),
                                            dtype_name(d.in), dtype_name(d.out));
        const std::string what =
            fmt::format("{} {} on {}", show(s), with_bias ? "bias" : "no bias", dev_name());
        if (d.out == DType::kBF16) {
          expect_bf16_close(key, what, get(out), want);
        } else {
          expect_close(key, what, get(out), want, d.in == DType::kBF16 ? kBf16InputTol : kF32Tol);
        }
      }
    }
  }
}

// Which gradients a call asks for (the others are null).
struct Wanted {
  bool dinp, dweight, dbias;
};

TEST_P(LinearOps, MatmulBackwardAccumulates) {
  const Wanted wanted[] = {
      {true, true, true}, {true, false, false}, {false, true, false}, {false, false, true}};
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (const MatmulShape& s : kMatmulShapes) {
      for (const Wanted& g : wanted) {
        const int64_t C = s.inp.back(), N = shape_numel(s.inp) / C, OC = s.OC;
        const Input inp = random(s.inp, dt, 111), w = random({OC, C}, dt, 112);
        const Input dout = random({N, OC}, dt, 113);
        // Non-zero gradients on entry: the op must add to them.
        Input dinp = random(s.inp, DType::kF32, 114), dw = random({OC, C}, DType::kF32, 115);
        Input db = random({OC}, DType::kF32, 116);
        be().matmul_backward(g.dinp ? &dinp.dev : nullptr, g.dweight ? &dw.dev : nullptr,
                             g.dbias ? &db.dev : nullptr, dout.dev, inp.dev, w.dev);
        std::vector<double> want_dinp = dinp.ref, want_dw = dw.ref, want_db = db.ref;
        for (int64_t n = 0; n < N; ++n) {
          for (int64_t o = 0; o < OC; ++o) {
            const double d = dout.ref[n * OC + o];
            if (g.dbias) want_db[o] += d;
            for (int64_t c = 0; c < C; ++c) {
              if (g.dinp) want_dinp[n * C + c] += d * w.ref[o * C + c];
              if (g.dweight) want_dw[o * C + c] += d * inp.ref[n * C + c];
            }
          }
        }
        const std::string key = fmt::format("matmul_backward {}", dtype_name(dt));
        const std::string what = fmt::format("{} dinp:{} dweight:{} dbias:{} on {}", show(s),
                                             g.dinp, g.dweight, g.dbias, dev_name());
        const double tol = dt == DType::kBF16 ? kBf16InputTol : kF32Tol;
        // Not asked for: untouched.
        expect_close(key + " dinp", what, get(dinp.dev), want_dinp, g.dinp ? tol : 0.0);
        expect_close(key + " dweight", what, get(dw.dev), want_dw, g.dweight ? tol : 0.0);
        expect_close(key + " dbias", what, get(db.dev), want_db, g.dbias ? tol : 0.0);
      }
    }
  }
}

// matmul_decode with a BF16 weight: the table reads the weight widened, and a backend may also
// run many rows as a bf16 GEMM of the rows rounded to bf16 (the CPU backend does above 8 rows),
// so the output must match one of the two fp64 references within the fp32 bound.
TEST_P(LinearOps, MatmulDecode) {
  for (DType wt : {DType::kF32, DType::kBF16}) {
    for (int64_t C : {1, 47, 64}) {
      for (int64_t OC : {3, 65, 300}) {
        for (int64_t N : {1, 2, 3, 4, 5, 6, 7, 8, 9, 17}) {
          const bool with_bias = (N + C) % 2 == 1;
          const Input inp = random({N, C}, DType::kF32, 121), w = random({OC, C}, wt, 122);
          const Input bias = random({OC}, DType::kF32, 123);
          Tensor out = garbage({N, OC}, DType::kF32);
          be().matmul_decode(out, inp.dev, w.dev, with_bias ? &bias.dev : nullptr);
          const auto* b = with_bias ? &bias.ref : nullptr;
          const auto want = matmul_reference(inp.ref, w.ref, b, N, C, OC);
          const std::string key = fmt::format("matmul_decode F32x{}->F32", dtype_name(wt));
          const std::string what = fmt::format("N={} C={} OC={} {} on {}", N, C, OC,
                                               with_bias ? "bias" : "no bias", dev_name());
          const std::vector<double> got = get(out);
          if (wt == DType::kBF16) {
            std::vector<double> rounded = inp.ref;
            for (double& x : rounded) x = bf16_value(bf16_bits(static_cast<float>(x)));
            const auto want_rounded = matmul_reference(rounded, w.ref, b, N, C, OC);
            if (scaled_max_error(got, want_rounded) < scaled_max_error(got, want)) {
              expect_close(key + " (rows rounded to bf16)", what, got, want_rounded);
              continue;
            }
          }
          expect_close(key, what, got, want);
        }
      }
    }
  }
}

// w (O, I) = base + scale · b (O, r) · a (r, I); without base w += scale · b · a.
struct LoraShape {
  int64_t O, I, r;
};

const std::vector<LoraShape> kLoraShapes = {
    {1, 1, 1}, {17, 33, 3}, {65, 17, 8}, {9, 600, 5}, {4, 1100, 8}};

TEST_P(LinearOps, LoraMerge) {
  enum class Base { kNone, kF32, kBF16 };
  for (const LoraShape& s : kLoraShapes) {
    for (Base base : {Base::kNone, Base::kF32, Base::kBF16}) {
      const float scale = 2.5f;
      const Input a = random({s.r, s.I}, DType::kF32, 131),
                  b = random({s.O, s.r}, DType::kF32, 132);
      const DType base_dt = base == Base::kBF16 ? DType::kBF16 : DType::kF32;
      const Input w0 = random({s.O, s.I}, base_dt, 133);
      // With a base, w starts as garbage (written); without, it holds the weight (+=).
      Tensor w = base == Base::kNone ? w0.dev : garbage({s.O, s.I}, DType::kF32);
      be().lora_merge(w, a.dev, b.dev, scale, base == Base::kNone ? nullptr : &w0.dev);
      std::vector<double> want = w0.ref;
      for (int64_t o = 0; o < s.O; ++o) {
        for (int64_t i = 0; i < s.I; ++i) {
          double acc = 0;
          for (int64_t k = 0; k < s.r; ++k) acc += b.ref[o * s.r + k] * a.ref[k * s.I + i];
          want[o * s.I + i] += scale * acc;
        }
      }
      const char* names[] = {"none (+=)", "F32", "BF16"};
      expect_close(fmt::format("lora_merge base {}", names[int(base)]),
                   fmt::format("O={} I={} r={} on {}", s.O, s.I, s.r, dev_name()), get(w), want);
    }
  }
}

TEST_P(LinearOps, LoraProject) {
  for (const LoraShape& s : kLoraShapes) {
    const float scale = 0.75f;
    const Input dw = random({s.O, s.I}, DType::kF32, 141);
    const Input a = random({s.r, s.I}, DType::kF32, 142), b = random({s.O, s.r}, DType::kF32, 143);
    Input da = random({s.r, s.I}, DType::kF32, 144);  // accumulated into
    Tensor db = garbage({s.O, s.r}, DType::kF32);     // written
    be().lora_project(da.dev, db, dw.dev, a.dev, b.dev, scale);
    std::vector<double> want_da = da.ref, want_db(s.O * s.r, 0.0);
    for (int64_t o = 0; o < s.O; ++o) {
      for (int64_t k = 0; k < s.r; ++k) {
        for (int64_t i = 0; i < s.I; ++i) {
          const double g = dw.ref[o * s.I + i];
          want_da[k * s.I + i] += scale * b.ref[o * s.r + k] * g;
          want_db[o * s.r + k] += scale * g * a.ref[k * s.I + i];
        }
      }
    }
    const std::string what = fmt::format("O={} I={} r={} on {}", s.O, s.I, s.r, dev_name());
    expect_close("lora_project da (+=)", what, get(da.dev), want_da);
    expect_close("lora_project db (=)", what, get(db), want_db);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, LinearOps, ::testing::ValuesIn(swept_devices()),
                         device_param_name);

}  // namespace
}  // namespace magix::test
