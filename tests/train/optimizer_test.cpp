#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "../common/tensor_compare.hpp"
#include "magix/error.hpp"
#include "magix/optimizer.hpp"
#include "magix/safetensors.hpp"
#include "magix/train_step.hpp"

namespace magix {
namespace {

using test::rel_l2;

const std::filesystem::path kFixture = std::filesystem::path(MAGIX_FIXTURES_DIR) / "optimizer";

// Ten updates against torch.optim.AdamW driven as optax's chain (see
// tools/reference/make_optimizer_fixture.py): clipping, masked decay, warmup-cosine, a skipped
// non-finite step.
TEST(AdamW, MatchesReferenceOverTenSteps) {
  SafetensorsReader ref(kFixture / "adamw.safetensors");
  nlohmann::json meta = nlohmann::json::parse(std::ifstream(kFixture / "adamw.json"));
  std::vector<std::string> names = meta["names"].get<std::vector<std::string>>();
  std::vector<Tensor> params;
  std::vector<Shape> shapes;
  for (const auto& n : names) {
    params.push_back(ref.read_f32("init." + n));
    shapes.push_back(params.back().shape());
  }
  AdamWOptions o;
  o.beta1 = meta["betas"][0];
  o.beta2 = meta["betas"][1];
  o.eps = meta["eps"];
  o.weight_decay = meta["weight_decay"];
  o.max_grad_norm = meta["max_grad_norm"];
  AdamW opt(o, names, shapes);
  int64_t steps = meta["steps"];
  LrSchedule sched{ScheduleKind::kWarmupCosine, meta["peak_lr"], meta["warmup_steps"], steps, 0.0};
  for (int64_t step = 0; step < steps; ++step) {
    std::vector<Tensor> grads;
    double sq = 0;
    for (const auto& n : names) {
      grads.push_back(ref.read_f32(fmt::format("grad.{}.{}", step, n)));
      sq += sum_of_squares(grads.back().span<float>());
    }
    double norm = std::sqrt(sq);
    double lr = sched(opt.updates());
    if (meta["lrs"][step].is_null()) {
      EXPECT_FALSE(std::isfinite(norm));
    } else {
      EXPECT_NEAR(lr, meta["lrs"][step].get<double>(), 1e-12) << "step " << step;
      EXPECT_NEAR(norm, meta["grad_norms"][step].get<double>(), 1e-9 * norm) << "step " << step;
    }
    StepReport r = opt.step(params, grads, lr, norm);
    EXPECT_EQ(r.applied, std::isfinite(norm));
    for (size_t i = 0; i < names.size(); ++i) {
      Tensor want = ref.read_f32(fmt::format("param.{}.{}", step, names[i]));
      EXPECT_LT(rel_l2(params[i], want), 1e-5) << "step " << step << " " << names[i];
    }
  }
  EXPECT_EQ(opt.updates(), steps - 1);
}

TEST(AdamW, StopsAfterTooManyNonFiniteSteps) {
  AdamWOptions o;
  o.max_consecutive_nonfinite = 2;
  AdamW opt(o, {"w"}, {{3}});
  std::vector<Tensor> p{Tensor({3})}, g{Tensor({3})};
  double inf = std::numeric_limits<double>::infinity();
  EXPECT_FALSE(opt.step(p, g, 0.1, inf).applied);
  EXPECT_FALSE(opt.step(p, g, 0.1, std::nan("")).applied);
  EXPECT_THROW(opt.step(p, g, 0.1, inf), Error);
  for (float v : p[0].span<float>()) EXPECT_EQ(v, 0.0f);
  AdamW fresh(o, {"w"}, {{3}});
  fresh.step(p, g, 0.1, inf);
  EXPECT_TRUE(fresh.step(p, g, 0.1, 0.0).applied);  // a finite step resets the run of skips
  EXPECT_EQ(fresh.consecutive_skipped(), 0);
}

// bf16 parameters (--bf16_model_weights): each update is the fp32 update of the widened value,
// rounded to nearest even; moments are fp32 and equal those of an fp32 run fed the same values.
// The fp32 twin rounds its parameters after every step, so both start every step from the
// same numbers: parameters and moments must agree bit for bit (clipping, masked decay and a
// skipped step included).
TEST(AdamW, Bf16ParametersEqualFp32UpdateThenRounding) {
  const std::vector<std::string> names = {"model.layers.0.mlp.up_proj.weight", "model.norm.weight"};
  const std::vector<Shape> shapes = {{37, 29}, {29}};
  std::vector<Tensor> p32, p16, grads;
  for (size_t i = 0; i < names.size(); ++i) {
    Tensor t(shapes[i]);
    float* w = t.data<float>();
    for (int64_t e = 0; e < t.numel(); ++e) w[e] = 0.05f * std::sin(0.37f * e + i) + (i ? 1 : 0);
    p16.push_back(t.to(DType::kBF16));
    p32.push_back(p16.back().to(DType::kF32));
    grads.push_back(Tensor(shapes[i]));
  }
  AdamWOptions o;
  o.weight_decay = 0.1;
  o.max_grad_norm = 0.5;
  AdamW opt32(o, names, shapes), opt16(o, names, shapes);
  const double nan = std::nan("");
  size_t changed = 0;
  for (int step = 0; step < 6; ++step) {
    double sq = 0;
    for (size_t i = 0; i < names.size(); ++i) {
      float* g = grads[i].data<float>();
      for (int64_t e = 0; e < grads[i].numel(); ++e)
        g[e] = 0.01f * std::cos(0.11f * e * (step + 1));
      sq += sum_of_squares(grads[i].span<float>());
    }
    const double norm = step == 2 ? nan : std::sqrt(sq);
    const Tensor before = p16[0].clone();
    EXPECT_EQ(opt16.step(p16, grads, 1e-2, norm).applied, step != 2);
    opt32.step(p32, grads, 1e-2, norm);
    for (size_t i = 0; i < names.size(); ++i) {
      ASSERT_EQ(p16[i].dtype(), DType::kBF16);
      const Tensor rounded = p32[i].to(DType::kBF16);
      ASSERT_EQ(std::memcmp(rounded.bytes(), p16[i].bytes(), rounded.nbytes()), 0)
          << "step " << step << " " << names[i];
      ASSERT_EQ(std::memcmp(opt32.mu()[i].bytes(), opt16.mu()[i].bytes(), rounded.numel() * 4), 0);
      ASSERT_EQ(std::memcmp(opt32.nu()[i].bytes(), opt16.nu()[i].bytes(), rounded.numel() * 4), 0);
      p32[i] = rounded.to(DType::kF32);
    }
    for (int64_t e = 0; e < before.numel(); ++e) {
      changed += before.data<uint16_t>()[e] != p16[0].data<uint16_t>()[e];
    }
  }
  EXPECT_GT(changed, 0u) << "lr too small: every update rounded away";
  // Gradients must be fp32; parameters fp32 or bf16.
  std::vector<Tensor> g16 = {grads[0].to(DType::kBF16), grads[1]};
  EXPECT_THROW(opt16.step(p16, g16, 1e-2, 1.0), Error);
  std::vector<Tensor> p_f16 = {p32[0].to(DType::kF16), p32[1]};
  EXPECT_THROW(opt32.step(p_f16, grads, 1e-2, 1.0), Error);
}

// The whole step (decoder + global norm + AdamW, train_step) on bf16-stored weights equals the
// fp32 step on the same (rounded) weights followed by rounding, bit for bit, step after step.
TEST(AdamW, TrainStepOnBf16WeightsEqualsFp32StepThenRounding) {
  const std::string dir =
      (std::filesystem::path(MAGIX_FIXTURES_DIR) / "models" / "llama_gqa").string();
  Mesh mesh;
  Decoder m16 = load_decoder(dir, mesh, {.weight_dtype = DType::kBF16});
  Decoder m32 = load_decoder(dir, mesh);
  m32.params().convert(DType::kBF16);
  m32.params().convert(DType::kF32);
  const PartitionRules rules = default_partition_rules("llama");
  AdamWOptions o;
  o.weight_decay = 0.1;
  AdamW opt16 = initialize_opt_state(o, m16.params(), rules, mesh);
  AdamW opt32 = initialize_opt_state(o, m32.params(), rules, mesh);
  const TokenBatch batch = random_causal_batch(m16.config().vocab_size, 3, 9, 5, 0, 1);
  for (int step = 0; step < 3; ++step) {
    const TrainStepResult r16 = train_step(m16, opt16, batch, 3e-3);
    const TrainStepResult r32 = train_step(m32, opt32, batch, 3e-3);
    EXPECT_EQ(r16.loss, r32.loss) << "step " << step;
    EXPECT_EQ(r16.grad_norm, r32.grad_norm) << "step " << step;
    m32.params().convert(DType::kBF16);
    for (size_t i = 0; i < m16.params().size(); ++i) {
      const Tensor& a = m16.params().tensor(i);
      const Tensor& b = m32.params().tensor(i);
      ASSERT_EQ(a.dtype(), DType::kBF16);
      ASSERT_EQ(std::memcmp(a.bytes(), b.bytes(), a.nbytes()), 0)
          << "step " << step << " " << m16.params().info(i).name;
    }
    m32.params().convert(DType::kF32);
  }
}

TEST(AdamW, DecayMask) {
  EXPECT_TRUE(decays("model.layers.0.mlp.up_proj.weight"));
  EXPECT_TRUE(decays("model.embed_tokens.weight"));
  EXPECT_FALSE(decays("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_FALSE(decays("model.layers.0.post_attention_layernorm.weight"));
  EXPECT_FALSE(decays("model.norm.weight"));
}

TEST(LrSchedule, Shapes) {
  LrSchedule cos{ScheduleKind::kWarmupCosine, 1.0, 10, 100, 0.0};
  EXPECT_DOUBLE_EQ(cos(0), 0.0);
  EXPECT_DOUBLE_EQ(cos(5), 0.5);
  EXPECT_DOUBLE_EQ(cos(10), 1.0);
  EXPECT_NEAR(cos(55), 0.5, 1e-12);
  EXPECT_NEAR(cos(100), 0.0, 1e-12);
  EXPECT_NEAR(cos(150), 0.0, 1e-12);
  // The reference scripts' quirk: decay ends at 90% of the steps.
  LrSchedule ref{ScheduleKind::kWarmupCosine, 1.0, 10, 90, 0.0};
  EXPECT_NEAR(ref(90), 0.0, 1e-12);
  EXPECT_NEAR(ref(95), 0.0, 1e-12);
  LrSchedule lin{ScheduleKind::kLinear, 2.0, 0, 10, 0.0};
  EXPECT_DOUBLE_EQ(lin(0), 2.0);
  EXPECT_DOUBLE_EQ(lin(5), 1.0);
  LrSchedule cst{ScheduleKind::kConstant, 3.0, 4, 10, 0.0};
  EXPECT_DOUBLE_EQ(cst(2), 1.5);
  EXPECT_DOUBLE_EQ(cst(9), 3.0);
  EXPECT_THROW(parse_schedule_kind("cosine_restarts"), Error);
}

TEST(SumOfSquares, IndependentOfThreadCountAndExact) {
  std::vector<float> g(300000);
  double want = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    g[i] = std::sin(0.001 * i);
    want += double(g[i]) * g[i];
  }
  EXPECT_NEAR(sum_of_squares(g), want, 1e-9 * want);
}

}  // namespace
}  // namespace magix
