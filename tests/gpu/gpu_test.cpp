// The GPU checks (docs/gpu.md), each written once over a device and run twice:
// - "emulated": the emulated device of tests/common/emulated_device.hpp (tensors tagged cuda in
//   host memory, the CPU backend's ops). It runs in every build, on any machine, and proves the
//   test code itself: every reference comparison passes, and the device run equals the CPU run
//   bit for bit (the arithmetic is the same).
// - "cuda": the real CUDA backend; skipped unless this build has it and a GPU is visible
//   (default_device() is cuda). Its numbers differ from the CPU's by rounding only, so the
//   comparisons use the bands of the CPU's own bf16 tests.
// What is compared:
// - FixtureBf16: every fixture family's per-example NLL and parameter gradients with --bf16
//   compute on the device against HF transformers' fp32 reference (tests/fixtures/models/*/
//   reference.safetensors): NLL within 1e-2 relative, gradient cosine >= 0.99 (the bands of
//   tests/model/mixed_precision_test.cpp).
// - Training: 20 bf16 steps of the tiny llama of tests/fixtures/train on the device against the
//   same 20 steps on the CPU: every loss within 2e-2 relative on cuda, bit-identical (and the same
//   gradient norms) on the emulated device.
// - GreedyGeneration: fp32 greedy continuations of a few fixture models on the device identical
//   to the CPU's tokens.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "../common/emulated_device.hpp"
#include "../common/fixture_batch.hpp"
#include "../common/tiny_train.hpp"
#include "backends/backend.hpp"
#include "magix/generate.hpp"
#include "magix/mesh.hpp"
#include "magix/model.hpp"
#include "magix/safetensors.hpp"
#include "magix/trainer.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
// The fixtures of the source tree this was built from, or $MAGIX_FIXTURES_DIR (a bundle run on
// another machine: scripts/gpu_bundle.sh).
const fs::path kFixtures = [] {
  const char* env = std::getenv("MAGIX_FIXTURES_DIR");
  return fs::path(env && *env ? env : MAGIX_FIXTURES_DIR);
}();

double cosine(const Tensor& a, const Tensor& b) {
  const float* x = a.data<float>();
  const float* y = b.data<float>();
  double xy = 0, xx = 0, yy = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    xy += double(x[i]) * y[i];
    xx += double(x[i]) * x[i];
    yy += double(y[i]) * y[i];
  }
  return xy / std::max(std::sqrt(xx) * std::sqrt(yy), 1e-300);
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.bytes(), b.bytes(), a.nbytes()) == 0;
}

// The device instance: "emulated" registers the emulated backend for Device::kCuda for the
// test's life; "cuda" skips unless the build's own CUDA backend sees a GPU.
class OnDevice {
 public:
  explicit OnDevice(const std::string& kind) : emulated_(kind == "emulated") {
    if (emulated_) scope_.emplace();
  }
  bool emulated() const { return emulated_; }
  // Why the instance cannot run here (empty: it can).
  std::string skip_reason() const {
    if (emulated_) return "";
    if (!has_backend(Device::kCuda)) return "this build of magix has no cuda backend";
    if (default_device() != Device::kCuda) return "no GPU is visible";
    return "";
  }

 private:
  bool emulated_;
  std::optional<test::EmulatedDeviceScope> scope_;
};

std::string instance_name(const testing::TestParamInfo<std::string>& info) { return info.param; }

// ---- a. fixture families in bf16 against HF fp32 ----------------------------------------------

struct FamilyCase {
  std::string device, model;
};
void PrintTo(const FamilyCase& c, std::ostream* os) { *os << c.model << " on " << c.device; }

class FixtureBf16 : public testing::TestWithParam<FamilyCase> {};

TEST_P(FixtureBf16, NllAndGradientsNearTransformersFp32) {
  OnDevice on(GetParam().device);
  if (const std::string why = on.skip_reason(); !why.empty()) GTEST_SKIP() << why;
  const fs::path dir = kFixtures / "models" / GetParam().model;
  Mesh mesh;
  Decoder model =
      load_decoder(dir.string(), mesh, {.compute_dtype = DType::kBF16, .device = Device::kCuda});
  ASSERT_EQ(model.params().device(), Device::kCuda);
  SafetensorsReader ref(dir / "reference.safetensors");
  const TokenBatch b = test::read_fixture_batch(ref);
  const Tensor tokens = ref.read("tokens_per_example");
  double count = 0;
  for (int64_t r = 0; r < b.batch; ++r) count += static_cast<double>(tokens.data<int64_t>()[r]);

  ParameterSet dev_grads = model.params().zeros_like();
  const LossResult res = model.loss_and_grad(b, count, dev_grads);
  const ParameterSet grads = dev_grads.to_device(Device::kCpu);
  const Tensor nll = ref.read_f32("nll_per_example");
  double worst_nll = 0;
  ASSERT_EQ(static_cast<int64_t>(res.nll_per_row.size()), b.batch);
  for (int64_t r = 0; r < b.batch; ++r) {
    const double want = nll.data<float>()[r];
    EXPECT_NEAR(res.nll_per_row[r], want, 1e-2 * std::fabs(want)) << "row " << r;
    EXPECT_EQ(res.tokens_per_row[r], tokens.data<int64_t>()[r]);
    worst_nll = std::max(worst_nll, std::fabs(res.nll_per_row[r] - want) / std::fabs(want));
  }
  RecordProperty("worst_nll_relative_error", std::to_string(worst_nll));
  const double want_loss = ref.read_f32("loss").data<float>()[0];
  EXPECT_NEAR(res.loss, want_loss, 1e-2 * std::fabs(want_loss));

  double worst = 1;
  for (size_t i = 0; i < grads.size(); ++i) {
    const std::string& name = grads.info(i).name;
    const Tensor want = ref.read_f32("grad." + name);
    ASSERT_EQ(grads.tensor(i).shape(), want.shape()) << name;
    const double c = cosine(grads.tensor(i), want);
    EXPECT_GE(c, 0.99) << name;
    worst = std::min(worst, c);
  }
  RecordProperty("worst_gradient_cosine", std::to_string(worst));

  if (on.emulated()) {
    // The same arithmetic as the CPU's bf16 run: the same bits.
    Decoder cpu = load_decoder(dir.string(), mesh, {.compute_dtype = DType::kBF16});
    ParameterSet cpu_grads = cpu.params().zeros_like();
    const LossResult want = cpu.loss_and_grad(b, count, cpu_grads);
    EXPECT_EQ(res.loss, want.loss);
    EXPECT_EQ(res.nll_per_row, want.nll_per_row);
    for (size_t i = 0; i < grads.size(); ++i) {
      EXPECT_TRUE(same_bits(grads.tensor(i), cpu_grads.tensor(i))) << grads.info(i).name;
    }
  }
}

std::vector<FamilyCase> family_cases() {
  std::vector<FamilyCase> cases;
  for (const char* device : {"emulated", "cuda"}) {
    for (const char* model : {"llama_gqa", "llama_mqa_bias", "mistral_window", "gemma", "qwen2",
                              "qwen2_tied", "qwen3", "gemma2", "gemma3_text", "phi3"}) {
      cases.push_back({device, model});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Families, FixtureBf16, testing::ValuesIn(family_cases()),
                         [](const testing::TestParamInfo<FamilyCase>& info) {
                           return info.param.model + "_" + info.param.device;
                         });

// ---- b. 20 training steps on the device against the CPU ---------------------------------------

class Training : public testing::TestWithParam<std::string> {};

// The tiny random llama of tests/fixtures/train on its corpus (as tests/trainer), bf16 compute.
TrainArgs tiny_args() {
  TrainArgs a = test::tiny_train_args(kFixtures);
  a.max_steps = 20;
  a.bf16 = true;
  return a;
}

struct TrainRun {
  std::vector<double> losses, grad_norms;
};

TrainRun train(const TrainArgs& a, const Mesh& mesh) {
  std::unique_ptr<Trainable> model = make_full_trainable(a, mesh);
  TrainRun r;
  TrainHooks hooks;
  hooks.on_step = [&](const StepMetrics& m) { r.grad_norms.push_back(m.grad_norm); };
  r.losses = run_training(a, mesh, *model, hooks).losses;
  return r;
}

TEST_P(Training, TwentyBf16StepsMatchTheCpu) {
  OnDevice on(GetParam());
  if (const std::string why = on.skip_reason(); !why.empty()) GTEST_SKIP() << why;
  Mesh mesh;
  TrainArgs a = tiny_args();
  const TrainRun cpu = train(a, mesh);
  a.device = "cuda";
  const TrainRun dev = train(a, mesh);
  ASSERT_EQ(cpu.losses.size(), 20u);
  ASSERT_EQ(dev.losses.size(), cpu.losses.size());
  // It learns: the last loss is below the first (else the comparison proves little).
  EXPECT_LT(cpu.losses.back(), cpu.losses.front());
  double worst = 0;
  for (size_t i = 0; i < cpu.losses.size(); ++i) {
    if (on.emulated()) {
      EXPECT_EQ(dev.losses[i], cpu.losses[i]) << "step " << i + 1;
      EXPECT_EQ(dev.grad_norms[i], cpu.grad_norms[i]) << "step " << i + 1;
    } else {
      EXPECT_NEAR(dev.losses[i], cpu.losses[i], 2e-2 * std::fabs(cpu.losses[i])) << "step " << i + 1;
    }
    worst = std::max(worst, std::fabs(dev.losses[i] - cpu.losses[i]) / std::fabs(cpu.losses[i]));
  }
  RecordProperty("worst_loss_relative_difference", std::to_string(worst));
}

INSTANTIATE_TEST_SUITE_P(Devices, Training, testing::Values("emulated", "cuda"), instance_name);

// ---- c. greedy generation on the device identical to the CPU's (fp32) --------------------------

class GreedyGeneration : public testing::TestWithParam<std::string> {};

TEST_P(GreedyGeneration, Fp32TokensEqualTheCpu) {
  OnDevice on(GetParam());
  if (const std::string why = on.skip_reason(); !why.empty()) GTEST_SKIP() << why;
  Mesh mesh;
  const std::vector<std::vector<int32_t>> prompts = {{1, 5, 9, 3}, {7}, {2, 4, 6, 8, 10, 12}};
  GenerateOptions o;
  o.max_new_tokens = 12;
  for (const char* model : {"llama_gqa", "mistral_window", "qwen3", "gemma2", "phi3"}) {
    SCOPED_TRACE(model);
    const std::string dir = (kFixtures / "models" / model).string();
    Decoder c = load_decoder(dir, mesh);
    const std::vector<GenerationResult> cpu = Generator(c).generate(prompts, o);
    Decoder d = load_decoder(dir, mesh, {.device = Device::kCuda});
    ASSERT_EQ(d.params().device(), Device::kCuda);
    const std::vector<GenerationResult> dev = Generator(d).generate(prompts, o);
    ASSERT_EQ(dev.size(), cpu.size());
    for (size_t i = 0; i < cpu.size(); ++i) {
      EXPECT_FALSE(cpu[i].tokens.empty()) << "prompt " << i;
      EXPECT_EQ(dev[i].tokens, cpu[i].tokens) << "prompt " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, GreedyGeneration, testing::Values("emulated", "cuda"),
                         instance_name);

}  // namespace
}  // namespace magix
