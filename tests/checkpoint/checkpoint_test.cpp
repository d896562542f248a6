// Checkpoints on one process: round trips (f32/bf16, several items, sub-boxes as another mesh
// would read them), async saves taking the values at save() time, retention, trainer state and
// extra files, and load_checkpoint_decoder against load_decoder.
#include <gtest/gtest.h>

#include <fstream>

#include "checkpoint_test_util.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"
#include "magix/hf_files.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
using test::bitwise_equal;
using test::CkptTempDir;
using test::pattern_box;
using test::pattern_full;

// A tensor replicated on a 1x1 mesh: the whole global tensor.
ShardedTensor whole(const std::string& name, Tensor t) {
  return ShardedTensor{name, t.shape(), PartitionSpec{}, Shape(t.shape().size(), 0), t};
}

CheckpointItems sample_items() {
  CheckpointItems items;
  items["model"].push_back(whole("a.weight", pattern_full(1, {6, 8})));
  items["model"].push_back(whole("b.weight", pattern_full(2, {5, 4, 3}, DType::kBF16)));
  items["model"].push_back(whole("scalar", pattern_full(3, {})));
  items["optimizer"].push_back(whole("mu/a.weight", pattern_full(4, {6, 8})));
  items["optimizer"].push_back(whole("count", pattern_full(5, {1})));
  return items;
}

TEST(Checkpoint, RoundTripF32AndBf16SeveralItems) {
  CkptTempDir tmp;
  Mesh mesh;
  for (bool async : {false, true}) {
    const fs::path dir = tmp.path() / (async ? "async" : "sync");
    CheckpointManager m(dir, mesh, {.max_to_keep = 3, .async = async});
    EXPECT_FALSE(m.latest_step().has_value());
    const CheckpointItems items = sample_items();
    m.save(7, items, nlohmann::json{{"step", 7}, {"rng", "abc"}});
    m.wait();
    ASSERT_EQ(m.steps(), std::vector<int64_t>{7});
    EXPECT_EQ(m.step_dir(7), dir / "000007");
    ASSERT_TRUE(is_checkpoint_step(m.step_dir(7)));

    CheckpointReader r(m.step_dir(7));
    EXPECT_EQ(r.step(), 7);
    EXPECT_EQ(r.items(), (std::vector<std::string>{"model", "optimizer"}));
    EXPECT_EQ(r.trainer_state().at("rng"), "abc");
    EXPECT_TRUE(r.has_tensor("model", "b.weight"));
    EXPECT_FALSE(r.has_tensor("model", "mu/a.weight"));
    EXPECT_EQ(r.global_shape("model", "b.weight"), (Shape{5, 4, 3}));
    for (const auto& [item, tensors] : items) {
      std::vector<ShardedTensor> targets;
      for (const ShardedTensor& t : tensors) {
        targets.push_back(whole(t.name, Tensor(t.global_shape, t.local.dtype())));
      }
      r.read(item, targets);
      for (size_t i = 0; i < targets.size(); ++i) {
        EXPECT_TRUE(bitwise_equal(targets[i].local, tensors[i].local)) << item << " " << i;
      }
    }
    // Index: bf16 stays bf16 on disk.
    std::ifstream in(m.step_dir(7) / "index.json");
    const nlohmann::json index = nlohmann::json::parse(in);
    EXPECT_EQ(index.at("items").at("model").at("b.weight").at("dtype"), "BF16");
    EXPECT_EQ(index.at("version"), 1);
  }
}

TEST(Checkpoint, ReadsAnyBoxConvertingDtypes) {
  CkptTempDir tmp;
  Mesh mesh;
  CheckpointManager m(tmp.path(), mesh, {.async = false});
  m.save(1, sample_items(), {});
  CheckpointReader r(m.step_dir(1));
  // bf16 stored -> f32 boxes (exact), f32 stored -> bf16 boxes (rounded as Tensor::to does).
  const Shape a{6, 8}, b{5, 4, 3};
  for (const auto& [start, extent] : std::vector<std::pair<Shape, Shape>>{
           {{0, 0}, {3, 8}}, {{3, 0}, {3, 8}}, {{2, 4}, {3, 4}}, {{5, 7}, {1, 1}}}) {
    std::vector<ShardedTensor> t{{"a.weight", a, {}, start, Tensor(extent, DType::kBF16)}};
    r.read("model", t);
    EXPECT_TRUE(bitwise_equal(t[0].local, pattern_box(1, a, start, extent, DType::kBF16)));
  }
  std::vector<ShardedTensor> t{{"b.weight", b, {}, {1, 2, 0}, Tensor({4, 2, 3})}};
  r.read("model", t);
  EXPECT_TRUE(bitwise_equal(t[0].local,
                            pattern_box(2, b, {1, 2, 0}, {4, 2, 3}, DType::kBF16).to(DType::kF32)));
}

TEST(Checkpoint, ReadErrorsNameTheTensor) {
  CkptTempDir tmp;
  Mesh mesh;
  CheckpointManager m(tmp.path(), mesh, {.async = false});
  m.save(1, sample_items(), {});
  CheckpointReader r(m.step_dir(1));
  std::vector<ShardedTensor> missing{whole("nope", Tensor({2}))};
  try {
    r.read("model", missing);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'nope'"), std::string::npos) << e.what();
  }
  std::vector<ShardedTensor> bad{whole("a.weight", Tensor({8, 6}))};
  try {
    r.read("model", bad);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("a.weight has shape [6, 8], expected [8, 6]"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(r.read("lora", missing), Error);
  EXPECT_THROW(m.save(1, sample_items(), {}), Error);  // step exists
}

TEST(Checkpoint, AsyncSaveKeepsTheValuesAtSaveTime) {
  CkptTempDir tmp;
  Mesh mesh;
  CheckpointManager m(tmp.path(), mesh, {.max_to_keep = 0, .async = true});
  const Shape shape{256, 1024};  // 1 MiB per f32 tensor
  std::vector<Tensor> live;
  CheckpointItems items;
  for (int i = 0; i < 4; ++i) {
    live.push_back(pattern_full(10 + i, shape, i % 2 ? DType::kBF16 : DType::kF32));
    items["model"].push_back(whole(fmt::format("w{}", i), live.back()));
  }
  for (int64_t step = 1; step <= 3; ++step) {
    m.save(step, items, {{"step", step}});
    // Overwrite the caller's tensors right away (the next training step).
    for (int i = 0; i < 4; ++i) {
      Tensor next = pattern_full(100 * step + i, shape, live[i].dtype());
      std::memcpy(live[i].bytes(), next.bytes(), next.nbytes());
    }
    m.poll();
  }
  m.wait();
  ASSERT_EQ(m.steps(), (std::vector<int64_t>{1, 2, 3}));
  for (int64_t step = 1; step <= 3; ++step) {
    CheckpointReader r(m.step_dir(step));
    EXPECT_EQ(r.trainer_state().at("step"), step);
    for (int i = 0; i < 4; ++i) {
      const uint64_t seed = step == 1 ? 10 + i : 100 * (step - 1) + i;
      std::vector<ShardedTensor> t{whole(fmt::format("w{}", i), Tensor(shape, live[i].dtype()))};
      r.read("model", t);
      EXPECT_TRUE(bitwise_equal(t[0].local, pattern_full(seed, shape, live[i].dtype())))
          << "step " << step << " w" << i;
    }
  }
}

TEST(Checkpoint, MaxToKeepDeletesOnlyOlderStepsAfterTheCommit) {
  CkptTempDir tmp;
  Mesh mesh;
  {
    CheckpointManager m(tmp.path(), mesh, {.max_to_keep = 2, .async = true});
    for (int64_t step : {10, 20, 30, 40}) {
      m.save(step, sample_items(), {{"step", step}});
      m.wait();
      const auto steps = m.steps();
      ASSERT_EQ(steps.back(), step);
      EXPECT_LE(steps.size(), 2u);
    }
    EXPECT_EQ(m.steps(), (std::vector<int64_t>{30, 40}));
    EXPECT_EQ(m.latest_step(), 40);
  }
  // Keep-all.
  CheckpointManager all(tmp.path(), mesh, {.max_to_keep = 0, .async = false});
  all.save(50, sample_items(), {});
  all.save(60, sample_items(), {});
  EXPECT_EQ(all.steps(), (std::vector<int64_t>{30, 40, 50, 60}));
  // Nothing else lies in the directory.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(tmp.path())) {
    if (e.path().filename() == ".lock") continue;  // the manager's lock file
    ++entries;
    EXPECT_TRUE(is_checkpoint_step(e.path())) << e.path();
  }
  EXPECT_EQ(entries, 4);
}

TEST(Checkpoint, ExtraFilesAndLargeStepNumbers) {
  CkptTempDir tmp;
  Mesh mesh;
  const fs::path extra = tmp.path() / "tokenizer.json";
  std::ofstream(extra) << "{\"model\": 1}";
  CheckpointManager m(tmp.path() / "ck", mesh, {.async = true});
  m.save(12345678, sample_items(), {{"args", {{"lr", 0.1}}}}, {extra});
  m.wait();
  EXPECT_EQ(m.step_dir(12345678).filename(), "12345678");
  EXPECT_EQ(m.latest_step(), 12345678);
  std::ifstream in(m.step_dir(12345678) / "tokenizer.json");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "{\"model\": 1}");
  EXPECT_DOUBLE_EQ(CheckpointReader(m.step_dir(12345678)).trainer_state()["args"]["lr"], 0.1);
  // A reserved name is refused before anything is written.
  const fs::path bad = tmp.path() / "index.json";
  std::ofstream(bad) << "{}";
  EXPECT_THROW(m.save(5, sample_items(), {}, {bad}), Error);
  EXPECT_EQ(m.steps(), std::vector<int64_t>{12345678});
}

TEST(Checkpoint, UncommittedDirectoriesAreNeverReadAndCleaned) {
  CkptTempDir tmp;
  Mesh mesh;
  {
    CheckpointManager m(tmp.path(), mesh, {.async = false});
    m.save(1, sample_items(), {});
  }
  fs::create_directories(tmp.path() / ".tmp-000002" / "model");
  fs::create_directories(tmp.path() / "000003" / "model");  // renamed but no index: not valid
  fs::copy(tmp.path() / "000001" / "model", tmp.path() / "000003" / "model",
           fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  EXPECT_FALSE(is_checkpoint_step(tmp.path() / ".tmp-000002"));
  EXPECT_FALSE(is_checkpoint_step(tmp.path() / "000003"));
  EXPECT_THROW(CheckpointReader(tmp.path() / "000003"), Error);
  CheckpointManager m(tmp.path(), mesh);
  EXPECT_EQ(m.steps(), std::vector<int64_t>{1});
  EXPECT_FALSE(fs::exists(tmp.path() / ".tmp-000002"));
  EXPECT_FALSE(fs::exists(tmp.path() / "000003"));
}

TEST(Checkpoint, SaveValidatesTheItems) {
  CkptTempDir tmp;
  Mesh mesh;
  CheckpointManager m(tmp.path(), mesh, {.async = false});
  CheckpointItems bad_name;
  bad_name["../x"].push_back(whole("w", Tensor({2})));
  EXPECT_THROW(m.save(1, bad_name, {}), Error);
  CheckpointItems dup;
  dup["model"].push_back(whole("w", Tensor({2})));
  dup["model"].push_back(whole("w", Tensor({2})));
  EXPECT_THROW(m.save(1, dup, {}), Error);
  CheckpointItems outside;
  outside["model"].push_back(ShardedTensor{"w", {4}, {}, {3}, Tensor({2})});
  EXPECT_THROW(m.save(1, outside, {}), Error);
  EXPECT_TRUE(m.steps().empty());
}

TEST(Checkpoint, LoadCheckpointDecoderEqualsLoadDecoder) {
  CkptTempDir tmp;
  Mesh mesh;
  const fs::path model_dir = fs::path(MAGIX_FIXTURES_DIR) / "models" / "llama_gqa";
  Decoder ref = load_decoder(model_dir.string(), mesh);
  CheckpointManager m(tmp.path(), mesh, {.async = true});
  m.save(3, {{"model", sharded_tensors(ref.params())}}, {{"step", 3}}, {model_dir / "config.json"});
  m.wait();
  Decoder got = load_checkpoint_decoder(m.step_dir(3), mesh);
  ASSERT_EQ(got.params().size(), ref.params().size());
  for (size_t i = 0; i < ref.params().size(); ++i) {
    EXPECT_TRUE(bitwise_equal(got.params().tensor(i), ref.params().tensor(i)))
        << ref.params().info(i).name;
  }
  DecoderOptions bf16;
  bf16.weight_dtype = DType::kBF16;
  Decoder half = load_checkpoint_decoder(m.step_dir(3), mesh, bf16);
  for (size_t i = 0; i < ref.params().size(); ++i) {
    EXPECT_TRUE(bitwise_equal(half.params().tensor(i), ref.params().tensor(i).to(DType::kBF16)))
        << ref.params().info(i).name;
  }
}

}  // namespace
}  // namespace magix
