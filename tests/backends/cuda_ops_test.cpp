// GPU op parity (ctest label `gpu`; built only with the CUDA backend): every op of the table run
// by the CUDA backend and by the CPU backend on the same random inputs, outputs compared. fp32
// ops within kF32 of the output scale, bf16 outputs within bf16 rounding, dropout, copies and
// integer paths bit for bit. Skips when no GPU is visible. (The op-table sweep of tests/backends/
// also runs every op of the CUDA backend against fp64 references on a machine with a GPU.)
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "backends/cuda/cublaslt_library.hpp"
#include "magix/error.hpp"

namespace magix {
namespace {

constexpr DType F = DType::kF32, H = DType::kBF16;
constexpr double kExact = 0;
constexpr double kF32 = 2e-5;         // summation order, FMA, expf vs libm
constexpr double kBf16 = 8e-3;        // one bf16 rounding of the output (2^-8) plus fp32 noise
constexpr double kBf16Attn = 0x1p-6;  // P and dS rounded at other points (running max)

// Inputs of a case, made the same way for both backends (same seeds, same host values).
struct Env {
  const Backend& be;
  Tensor in(const Shape& s, DType dt, uint32_t seed, float lo = -1, float hi = 1) const {
    Tensor host(s, F);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    for (float& x : host.span<float>()) x = dist(rng);
    Tensor t = be.empty(s, dt);
    be.copy(t, dt == F ? host : host.to(dt));
    return t;
  }
  Tensor ints(const Shape& s, std::vector<int32_t> v) const {
    Tensor host(s, DType::kI32);
    std::copy(v.begin(), v.end(), host.data<int32_t>());
    Tensor t = be.empty(s, DType::kI32);
    be.copy(t, host);
    return t;
  }
  Tensor rand_ints(const Shape& s, uint32_t seed, int32_t lo, int32_t hi) const {
    std::mt19937 rng(seed);
    std::vector<int32_t> v(static_cast<size_t>(shape_numel(s)));
    for (int32_t& x : v) x = lo + static_cast<int32_t>(rng() % static_cast<uint32_t>(hi - lo + 1));
    return ints(s, v);
  }
};

struct Case {
  std::string name;
  double tol;
  std::function<std::vector<Tensor>(const Env&)> run;  // the outputs to compare
};

// GoogleTest shows a case by its name.
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name;
}

std::vector<double> host_values(const Backend& be, const Tensor& t) {
  Tensor host(t.shape(), t.dtype());
  be.copy(host, t);
  if (host.dtype() == H) host = host.to(F);
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    switch (host.dtype()) {
      case DType::kF32:
        v[i] = host.data<float>()[i];
        break;
      case DType::kI32:
        v[i] = host.data<int32_t>()[i];
        break;
      default:
        MAGIX_FAIL("cuda_ops_test: dtype {}", dtype_name(t.dtype()));
    }
  }
  return v;
}

AttentionMask attention_mask(const Env& e, int kind, int64_t B, int64_t T, Tensor& valid,
                             Tensor& segment) {
  AttentionMask m;
  std::vector<int32_t> va(B * T), se(B * T);
  for (int64_t i = 0; i < B * T; ++i) {
    va[i] = (i * 7 + 3) % 5 != 0;
    se[i] = static_cast<int32_t>((i % T) / 9 + (i / T));
  }
  valid = e.ints({B, T}, va);
  segment = e.ints({B, T}, se);
  if (kind & 1) m.key_valid = &valid;
  if (kind & 2) m.segment = &segment;
  if (kind & 4) m.window = 6;
  if (kind & 8) m.softcap = 0.5f;
  return m;
}

std::vector<Case> cases() {
  std::vector<Case> c;
  for (DType dt : {F, H}) {
    const std::string d = dt == F ? "F32" : "BF16";
    const double tol_out = dt == F ? kF32 : kBf16;
    c.push_back(
        {"copy_to_" + d, kExact, [=](const Env& e) {
           Tensor x = e.in({3, 70}, dt == F ? H : F, 1, -100, 100), y = e.be.empty({3, 70}, dt);
           e.be.copy(y, x);
           return std::vector<Tensor>{y};
         }});
    c.push_back({"dropout_" + d, kExact, [=](const Env& e) {
                   Tensor x = e.in({9, 33}, dt, 2), y = e.be.empty({9, 33}, F);
                   e.be.dropout(y, x, 0x1234, 17, 5, 64, 0.3f);
                   return std::vector<Tensor>{y};
                 }});
    c.push_back(
        {"matmul_forward_" + d + "_to_F32", kF32, [=](const Env& e) {
           Tensor x = e.in({2, 5, 96}, dt, 3), w = e.in({40, 96}, dt, 4), b = e.in({40}, F, 5);
           Tensor y = e.be.empty({2, 5, 40}, F), z = e.be.empty({10, 40}, F);
           e.be.matmul_forward(y, x, w, &b);
           e.be.matmul_forward(z, x, w, nullptr);
           return std::vector<Tensor>{y, z};
         }});
    if (dt == H) {
      c.push_back(
          {"matmul_forward_BF16_to_BF16", kBf16, [=](const Env& e) {
             Tensor x = e.in({2, 5, 96}, H, 3), w = e.in({40, 96}, H, 4), b = e.in({40}, F, 5);
             Tensor y = e.be.empty({2, 5, 40}, H), z = e.be.empty({10, 40}, H);
             e.be.matmul_forward(y, x, w, &b);
             e.be.matmul_forward(z, x, w, nullptr);
             return std::vector<Tensor>{y, z};
           }});
    }
    c.push_back(
        {"matmul_backward_" + d, kF32, [=](const Env& e) {
           Tensor dout = e.in({10, 40}, dt, 6), x = e.in({10, 96}, dt, 7),
                  w = e.in({40, 96}, dt, 8);
           Tensor dx = e.in({10, 96}, F, 9), dw = e.in({40, 96}, F, 10), db = e.in({40}, F, 11);
           e.be.matmul_backward(&dx, &dw, &db, dout, x, w);
           return std::vector<Tensor>{dx, dw, db};
         }});
    c.push_back({"matmul_decode_" + d + "_weight", kF32, [=](const Env& e) {
                   Tensor w = e.in({50, 72}, dt, 12), b = e.in({50}, F, 13);
                   Tensor x3 = e.in({3, 72}, F, 14), x20 = e.in({20, 72}, F, 15);
                   Tensor y3 = e.be.empty({3, 50}, F), y20 = e.be.empty({20, 50}, F);
                   e.be.matmul_decode(y3, x3, w, &b);
                   e.be.matmul_decode(y20, x20, w, nullptr);
                   return std::vector<Tensor>{y3, y20};
                 }});
    c.push_back({"rmsnorm_forward_to_" + d, tol_out, [=](const Env& e) {
                   Tensor x = e.in({6, 300}, F, 16), w = e.in({300}, F, 17);
                   Tensor y = e.be.empty({6, 300}, dt), r = e.be.empty({6}, F);
                   e.be.rmsnorm_forward(y, r, x, w, 1e-6f, 1.0f);
                   return std::vector<Tensor>{y, r};
                 }});
    c.push_back({"rope_forward_" + d, tol_out, [=](const Env& e) {
                   Tensor pos = e.ints({5}, {0, 1, 7, 100, 4095}), f = e.in({16}, F, 18, 0, 1);
                   Tensor t = e.be.empty({5, 32}, F), x = e.in({5, 3, 32}, dt, 19);
                   e.be.rope_table(t, pos, f);
                   e.be.rope_forward(x, t);
                   return std::vector<Tensor>{t, x};
                 }});
    c.push_back({"rope_forward_partial_" + d, tol_out, [=](const Env& e) {
                   // partial_rotary_factor: the first 24 of each head's 32 dims.
                   Tensor pos = e.ints({5}, {0, 1, 7, 100, 4095}), f = e.in({12}, F, 164, 0, 1);
                   Tensor t = e.be.empty({5, 24}, F), x = e.in({5, 3, 32}, dt, 165);
                   e.be.rope_table(t, pos, f);
                   e.be.rope_forward(x, t);
                   return std::vector<Tensor>{t, x};
                 }});
    c.push_back({"softcap_" + d, tol_out, [=](const Env& e) {
                   Tensor x = e.in({4, 77}, dt, 20, -80, 80), dx = e.in({4, 77}, dt, 21);
                   e.be.softcap_forward(x, 30.0f);
                   e.be.softcap_backward(dx, x, 30.0f);
                   return std::vector<Tensor>{x, dx};
                 }});
    for (Activation act : {Activation::kSilu, Activation::kGeluTanh}) {
      const std::string a = act == Activation::kSilu ? "silu" : "gelu";
      c.push_back({"glu_" + a + "_" + d, tol_out, [=](const Env& e) {
                     Tensor g = e.in({7, 45}, dt, 22, -6, 6), u = e.in({7, 45}, dt, 23);
                     Tensor y = e.be.empty({7, 45}, dt), dg = e.be.empty({7, 45}, dt),
                            du = e.be.empty({7, 45}, dt), dout = e.in({7, 45}, F, 24);
                     e.be.glu_forward(y, g, u, act);
                     e.be.glu_backward(dg, du, dout, g, u, act);
                     return std::vector<Tensor>{y, dg, du};
                   }});
    }
    c.push_back({"cross_entropy_" + d + "_vocab_shard", dt == F ? kF32 : kBf16, [=](const Env& e) {
                   // This shard holds vocab entries [100, 100 + 257); targets inside, outside,
                   // ignored.
                   Tensor l = e.in({6, 257}, dt, 25, -8, 8);
                   Tensor t = e.ints({6}, {100, 356, 50, -1, 400, 230});
                   Tensor mx = e.be.empty({6}, F), se = e.be.empty({6}, F), tl = e.be.empty({6}, F),
                          loss = e.be.empty({6}, F), dl = e.be.empty({6, 257}, dt);
                   e.be.cross_entropy_max(mx, l);
                   e.be.cross_entropy_sumexp(se, tl, l, mx, t, 100);
                   e.be.cross_entropy_loss(loss, mx, se, tl, t);
                   e.be.cross_entropy_backward(dl, l, mx, se, t, 0.25f, 100);
                   e.be.cross_entropy_backward(l, l, mx, se, t, 0.25f, 100);  // in place
                   return std::vector<Tensor>{mx, se, tl, loss, dl, l};
                 }});
    c.push_back({"adamw_" + d + "_weights", tol_out, [=](const Env& e) {
                   Tensor w = e.in({1000}, dt, 26), g = e.in({1000}, F, 27),
                          m = e.in({1000}, F, 28), v = e.in({1000}, F, 29, 0, 1);
                   AdamWScalars k;
                   k.grad_scale = 0.5f, k.bias1 = 0.1f, k.bias2 = 0.01f, k.lr = 1e-3f;
                   k.weight_decay = 0.1f;
                   e.be.adamw_update(w, g, m, v, k);
                   return std::vector<Tensor>{w, m, v};
                 }});
    c.push_back({"attention_decode_" + d + "_cache", kF32, [=](const Env& e) {
                   Tensor q = e.in({2, 4, 80}, F, 30), kc = e.in({2, 50, 2, 80}, dt, 31),
                          vc = e.in({2, 50, 2, 80}, dt, 32), valid = e.rand_ints({2, 50}, 33, 0, 1);
                   std::vector<Tensor> outs;
                   for (auto [slot, window, cap] : {std::tuple<int64_t, int64_t, float>{49, 0, 0},
                                                    {20, 7, 0},
                                                    {35, 0, 20.0f},
                                                    {0, 0, 0}}) {
                     outs.push_back(e.be.empty({2, 4, 80}, F));
                     e.be.attention_decode(outs.back(), q, kc, vc, valid, slot, 0.11f, window, cap);
                   }
                   return outs;
                 }});
    // Attention: every mask kind (bits: key_valid, segment, window, softcap) with GQA 4:2 and
    // MHA; forward and backward.
    // MQA with head dim 256 (the kernels' largest) and T = 1 for the plain and the full mask.
    using Shape4 = std::tuple<int64_t, int64_t, int64_t, int64_t>;  // Hq, Hkv, D, T
    for (int kind : {0, 1, 2, 4, 8, 15}) {
      std::vector<Shape4> shapes = {{4, 2, 80, 37}, {2, 2, 64, 37}};
      if (kind == 0 || kind == 15) shapes.insert(shapes.end(), {{3, 1, 256, 40}, {2, 1, 64, 1}});
      for (auto [Hq, Hkv, D, T] : shapes) {
        const std::string name = "attention_" + d + "_mask" + std::to_string(kind) + "_h" +
                                 std::to_string(Hq) + "x" + std::to_string(Hkv) + "_d" +
                                 std::to_string(D) + "_t" + std::to_string(T);
        c.push_back({name, dt == F ? kF32 : kBf16Attn, [=](const Env& e) {
                       const int64_t B = 2;
                       Tensor q = e.in({B, T, Hq, D}, dt, 40), k = e.in({B, T, Hkv, D}, dt, 41),
                              v = e.in({B, T, Hkv, D}, dt, 42), dout = e.in({B, T, Hq, D}, dt, 43);
                       Tensor valid, segment;
                       const AttentionMask m = attention_mask(e, kind, B, T, valid, segment);
                       Tensor out = e.be.empty({B, T, Hq, D}, dt), lse = e.be.empty({B, Hq, T}, F);
                       const float scale = 1.0f / std::sqrt(static_cast<float>(D));
                       e.be.attention_forward(out, lse, q, k, v, scale, m);
                       Tensor dq = e.in({B, T, Hq, D}, F, 44), dk = e.in({B, T, Hkv, D}, F, 45),
                              dv = e.in({B, T, Hkv, D}, F, 46);
                       e.be.attention_backward(dq, dk, dv, dout, out, lse, q, k, v, scale, m);
                       return std::vector<Tensor>{out, lse, dq, dk, dv};
                     }});
      }
    }
  }
  c.push_back({"add_scale", kExact, [](const Env& e) {
                 Tensor a = e.in({1000}, F, 50), b = e.in({1000}, F, 51);
                 e.be.add(a, b);
                 e.be.scale(a, 0.37f);
                 return std::vector<Tensor>{a};
               }});
  c.push_back({"residual_and_bias_backward", kF32, [](const Env& e) {
                 Tensor r = e.in({9, 70}, F, 52), y = e.in({9, 70}, F, 53), b = e.in({70}, F, 54);
                 Tensor o1 = e.be.empty({9, 70}, F), db = e.in({70}, F, 55);
                 e.be.residual_forward(o1, r, y, &b);
                 e.be.residual_forward(r, r, y, nullptr);  // in place
                 e.be.bias_backward(db, y);
                 return std::vector<Tensor>{o1, r, db};
               }});
  c.push_back(
      {"rmsnorm_backward", kF32, [](const Env& e) {
         Tensor x = e.in({6, 300}, F, 56), w = e.in({300}, F, 57), dy = e.in({6, 300}, F, 58);
         Tensor y = e.be.empty({6, 300}, F), r = e.be.empty({6}, F);
         e.be.rmsnorm_forward(y, r, x, w, 1e-5f, 0.0f);
         Tensor dx = e.in({6, 300}, F, 59), dw = e.in({300}, F, 60);
         e.be.rmsnorm_backward(dx, &dw, dy, x, w, r, 0.0f);
         return std::vector<Tensor>{dx, dw};
       }});
  c.push_back({"rope_backward", kF32, [](const Env& e) {
                 Tensor pos = e.ints({4}, {3, 9, 27, 81}), f = e.in({8}, F, 61, 0, 1);
                 Tensor t = e.be.empty({4, 16}, F), dx = e.in({4, 2, 16}, F, 62);
                 e.be.rope_table(t, pos, f);
                 e.be.rope_backward(dx, t);
                 return std::vector<Tensor>{dx};
               }});
  c.push_back({"rope_backward_partial", kF32, [](const Env& e) {
                 Tensor pos = e.ints({4}, {3, 9, 27, 81}), f = e.in({6}, F, 166, 0, 1);
                 Tensor t = e.be.empty({4, 12}, F), dx = e.in({4, 2, 16}, F, 167);
                 e.be.rope_table(t, pos, f);
                 e.be.rope_backward(dx, t);
                 return std::vector<Tensor>{dx};
               }});
  c.push_back({"embedding_vocab_shard", kF32, [](const Env& e) {
                 // Rows [10, 30) of the vocab; ids inside (repeated), before and after the shard.
                 Tensor ids = e.ints({8}, {10, 29, 10, 5, 30, 17, 17, 17});
                 Tensor table = e.in({20, 64}, F, 63), out = e.be.empty({8, 64}, F);
                 e.be.embedding_forward(out, ids, table, 10, 2.5f);
                 Tensor dtable = e.in({20, 64}, F, 64), dout = e.in({8, 64}, F, 65);
                 e.be.embedding_backward(dtable, dout, ids, 10, 2.5f);
                 return std::vector<Tensor>{out, dtable};
               }});
  c.push_back(
      {"lora_merge_and_project", kF32, [](const Env& e) {
         Tensor a = e.in({4, 60}, F, 66), b = e.in({30, 4}, F, 67), w = e.in({30, 60}, F, 68);
         Tensor w2 = e.be.empty({30, 60}, F), w3 = e.be.empty({30, 60}, F);
         Tensor base32 = e.in({30, 60}, F, 69), base16 = e.in({30, 60}, H, 70);
         e.be.lora_merge(w, a, b, 0.5f, nullptr);
         e.be.lora_merge(w2, a, b, 2.0f, &base32);
         e.be.lora_merge(w3, a, b, 2.0f, &base16);
         Tensor da = e.in({4, 60}, F, 71), db = e.in({30, 4}, F, 72), dw = e.in({30, 60}, F, 73);
         e.be.lora_project(da, db, dw, a, b, 0.25f);
         return std::vector<Tensor>{w, w2, w3, da, db};
       }});
  return c;
}

class CudaOps : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    try {
      (void)backend_for(Device::kCuda);
    } catch (const Error& e) {
      GTEST_SKIP() << "the CUDA backend is not usable here: " << e.what();
    }
  }
};

// Outputs `got` of backend g within c.tol of `want` of backend w (scaled by max |want|).
void expect_outputs_close(const Case& c, const Backend& w_be, const std::vector<Tensor>& want,
                          const Backend& g_be, const std::vector<Tensor>& got) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t o = 0; o < want.size(); ++o) {
    ASSERT_EQ(got[o].device(), g_be.device()) << c.name << " output " << o;
    ASSERT_EQ(got[o].dtype(), want[o].dtype()) << c.name << " output " << o;
    const std::vector<double> w = host_values(w_be, want[o]), g = host_values(g_be, got[o]);
    ASSERT_EQ(w.size(), g.size());
    double scale = 1e-30, worst = 0;
    size_t at = 0;
    for (double x : w)
      if (std::isfinite(x)) scale = std::max(scale, std::fabs(x));
    for (size_t i = 0; i < w.size(); ++i) {
      const bool same = w[i] == g[i] || (std::isnan(w[i]) && std::isnan(g[i]));
      const double d = same ? 0.0 : std::fabs(w[i] - g[i]);
      const double err = std::isnan(d) ? INFINITY : d / scale;
      if (err > worst) worst = err, at = i;
    }
    EXPECT_LE(worst, c.tol) << c.name << " output " << o << ": worst at " << at << " "
                            << device_name(w_be.device()) << " " << w[at] << " "
                            << device_name(g_be.device()) << " " << g[at] << " (scale " << scale
                            << ")";
  }
}

TEST_P(CudaOps, MatchesCpuBackend) {
  const Case& c = GetParam();
  const Backend& cpu = backend_for(Device::kCpu);
  const Backend& gpu = backend_for(Device::kCuda);
  expect_outputs_close(c, cpu, c.run(Env{cpu}), gpu, c.run(Env{gpu}));
}

// The table itself, without a GPU: every case runs on the CPU backend (valid shapes and dtypes,
// outputs of the expected devices) and gives the same outputs twice, so a GPU run spends its time
// on the CUDA backend only.
TEST(CudaOpsTable, RunsOnTheCpuBackend) {
  const Backend& cpu = backend_for(Device::kCpu);
  for (Case c : cases()) {
    SCOPED_TRACE(c.name);
    const std::vector<Tensor> first = c.run(Env{cpu});
    ASSERT_FALSE(first.empty());
    c.tol = 0;
    expect_outputs_close(c, cpu, first, cpu, c.run(Env{cpu}));
  }
}

// cuBLASLt is loaded at run time (no GPU needed): the library of the headers' major version is
// found and every function the GEMMs call is bound.
TEST(CudaLibraries, CublasLtLoads) {
  const cuda::CublasLtApi& api = cuda::cublaslt();
  EXPECT_NE(api.path.find("libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR)), std::string::npos);
  EXPECT_EQ(api.get_version() / 10000, static_cast<size_t>(CUBLAS_VER_MAJOR)) << api.path;
  EXPECT_STREQ(api.status_name(CUBLAS_STATUS_NOT_SUPPORTED), "CUBLAS_STATUS_NOT_SUPPORTED");
}

// sum_of_squares: both in double, fixed orders of their own.
TEST(CudaSumOfSquares, MatchesCpuBackend) {
  try {
    (void)backend_for(Device::kCuda);
  } catch (const Error& e) {
    GTEST_SKIP() << "the CUDA backend is not usable here: " << e.what();
  }
  for (int64_t n : {1, 1000, 65536, 65537, 300001}) {
    double got[2];
    int i = 0;
    for (const Backend* be : {&backend_for(Device::kCpu), &backend_for(Device::kCuda)}) {
      got[i++] = be->sum_of_squares(Env{*be}.in({n}, F, 74));
    }
    EXPECT_NEAR(got[1], got[0], 1e-12 * got[0]) << "n " << n;
  }
}

INSTANTIATE_TEST_SUITE_P(AllOps, CudaOps, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace magix
