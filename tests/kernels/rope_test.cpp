// RoPE: inv_freq for the default, linear and Llama-3 rules against the formulas (evaluated
// independently in double) and against values dumped from transformers; the rotation against a
// double reference; the backward as the transpose and against finite differences.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <numbers>

#include "backends/cpu/rope.hpp"
#include "kernel_test_util.hpp"
#include "magix/error.hpp"
#include "model/rope_frequencies.hpp"

namespace magix::cpu {
namespace {

using test::random_floats;

// Produced with transformers 5.23.0 / torch 2.15 from /work/refenv: the script
// kernel_reference_dump.py (kept at the bottom of this file, in a comment) printed
// LlamaRotaryEmbedding(config).inv_freq and its cos/sin (first half of each row, at positions
// 1, 4097, 100000) for: default (head_dim 32, theta 1e4); linear (head_dim 32, theta 1e4,
// factor 4); llama3 (head_dim 64, theta 5e5, factor 8, low 1, high 4, original 8192).
// attention_scaling was 1.0 for all three.

constexpr float kDefaultInvFreq[] = {
    1.0f,           0.562341332f,    0.316227764f,    0.177827939f,
    0.100000001f,   0.0562341288f,   0.0316227786f,   0.0177827943f,
    0.00999999978f, 0.00562341325f,  0.00316227786f,  0.00177827943f,
    0.00100000005f, 0.000562341302f, 0.000316227786f, 0.00017782794f};

constexpr float kDefaultCos[] = {
    0.540302336f,  0.846009076f,  0.950415313f,  0.98423022f,   0.995004177f,  0.998419285f,
    0.999500036f,  0.999841869f,  0.999949992f,  0.999984205f,  0.999994993f,  0.99999845f,
    0.999999523f,  0.999999821f,  0.99999994f,   1.0f,          0.934771955f,  -0.431232065f,
    0.316241026f,  0.958700359f,  0.274268627f,  -0.493265688f, -0.729491115f, -0.82562989f,
    -0.991653323f, -0.499326587f, 0.925105929f,  0.538259864f,  -0.577276111f, -0.66918844f,
    0.271750063f,  0.746133208f,  -0.9993608f,   0.93025589f,   0.880297542f,  0.191064879f,
    -0.952155352f, 0.999287009f,  -0.261741519f, 0.990496278f,  0.562379062f,  -0.999992847f,
    -0.477424741f, -0.32210955f,  0.862322748f,  0.950939775f,  0.978682399f,  0.482962996f};

constexpr float kDefaultSin[] = {
    0.841470957f,   0.533168435f,   0.310983598f,    0.176892191f,    0.0998334214f,
    0.0562044941f,  0.0316175073f,  0.0177818574f,   0.00999983307f,  0.00562338345f,
    0.00316227251f, 0.0017782785f,  0.000999999931f, 0.000562341243f, 0.000316227786f,
    0.00017782794f, 0.355248332f,   -0.902241051f,   0.948678911f,    -0.284418136f,
    0.961653113f,   -0.869878709f,  -0.6839903f,     -0.564212084f,   -0.128932983f,
    -0.866413832f,  0.379709154f,   0.842778921f,    -0.816549003f,   0.743092775f,
    0.962367892f,   0.665796697f,   0.0357487984f,   -0.366911471f,   -0.474421978f,
    0.981577396f,   -0.305614382f,  -0.0377550125f,  0.965138018f,    0.13753964f,
    0.826879561f,   0.00377638987f, 0.878672659f,    0.946702421f,    -0.506359041f,
    -0.309376121f,  0.205379441f,   -0.87564075f};

constexpr float kLinearInvFreq[] = {
    0.25f,           0.140585333f,    0.079056941f,    0.0444569848f,
    0.0250000004f,   0.0140585322f,   0.00790569466f,  0.00444569858f,
    0.00249999994f,  0.00140585331f,  0.000790569466f, 0.000444569858f,
    0.000250000012f, 0.000140585325f, 7.90569466e-05f, 4.44569851e-05f};

constexpr float kLinearCos[] = {0.968912423f,   0.99013412f,
                                0.996876597f,   0.999011934f,
                                0.999687493f,   0.999901175f,
                                0.999968767f,   0.999990106f,
                                0.999996901f,   0.999999046f,
                                0.999999702f,   0.999999881f,
                                1.0f,           1.0f,
                                1.0f,           1.0f,
                                0.995880961f,   -0.483075231f,
                                -0.951642334f,  0.997401953f,
                                -0.317642152f,  0.498319238f,
                                0.562241256f,   0.804758072f,
                                -0.683885455f,  0.866122544f,
                                -0.995263219f,  -0.247991413f,
                                0.519739747f,   0.838659942f,
                                0.948002577f,   0.983458281f,
                                0.700757742f,   -0.995592594f,
                                0.123262532f,   -0.941198051f,
                                0.75982511f,    -0.00944085699f,
                                0.442967236f,   0.0344874151f,
                                0.240988299f,   -0.706438899f,
                                -0.869241893f,  0.889435232f,
                                0.99120307f,    0.0785532147f,
                                -0.0516898036f, -0.263540149f};

constexpr float kLinearSin[] = {
    0.247403964f,    0.140122697f,    0.0789746121f,   0.0444423407f,   0.0249973964f,
    0.0140580693f,   0.0079056127f,   0.00444568414f,  0.00249999738f,  0.00140585285f,
    0.000790569407f, 0.000444569829f, 0.000250000012f, 0.000140585325f, 7.90569466e-05f,
    4.44569851e-05f, 0.0906702355f,   -0.875578821f,   -0.30720818f,    -0.0720374063f,
    0.948210657f,    0.866993606f,    0.826973259f,    -0.593602955f,   -0.729589403f,
    -0.499831676f,   -0.0972166881f,  0.968762219f,    0.854324639f,    0.544655323f,
    0.318262696f,    0.18113485f,     -0.713399351f,   0.0937836617f,   0.992374122f,
    -0.337855369f,   -0.65012753f,    -0.999955416f,   -0.896537781f,   -0.999405146f,
    -0.970528007f,   0.707774043f,    -0.494387001f,   0.457061261f,    -0.132349864f,
    0.996909916f,    0.998663187f,    -0.964648426f};

constexpr float kLlama3InvFreq[] = {1.0f,
                                    0.663601279f,
                                    0.440366626f,
                                    0.292227834f,
                                    0.193922758f,
                                    0.128687382f,
                                    0.0853971019f,
                                    0.0566696189f,
                                    0.0376060307f,
                                    0.0249554086f,
                                    0.0165604409f,
                                    0.0109895291f,
                                    0.00729266508f,
                                    0.00483942125f,
                                    0.00321144611f,
                                    0.00137189368f,
                                    0.000524846022f,
                                    0.000178507791f,
                                    7.78465546e-05f,
                                    5.16590699e-05f,
                                    3.42810235e-05f,
                                    2.2748929e-05f,
                                    1.50962178e-05f,
                                    1.00178686e-05f,
                                    6.64786967e-06f,
                                    4.41153452e-06f,
                                    2.92749974e-06f,
                                    1.94269251e-06f,
                                    1.28917316e-06f,
                                    8.55496921e-07f,
                                    5.6770881e-07f,
                                    3.7673226e-07f};

constexpr float kLlama3Cos[] = {
    0.540302336f,  0.787779093f,  0.904595435f,  0.957604468f,  0.981255829f,  0.991731167f,
    0.996355891f,  0.998394728f,  0.99929297f,   0.999688625f,  0.99986285f,   0.99993962f,
    0.999973416f,  0.999988317f,  0.999994874f,  0.999999046f,  0.999999881f,  1.0f,
    1.0f,          1.0f,          1.0f,          1.0f,          1.0f,          1.0f,
    1.0f,          1.0f,          1.0f,          1.0f,          1.0f,          1.0f,
    1.0f,          1.0f,          0.934771955f,  -0.270610958f, 0.615462542f,  -0.952136517f,
    -0.948789239f, 0.849695861f,  -0.403796703f, 0.954616725f,  -0.991052151f, -0.140086055f,
    0.299231559f,  0.504663587f,  0.0329117887f, 0.55905354f,   0.830426455f,  0.788434267f,
    -0.547603726f, 0.744275808f,  0.949569166f,  0.977686226f,  0.990153193f,  0.995659769f,
    0.998087943f,  0.999157846f,  0.99962914f,   0.999836683f,  0.999928057f,  0.99996835f,
    0.999986053f,  0.999993861f,  0.999997318f,  0.999998808f,  -0.9993608f,   -0.965515971f,
    -0.5736534f,   0.951825678f,  -0.713678956f, 0.714580476f,  0.651581824f,  0.891009212f,
    -0.993207455f, 0.439095616f,  -0.911146343f, 0.822759151f,  0.914314628f,  0.990647912f,
    0.763441026f,  0.505603373f,  -0.603852212f, 0.541330755f,  0.0692705438f, 0.438130558f,
    -0.959236145f, -0.647345424f, 0.0611364394f, 0.538797855f,  0.787048221f,  0.904259741f,
    0.957453907f,  0.981189013f,  0.991701663f,  0.996342838f,  0.998388946f,  0.999290466f};

constexpr float kLlama3Sin[] = {
    0.841470957f,    0.615957856f,    0.426271141f,    0.288086325f,    0.192709595f,
    0.128332496f,    0.0852933452f,   0.0566392913f,   0.0375971682f,   0.0249528177f,
    0.0165596846f,   0.0109893074f,   0.00729260035f,  0.00483940216f,  0.00321144052f,
    0.00137189322f,  0.000524846022f, 0.000178507791f, 7.78465546e-05f, 5.16590699e-05f,
    3.42810235e-05f, 2.2748929e-05f,  1.50962178e-05f, 1.00178686e-05f, 6.64786967e-06f,
    4.41153452e-06f, 2.92749974e-06f, 1.94269251e-06f, 1.28917316e-06f, 8.55496921e-07f,
    5.6770881e-07f,  3.7673226e-07f,  0.355248332f,    -0.962688804f,   0.788166165f,
    -0.305673093f,   0.315909863f,    -0.527273059f,   -0.914848745f,   -0.297837049f,
    -0.13347511f,    0.990139306f,    -0.954180539f,   0.863316119f,    -0.999458253f,
    0.829131544f,    0.55712831f,     -0.61511904f,    0.836737812f,    0.667872369f,
    0.313557655f,    0.21007064f,     0.139988065f,    0.0930674821f,   0.0618097782f,
    0.0410316847f,   0.0272329543f,   0.0180730727f,   0.0119936783f,   0.00795912743f,
    0.00528171752f,  0.00350496359f,  0.00232590083f,  0.00154347147f,  0.0357487984f,
    -0.26034376f,    -0.819098175f,   -0.306639642f,   0.700472951f,    0.699553251f,
    0.75857836f,     -0.453985274f,   -0.116356827f,   0.898440361f,    -0.41208294f,
    -0.568390191f,   0.405004591f,    0.136443079f,    0.645877481f,    -0.862766027f,
    0.797096312f,    -0.840809762f,   0.997597933f,    -0.898911357f,   -0.282605827f,
    0.76219672f,     0.998129427f,    0.842435062f,    0.616891503f,    0.42698279f,
    0.288586289f,    0.193049595f,    0.128560528f,    0.0854453743f,   0.0567403883f,
    0.0376643166f};

// The rules written out in double, independently of the kernel's fp32 sequence.
std::vector<double> inv_freq_formula(int64_t head_dim, double theta, const RopeScaling& s) {
  std::vector<double> f(head_dim / 2);
  for (int64_t i = 0; i < head_dim / 2; i++) {
    f[i] = 1.0 / std::pow(theta, 2.0 * i / head_dim);
  }
  if (s.kind == RopeScaling::Kind::kLinear) {
    for (double& v : f) v /= s.factor;
  } else if (s.kind == RopeScaling::Kind::kLlama3) {
    const double low_wavelen = s.original_max_position / s.low_freq_factor;
    const double high_wavelen = s.original_max_position / s.high_freq_factor;
    for (double& v : f) {
      const double wavelen = 2 * std::numbers::pi / v;
      if (wavelen > low_wavelen) {
        v /= s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (s.original_max_position / wavelen - s.low_freq_factor) /
                              (s.high_freq_factor - s.low_freq_factor);
        v = (1 - smooth) * v / s.factor + smooth * v;
      }
    }
  }
  return f;
}

RopeScaling linear4() {
  RopeScaling s;
  s.kind = RopeScaling::Kind::kLinear;
  s.factor = 4.0f;
  return s;
}

RopeScaling llama3_8() {
  RopeScaling s;
  s.kind = RopeScaling::Kind::kLlama3;
  s.factor = 8.0f;
  s.low_freq_factor = 1.0f;
  s.high_freq_factor = 4.0f;
  s.original_max_position = 8192;
  return s;
}

struct RuleCase {
  const char* name;
  int64_t head_dim;
  float theta;
  RopeScaling scaling;
  const float* inv_freq;
  const float* cos;
  const float* sin;
};

std::vector<RuleCase> rule_cases() {
  return {{"default", 32, 10000.0f, RopeScaling{}, kDefaultInvFreq, kDefaultCos, kDefaultSin},
          {"linear", 32, 10000.0f, linear4(), kLinearInvFreq, kLinearCos, kLinearSin},
          {"llama3", 64, 500000.0f, llama3_8(), kLlama3InvFreq, kLlama3Cos, kLlama3Sin}};
}

TEST(RopeInvFreq, MatchesTheFormulas) {
  for (const auto& rc : rule_cases()) {
    for (int64_t head_dim : {rc.head_dim, int64_t{128}, int64_t{256}}) {
      const auto got = rope_inv_freq(head_dim, rc.theta, rc.scaling);
      const auto want = inv_freq_formula(head_dim, rc.theta, rc.scaling);
      // The fp32 evaluation rounds the exponent and a handful of operations; theta^e with e
      // off by half an ulp changes the result by |ln(theta) e| ulp-ish: 16 ulp covers it.
      test::expect_close(got, want, 16 * FLT_EPSILON, 0.0,
                         std::string(rc.name) + " head_dim " + std::to_string(head_dim));
    }
  }
  // Llama 3.1: the three bands (unchanged, smoothed, divided by 8) all occur at head_dim 128.
  const auto f = rope_inv_freq(128, 500000.0f, llama3_8());
  const auto plain = rope_inv_freq(128, 500000.0f, RopeScaling{});
  EXPECT_EQ(f.front(), plain.front());
  EXPECT_EQ(f.back(), plain.back() / 8.0f);
  int smoothed = 0;
  for (size_t i = 0; i < f.size(); i++) smoothed += f[i] != plain[i] && f[i] != plain[i] / 8.0f;
  EXPECT_GT(smoothed, 0);
}

TEST(RopeInvFreq, MatchesTransformersBitForBit) {
  for (const auto& rc : rule_cases()) {
    const auto got = rope_inv_freq(rc.head_dim, rc.theta, rc.scaling);
    for (int64_t i = 0; i < rc.head_dim / 2; i++) {
      EXPECT_EQ(got[i], rc.inv_freq[i]) << rc.name << " inv_freq[" << i << "]";
    }
  }
}

TEST(RopeInvFreq, RejectsBadParameters) {
  EXPECT_THROW(rope_inv_freq(7, 10000.0f, RopeScaling{}), Error);
  EXPECT_THROW(rope_inv_freq(8, 0.0f, RopeScaling{}), Error);
  RopeScaling bad = llama3_8();
  bad.high_freq_factor = bad.low_freq_factor;
  EXPECT_THROW(rope_inv_freq(8, 10000.0f, bad), Error);
}

TEST(RopeForward, CosSinMatchTransformers) {
  // Rotating the unit vector e_i gives cos(a_i) in slot i and sin(a_i) in slot i + D/2.
  const int32_t positions[] = {1, 4097, 100000};
  for (const auto& rc : rule_cases()) {
    const int64_t D = rc.head_dim, half = D / 2;
    const auto inv_freq = rope_inv_freq(D, rc.theta, rc.scaling);
    for (int p = 0; p < 3; p++) {
      // x (N = half, H = 1, D): row i is e_i.
      std::vector<float> x(half * D, 0.0f);
      std::vector<int32_t> pos(half, positions[p]);
      for (int64_t i = 0; i < half; i++) x[i * D + i] = 1.0f;
      rope_forward(x.data(), pos.data(), inv_freq.data(), half, 1, D);
      for (int64_t i = 0; i < half; i++) {
        // torch's fp32 cos/sin are within an ulp of the correctly rounded value we compute.
        EXPECT_NEAR(x[i * D + i], rc.cos[p * half + i], 2 * FLT_EPSILON)
            << rc.name << " cos, position " << positions[p] << ", i " << i;
        EXPECT_NEAR(x[i * D + half + i], rc.sin[p * half + i], 2 * FLT_EPSILON)
            << rc.name << " sin, position " << positions[p] << ", i " << i;
      }
    }
  }
}

// x (N, H, D) rotated by pos[n] * inv_freq, in double (rotate_half convention).
std::vector<double> rope_ref(const std::vector<double>& x, const std::vector<int32_t>& pos,
                             const std::vector<float>& inv_freq, int64_t N, int64_t H, int64_t D) {
  std::vector<double> out(x.size());
  const int64_t half = D / 2;
  for (int64_t n = 0; n < N; n++) {
    for (int64_t h = 0; h < H; h++) {
      const double* a = x.data() + (n * H + h) * D;
      double* o = out.data() + (n * H + h) * D;
      for (int64_t i = 0; i < half; i++) {
        const double angle = static_cast<double>(static_cast<float>(pos[n]) * inv_freq[i]);
        o[i] = a[i] * std::cos(angle) - a[i + half] * std::sin(angle);
        o[i + half] = a[i + half] * std::cos(angle) + a[i] * std::sin(angle);
      }
    }
  }
  return out;
}

TEST(RopeForward, MatchesReference) {
  const int64_t N = 40, H = 3, D = 16;
  const auto inv_freq = rope_inv_freq(D, 10000.0f, RopeScaling{});
  std::vector<int32_t> pos(N);
  for (int64_t n = 0; n < N; n++) pos[n] = static_cast<int32_t>(n * 37 % 1000);
  auto x = random_floats(N * H * D, 1);
  const auto ref = rope_ref(test::to_double(x), pos, inv_freq, N, H, D);
  rope_forward(x.data(), pos.data(), inv_freq.data(), N, H, D);
  // Two products and a sum of values <= 1 in fp32, with cos/sin rounded: a few ulp.
  test::expect_close(x, ref, 0.0, 4 * FLT_EPSILON, "rope");
}

TEST(RopeBackward, IsTheTransposeAndMatchesFiniteDifferences) {
  const int64_t N = 5, H = 2, D = 8;
  const auto inv_freq = rope_inv_freq(D, 10000.0f, llama3_8());
  const std::vector<int32_t> pos = {0, 3, 17, 250, 9000};
  auto dout = random_floats(N * H * D, 2);
  auto x = random_floats(N * H * D, 3);
  auto dx = dout;
  rope_backward(dx.data(), pos.data(), inv_freq.data(), N, H, D);
  // <R x, dout> = <x, R^T dout>
  auto rx = x;
  rope_forward(rx.data(), pos.data(), inv_freq.data(), N, H, D);
  double lhs = 0.0, rhs = 0.0;
  for (int64_t i = 0; i < N * H * D; i++) {
    lhs += static_cast<double>(rx[i]) * dout[i];
    rhs += static_cast<double>(x[i]) * dx[i];
  }
  EXPECT_NEAR(lhs, rhs, 1e-5);
  const auto w = test::to_double(dout);
  const auto grad = test::numeric_grad(
      [&](const std::vector<double>& v) {
        return test::dot(w, rope_ref(v, pos, inv_freq, N, H, D));
      },
      test::to_double(x));
  test::expect_close(dx, grad, 0.0, 4 * FLT_EPSILON, "dx");
  // Forward then backward is the identity.
  rope_backward(rx.data(), pos.data(), inv_freq.data(), N, H, D);
  test::expect_close(rx, test::to_double(x), 0.0, 4 * FLT_EPSILON, "R^T R x");
}

}  // namespace
}  // namespace magix::cpu

// kernel_reference_dump.py, run as /work/refenv/bin/python kernel_reference_dump.py:
//   # Values from transformers 5.23.0 / torch (/work/refenv) for tests/kernels: rope inv_freq and
//   # cos/sin of LlamaRotaryEmbedding for three rules, and torch's silu / gelu(tanh).
//   import torch
//   from transformers import LlamaConfig
//   from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
//   from transformers.activations import ACT2FN
//
//   def fmt(values):
//       return ", ".join(f"{v:.9g}f" for v in values)
//
//   cases = [
//       ("default", 32, {"rope_type": "default", "rope_theta": 10000.0}),
//       ("linear", 32, {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}),
//       ("llama3", 64, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
//                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
//                       "rope_theta": 500000.0}),
//   ]
//   for name, head_dim, params in cases:
//       cfg = LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
//                         rope_parameters=params, max_position_embeddings=131072)
//       rot = LlamaRotaryEmbedding(cfg)
//       assert rot.attention_scaling == 1.0
//       half = head_dim // 2
//       cos, sin = rot(torch.zeros(1), torch.tensor([[1, 4097, 100000]]))
//       print(f"// {name}: inv_freq\n{{{fmt(rot.inv_freq.tolist())}}}")
//       c, s = cos[0, :, :half].flatten().tolist(), sin[0, :, :half].flatten().tolist()
//       print(f"// {name}: cos at positions 1, 4097, 100000\n{{{fmt(c)}}}")
//       print(f"// {name}: sin at positions 1, 4097, 100000\n{{{fmt(s)}}}")
//   x = torch.tensor([-8.0, -3.5, -1.0, -0.25, 0.0, 0.3, 1.0, 2.5, 6.0])
//   print(f"// x\n{{{fmt(x.tolist())}}}")
//   print(f"// silu\n{{{fmt(ACT2FN['silu'](x).tolist())}}}")
//   print(f"// gelu_pytorch_tanh\n{{{fmt(ACT2FN['gelu_pytorch_tanh'](x).tolist())}}}")
