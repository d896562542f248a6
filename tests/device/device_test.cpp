// Device plumbing, proven on the CPU with the emulated device (tests/common/emulated_device.hpp):
// tensors tagged Device::kCuda in host memory, every op the CPU backend's. The model, the
// trainer, LoRA, scoring, generation and checkpoints then run with everything on a non-host
// device, through the op table only: any host access of a device tensor throws, any host tensor
// given to an op throws. Since the arithmetic is the CPU backend's, each run must equal the
// plain CPU run bit for bit (losses, parameters, tokens, NLLs): a difference can only be a
// plumbing defect. These tests prove the plumbing, not a GPU's numerics (the op sweep of
// tests/backends checks a real backend's ops against fp64 references).
//
// Also: the host-access guard of Tensor, --device parsing and default, the choice of a rank's
// GPU from the launcher's local rank.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../common/emulated_device.hpp"
#include "../common/tiny_train.hpp"
#include "../lora/lora_fixture.hpp"
#include "backends/backend.hpp"
#include "magix/error.hpp"
#include "magix/evaluate.hpp"
#include "magix/generate.hpp"
#include "magix/lora.hpp"
#include "magix/memory_check.hpp"
#include "magix/mesh.hpp"
#include "magix/trainer.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
const fs::path kFixtures = MAGIX_FIXTURES_DIR;
using test::EmulatedDeviceScope;

// A fresh folder under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string t = (fs::temp_directory_path() / "magix-device-test-XXXXXX").string();
    EXPECT_NE(mkdtemp(t.data()), nullptr);
    path_ = t;
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Every tensor of two sets equal bit for bit, read back to the host where they live on a device.
void expect_bitwise_equal(const ParameterSet& got, const ParameterSet& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const Tensor g = to_host(got.tensor(i)), w = to_host(want.tensor(i));
    ASSERT_EQ(g.dtype(), w.dtype()) << want.info(i).name;
    ASSERT_EQ(g.nbytes(), w.nbytes()) << want.info(i).name;
    EXPECT_EQ(std::memcmp(g.bytes(), w.bytes(), w.nbytes()), 0) << want.info(i).name;
  }
}

// ---- guard, backend, devices ----------------------------------------------------------------

TEST(Device, HostAccessOfADeviceTensorThrows) {
  EmulatedDeviceScope emulated;
  const Backend& ops = backend_for(Device::kCuda);
  Tensor t = ops.zeros({2, 3}, DType::kF32);
  EXPECT_EQ(t.device(), Device::kCuda);
  const std::string want = "lives on cuda; copy it to the host first";
  EXPECT_NE(message_of([&] { (void)t.data<float>(); }).find(want), std::string::npos);
  EXPECT_THROW((void)t.span<float>(), Error);
  EXPECT_THROW((void)t.bytes(), Error);
  EXPECT_THROW((void)std::as_const(t).bytes(), Error);
  EXPECT_THROW((void)t.clone(), Error);
  EXPECT_THROW((void)t.to(DType::kBF16), Error);
  EXPECT_THROW(t.fill_zero(), Error);
  // Shape-only operations and backend access stay allowed.
  EXPECT_EQ(t.reshape({3, 2}).device(), Device::kCuda);
  EXPECT_EQ(t.rows(1, 1).numel(), 3);
  EXPECT_NE(t.device_bytes(), nullptr);
}

TEST(Device, EmulatedBackendCopiesAcrossAndRefusesHostTensors) {
  EmulatedDeviceScope emulated;
  const Backend& ops = backend_for(Device::kCuda);
  Tensor host({4}, DType::kF32);
  for (int i = 0; i < 4; ++i) host.data<float>()[i] = 0.5f * static_cast<float>(i);
  const Tensor dev = to_device(host, Device::kCuda);
  EXPECT_EQ(dev.device(), Device::kCuda);
  Tensor sum = ops.zeros({4}, DType::kF32);
  ops.add(sum, dev);
  ops.add(sum, dev);
  const Tensor back = to_host(sum);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(back.data<float>()[i], static_cast<float>(i));
  // An op given a host tensor fails as a GPU backend's would.
  EXPECT_NE(message_of([&] { ops.add(sum, host); }).find("a cpu [4] tensor given to"),
            std::string::npos);
  // A device tensor given to the CPU backend is refused too.
  EXPECT_THROW(backend_for(Device::kCpu).add(host, dev), Error);
  // Fresh device buffers hold garbage (NaN), as device memory does.
  const Tensor fresh = to_host(ops.empty({2}, DType::kF32));
  EXPECT_TRUE(std::isnan(fresh.data<float>()[0]));
}

TEST(Device, ParseAndDefault) {
  EXPECT_EQ(parse_device("cpu"), Device::kCpu);
  EXPECT_NE(message_of([] { (void)parse_device("gpu"); }).find("unknown device 'gpu'"),
            std::string::npos);
  const Device native = default_device();
  if (!has_backend(Device::kCuda)) {
    EXPECT_EQ(native, Device::kCpu);
    EXPECT_EQ(use_device(""), Device::kCpu);
    EXPECT_NE(message_of([] {
                (void)parse_device("cuda");
              }).find("this build of magix has no cuda backend"),
              std::string::npos);
  } else if (native == Device::kCpu) {
    // A build with the CUDA backend on a machine without a GPU: cpu by default, and asking
    // for cuda says why it cannot.
    EXPECT_EQ(use_device(""), Device::kCpu);
    EXPECT_EQ(parse_device("cuda"), Device::kCuda);
    EXPECT_NE(message_of([] { (void)use_device("cuda"); }).find("no GPU is visible"),
              std::string::npos);
  }
  // A backend registered by a test is never the default.
  EmulatedDeviceScope emulated;
  EXPECT_EQ(default_device(), native);
  EXPECT_EQ(parse_device("cuda"), Device::kCuda);
}

TEST(Device, LocalRankFromTheLaunchersEnvironment) {
  const auto env = [](std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  };
  EXPECT_EQ(local_rank_from_env(env({})), std::nullopt);
  EXPECT_EQ(local_rank_from_env(env({{"OMPI_COMM_WORLD_LOCAL_RANK", "3"}})), 3);
  EXPECT_EQ(local_rank_from_env(env({{"SLURM_LOCALID", "1"}})), 1);
  EXPECT_EQ(local_rank_from_env(env({{"MPI_LOCALRANKID", "2"}})), 2);
  EXPECT_EQ(local_rank_from_env(env({{"PMI_LOCAL_RANK", "0"}})), 0);
  // Open MPI's variable first (an srun inside an allocation may leave SLURM_LOCALID set).
  EXPECT_EQ(local_rank_from_env(env({{"SLURM_LOCALID", "5"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}})),
            1);
  EXPECT_EQ(local_rank_from_env(env({{"OMPI_COMM_WORLD_LOCAL_RANK", ""}, {"SLURM_LOCALID", "4"}})),
            4);
  for (const char* bad : {"-1", "x", "1x", " 2"}) {
    EXPECT_NE(message_of([&] {
                (void)local_rank_from_env(env({{"SLURM_LOCALID", bad}}));
              }).find("SLURM_LOCALID"),
              std::string::npos)
        << bad;
  }
  // One GPU per rank; round robin when a node has more ranks than GPUs.
  EXPECT_EQ(device_index_for_local_rank(0, 8), 0);
  EXPECT_EQ(device_index_for_local_rank(7, 8), 7);
  EXPECT_EQ(device_index_for_local_rank(5, 4), 1);
  EXPECT_THROW((void)device_index_for_local_rank(0, 0), Error);
  EXPECT_THROW((void)device_index_for_local_rank(-1, 2), Error);
  // On the CPU nothing is bound.
  EXPECT_NO_THROW(select_device_for_local_rank(Device::kCpu, 3));
}

// ---- training ---------------------------------------------------------------------------------

// The tiny random llama of tests/fixtures/train on its corpus (as tests/trainer), 3 steps.
TrainArgs tiny_args() {
  TrainArgs a = test::tiny_train_args(kFixtures);
  a.max_steps = 3;
  return a;
}

struct RunResult {
  std::vector<double> losses, grad_norms;
  ParameterSet trained;  // on the host
};

RunResult train(const TrainArgs& a, const Mesh& mesh, const LoraConfig* lora = nullptr) {
  std::unique_ptr<Trainable> model;
  if (lora) {
    model = make_lora_trainable(a, *lora, mesh);
  } else {
    model = make_full_trainable(a, mesh);
  }
  const Device want = a.device == "cuda" ? Device::kCuda : Device::kCpu;
  EXPECT_EQ(model->decoder().params().device(), want);
  EXPECT_EQ(model->trainable().device(), want);
  RunResult r;
  TrainHooks hooks;
  hooks.on_step = [&](const StepMetrics& m) { r.grad_norms.push_back(m.grad_norm); };
  r.losses = run_training(a, mesh, *model, hooks).losses;
  r.trained = model->trainable().to_device(Device::kCpu);
  return r;
}

void expect_same_run(const RunResult& got, const RunResult& want) {
  ASSERT_EQ(got.losses.size(), want.losses.size());
  ASSERT_FALSE(want.losses.empty());
  for (size_t i = 0; i < want.losses.size(); ++i) {
    EXPECT_EQ(got.losses[i], want.losses[i]) << "step " << i + 1;
    EXPECT_EQ(got.grad_norms[i], want.grad_norms[i]) << "step " << i + 1;
  }
  expect_bitwise_equal(got.trained, want.trained);
}

TEST(Device, TrainingOnTheDeviceEqualsTheCpuBitForBit) {
  EmulatedDeviceScope emulated;
  Mesh mesh;
  struct Case {
    const char* name;
    bool bf16, bf16_weights, recompute;
    int64_t accumulation;
  };
  for (const Case& c : {Case{"fp32", false, false, false, 1}, Case{"bf16", true, false, false, 1},
                        Case{"bf16 weights, recompute, 2 micro-batches", true, true, true, 2}}) {
    SCOPED_TRACE(c.name);
    TrainArgs a = tiny_args();
    a.bf16 = c.bf16;
    a.bf16_model_weights = c.bf16_weights;
    a.recompute = c.recompute;
    a.gradient_accumulation_steps = c.accumulation;
    const RunResult cpu = train(a, mesh);
    a.device = "cuda";
    expect_same_run(train(a, mesh), cpu);
  }
}

TEST(Device, LoraTrainingOnTheDeviceEqualsTheCpuBitForBit) {
  EmulatedDeviceScope emulated;
  Mesh mesh;
  LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 8;
  lora.dropout = 0.25;  // the dropout masks drawn on the device
  for (bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16" : "fp32");
    TrainArgs a = tiny_args();
    a.bf16 = bf16;
    a.bf16_model_weights = bf16;
    a.learning_rate = 5e-2;
    const RunResult cpu = train(a, mesh, &lora);
    a.device = "cuda";
    expect_same_run(train(a, mesh, &lora), cpu);
  }
}

// A run stopped at step 3 on one device resumes on the other: the same losses and parameters
// as 6 steps straight on the CPU (checkpoints are device-independent files).
TEST(Device, CheckpointsMoveBetweenTheDeviceAndTheCpu) {
  EmulatedDeviceScope emulated;
  Mesh mesh;
  TempDir tmp;
  TrainArgs a = tiny_args();
  a.max_steps = 6;
  a.save_steps = 100;  // only at the end and where the run is stopped
  a.checkpoint_dir = (tmp.path() / "straight").string();
  const RunResult straight = train(a, mesh);
  for (const auto& [first, second] : {std::pair{"cuda", ""}, std::pair{"", "cuda"}}) {
    SCOPED_TRACE(std::string("saved on ") + (*first ? first : "cpu") + ", restored on " +
                 (*second ? second : "cpu"));
    a.checkpoint_dir = (tmp.path() / (std::string("split-") + first)).string();
    a.device = first;
    std::vector<double> losses;
    {
      std::unique_ptr<Trainable> m = make_full_trainable(a, mesh);
      TrainHooks hooks;
      hooks.should_stop = [](const StepMetrics& s) { return s.step == 3; };
      losses = run_training(a, mesh, *m, hooks).losses;
    }
    a.device = second;
    std::unique_ptr<Trainable> m = make_full_trainable(a, mesh);  // fresh random init
    const TrainSummary s = run_training(a, mesh, *m);
    ASSERT_TRUE(s.resumed_from.has_value());
    losses.insert(losses.end(), s.losses.begin(), s.losses.end());
    EXPECT_EQ(losses, straight.losses);
    expect_bitwise_equal(m->trainable(), straight.trained);
  }
}

// Adapters merged into weights that live on the device (generate --lora, export): host adapters
// meet device weights.
TEST(Device, LoraMergedOnTheDeviceEqualsTheCpu) {
  EmulatedDeviceScope emulated;
  Mesh mesh;
  const test::LoraFixture fx = test::load_lora_fixture("llama_gqa");
  DecoderOptions options;
  Decoder c = load_decoder(fx.model_dir.string(), mesh, options);
  options.device = Device::kCuda;
  Decoder d = load_decoder(fx.model_dir.string(), mesh, options);
  const ParameterSet adapters =
      test::fixture_adapters(fx, lora_adapter_infos(c.params().infos(), fx.config, mesh));
  merge_lora(c.params(), adapters, fx.config.scale());
  merge_lora(d.params(), adapters, fx.config.scale());
  EXPECT_EQ(d.params().device(), Device::kCuda);
  expect_bitwise_equal(d.params(), c.params());
}

// ---- scoring and generation -------------------------------------------------------------------

TEST(Device, ScoringOnTheDeviceEqualsTheCpu) {
  EmulatedDeviceScope emulated;
  Mesh mesh;
  for (bool bf16 : {false, true}) {
    ScoreArgs a;
    a.model_name_or_path = (kFixtures / "models/llama_gqa").string();
    a.tokenizer_name_or_path = (kFixtures / "score_chat/tokenizer").string();
    a.input = (kFixtures / "score_chat/conversations.jsonl").string();
    a.data_field = "messages";
    a.use_chat_template = true;
    a.batch_size = 2;
    a.mesh_shape = {1, 1};
    a.bf16 = bf16;
    const EvalResult cpu = run_scoring(a, mesh);
    a.device = "cuda";
    const EvalResult dev = run_scoring(a, mesh);
    EXPECT_EQ(dev.nll_per_example, cpu.nll_per_example);
    EXPECT_EQ(dev.tokens_per_example, cpu.tokens_per_example);
  }
}

TEST(Device, GreedyGenerationAndLogitsOnTheDeviceEqualTheCpu) {
  EmulatedDeviceScope emulated;
  Mesh mesh;
  const std::vector<std::vector<int32_t>> prompts = {{1, 5, 9, 3}, {7}, {2, 4, 6, 8, 10, 12}};
  GenerateOptions o;
  o.max_new_tokens = 8;
  for (const char* model : {"llama_gqa", "gemma2", "gemma3_text", "phi3"}) {
    for (bool bf16 : {false, true}) {
      SCOPED_TRACE(std::string(model) + (bf16 ? " bf16" : " fp32"));
      DecoderOptions options;
      options.compute_dtype = bf16 ? DType::kBF16 : DType::kF32;
      const std::string dir = (kFixtures / "models" / model).string();
      Decoder c = load_decoder(dir, mesh, options);
      const std::vector<GenerationResult> cpu = Generator(c).generate(prompts, o);
      options.device = Device::kCuda;
      Decoder d = load_decoder(dir, mesh, options);
      EXPECT_EQ(d.params().device(), Device::kCuda);
      const std::vector<GenerationResult> dev = Generator(d).generate(prompts, o);
      // Decoder::logits comes back to the host.
      const TokenBatch batch = make_causal_batch(prompts);
      const Tensor want = c.logits(batch), got = d.logits(batch);
      ASSERT_EQ(got.device(), Device::kCpu);
      ASSERT_EQ(got.nbytes(), want.nbytes());
      EXPECT_EQ(std::memcmp(got.bytes(), want.bytes(), want.nbytes()), 0);
      ASSERT_EQ(dev.size(), cpu.size());
      for (size_t i = 0; i < cpu.size(); ++i) {
        EXPECT_FALSE(cpu[i].tokens.empty());
        EXPECT_EQ(dev[i].tokens, cpu[i].tokens) << "prompt " << i;
      }
    }
  }
}

// Up-front fit checks count the device's memory where the tensors will live: the weights when a
// model is loaded onto it, the KV cache of a generation, the training state; each refusal names
// the device and what would not fit.
TEST(Device, FitChecksUseTheDevicesMemory) {
  EmulatedDeviceScope emulated;
  Mesh mesh;
  const std::string dir = (kFixtures / "models/llama_gqa").string();
  DecoderOptions options;
  options.device = Device::kCuda;
  emulated.backend().set_memory_bytes(4096);  // less than the fixture's weights
  try {
    load_decoder(dir, mesh, options);
    ADD_FAILURE() << "weights larger than the device were loaded onto it";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("for the weights would need"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("the cuda device has 4.0 KiB (emulated cuda"),
              std::string::npos)
        << e.what();
  }
  emulated.backend().set_memory_bytes(1 << 20);  // the weights fit, a long generation's cache not
  Generator gen(load_decoder(dir, mesh, options));
  GenerateOptions o;
  o.eos_ids = {};
  o.max_new_tokens = 8;
  EXPECT_EQ(gen.generate({{1, 5, 9}}, o)[0].tokens.size(), 8u);
  o.max_new_tokens = 100000;
  o.max_length = 100003;  // (its default, 256, would stop the prompt first)
  try {
    gen.generate({{1, 5, 9}}, o);
    ADD_FAILURE() << "a KV cache larger than the device was allocated";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the KV cache would need"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("the cuda device has 1.0 MiB"), std::string::npos)
        << e.what();
  }
  // The same on the host: the machine's memory, which these sizes are far from.
  EXPECT_NO_THROW(check_fits_in_memory(1 << 21, "two MiB"));
  EXPECT_THROW(check_fits_in_memory(1 << 21, "two MiB", Device::kCuda), Error);
}

}  // namespace
}  // namespace magix
