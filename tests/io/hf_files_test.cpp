// HF model folders: sharded writing and reading, index path checks, and the local hub cache.
#include "magix/hf_files.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "io_test_util.hpp"
#include "magix/error.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// Runs f and returns the magix::Error message ("" if none was thrown).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR_HAS(stmt, text)                                                             \
  do {                                                                                           \
    std::string msg_ = error_of([&] { stmt; });                                                  \
    EXPECT_FALSE(msg_.empty()) << #stmt " did not throw";                                        \
    EXPECT_NE(msg_.find(text), std::string::npos) << "expected '" << (text) << "' in: " << msg_; \
  } while (0)

struct Model {
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::vector<NamedTensor> named() const {
    std::vector<NamedTensor> out;
    for (const auto& [n, t] : tensors) out.push_back({n, &t});
    return out;
  }
};

Model small_model() {
  Model m;
  m.tensors.emplace_back("model.embed_tokens.weight", test::random_tensor({10, 8}, DType::kF32, 1));
  for (int l = 0; l < 3; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    m.tensors.emplace_back(p + "self_attn.q_proj.weight",
                           test::random_tensor({8, 8}, DType::kF32, 10 + l));
    m.tensors.emplace_back(p + "mlp.up_proj.weight",
                           test::random_tensor({16, 8}, DType::kBF16, 20 + l));
    m.tensors.emplace_back(p + "input_layernorm.weight",
                           test::random_tensor({8}, DType::kF32, 30 + l));
  }
  m.tensors.emplace_back("model.norm.weight", test::random_tensor({8}, DType::kF32, 40));
  return m;
}

nlohmann::json read_json(const fs::path& p) {
  return nlohmann::json::parse(test::read_bytes(p));
}

void expect_reads_back(const HfWeights& w, const Model& m, DType stored) {
  ASSERT_EQ(w.names().size(), m.tensors.size());
  for (const auto& [n, t] : m.tensors) {
    ASSERT_TRUE(w.contains(n)) << n;
    EXPECT_EQ(w.entry(n).dtype, stored) << n;
    Tensor want = t.to(stored).to(DType::kF32);
    Tensor got = w.read_f32(n);
    ASSERT_EQ(got.shape(), t.shape()) << n;
    for (int64_t i = 0; i < t.numel(); ++i) {
      ASSERT_EQ(got.span<float>()[i], want.span<float>()[i]) << n << " at " << i;
    }
  }
}

TEST(HfWeights, WriterShardsAndIndexReadBack) {
  TempDir dir;
  Model m = small_model();
  // Each [8, 8] f32 is 256 bytes, [16, 8] 512, [10, 8] 320: a 600-byte cap gives several shards.
  write_hf_weights(dir.path(), m.named(), DType::kF32, 600);
  auto index = read_json(dir / "model.safetensors.index.json");
  uint64_t total = 0;
  for (const auto& [n, t] : m.tensors) total += static_cast<uint64_t>(t.numel()) * 4;
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  ASSERT_EQ(index["weight_map"].size(), m.tensors.size());
  std::set<std::string> files;
  for (const auto& [n, f] : index["weight_map"].items()) files.insert(f.get<std::string>());
  ASSERT_GE(files.size(), 3u);
  const size_t n = files.size();
  for (size_t s = 1; s <= n; ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s, n);
    ASSERT_TRUE(files.count(name)) << name;
    SafetensorsReader r(dir / name);
    EXPECT_EQ(r.metadata().at("format"), "pt");
    uint64_t bytes = 0;
    for (const auto& e : r.entries()) bytes += e.nbytes;
    EXPECT_TRUE(bytes <= 600 || r.entries().size() == 1) << name << " holds " << bytes;
  }
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  HfWeights w(dir.path());
  expect_reads_back(w, m, DType::kF32);
  std::vector<std::string> names = w.names();
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  // Boxes through the index.
  Tensor box = w.read_box_f32("model.layers.1.mlp.up_proj.weight", {4, 2}, {8, 3});
  Tensor full = w.read_f32("model.layers.1.mlp.up_proj.weight");
  for (int i = 0; i < 8; ++i) {
    for (int j = 0; j < 3; ++j) {
      EXPECT_EQ(box.span<float>()[i * 3 + j], full.span<float>()[(4 + i) * 8 + 2 + j]);
    }
  }
}

TEST(HfWeights, SingleFileWhenItFitsAndStaleLayoutsRemoved) {
  TempDir dir;
  Model m = small_model();
  write_hf_weights(dir.path(), m.named(), DType::kBF16, 600);  // sharded first
  ASSERT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  write_hf_weights(dir.path(), m.named(), DType::kBF16);  // then one file over it
  std::vector<std::string> left;
  for (const auto& de : fs::directory_iterator(dir.path())) {
    left.push_back(de.path().filename().string());
  }
  EXPECT_EQ(left, std::vector<std::string>{"model.safetensors"});
  HfWeights w(dir.path());
  expect_reads_back(w, m, DType::kBF16);
  EXPECT_EQ(SafetensorsReader(dir / "model.safetensors").metadata().at("format"), "pt");
  // And back to shards: the single file must go, or it would shadow the index.
  write_hf_weights(dir.path(), m.named(), DType::kF32, 600);
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  expect_reads_back(HfWeights(dir.path()), m, DType::kF32);
}

TEST(HfWeights, TensorLargerThanTheCapGetsItsOwnShard) {
  TempDir dir;
  Tensor big = test::random_tensor({100}, DType::kF32, 1);
  Tensor small = test::random_tensor({2}, DType::kF32, 2);
  std::vector<NamedTensor> named = {{"small", &small}, {"big", &big}, {"small2", &small}};
  write_hf_weights(dir.path(), named, DType::kF32, 64);
  auto index = read_json(dir / "model.safetensors.index.json");
  EXPECT_EQ(index["weight_map"]["small"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["big"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["small2"], "model-00003-of-00003.safetensors");
}

TEST(HfWeights, WriterRejectsBadInput) {
  TempDir dir;
  Tensor a = test::random_tensor({2}, DType::kF32, 1);
  Tensor ids = test::random_tensor({2}, DType::kI64, 1);
  std::vector<NamedTensor> dup = {{"a", &a}, {"a", &a}};
  EXPECT_ERROR_HAS(write_hf_weights(dir.path(), dup, DType::kF32), "given twice");
  std::vector<NamedTensor> ints = {{"ids", &ids}};
  EXPECT_ERROR_HAS(write_hf_weights(dir.path(), ints, DType::kF32), "'ids'");
  std::vector<NamedTensor> good = {{"a", &a}};
  EXPECT_THROW(write_hf_weights(dir.path(), good, DType::kI32), Error);
}

// A folder with two shards written by hand, then broken in one way per test.
class HfIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = test::random_tensor({3}, DType::kF32, 1);
    b_ = test::random_tensor({2, 2}, DType::kBF16, 2);
    std::vector<NamedTensor> s1 = {{"a", &a_}}, s2 = {{"b", &b_}};
    fs::create_directories(model_ / "sub");
    write_safetensors(model_ / "one.safetensors", s1);
    write_safetensors(model_ / "sub" / "two.safetensors", s2);
  }
  void write_index(const nlohmann::json& weight_map) {
    nlohmann::json j = {{"metadata", {{"total_size", 20}}}, {"weight_map", weight_map}};
    test::write_bytes(model_ / "model.safetensors.index.json", j.dump());
  }
  TempDir tmp_;
  fs::path model_ = tmp_ / "model";
  Tensor a_, b_;
};

TEST_F(HfIndexTest, ShardsInSubfoldersAreRead) {
  write_index({{"a", "one.safetensors"}, {"b", "sub/two.safetensors"}});
  HfWeights w(model_);
  EXPECT_EQ(w.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(test::same_bytes(w.read("b"), b_));
  EXPECT_ERROR_HAS(w.entry("c"), "'c'");
  EXPECT_ERROR_HAS(w.read_f32("c"), model_.string());
}

TEST_F(HfIndexTest, PathEscapesAreRejected) {
  test::write_bytes(tmp_ / "outside.safetensors", test::read_bytes(model_ / "one.safetensors"));
  write_index({{"a", "../outside.safetensors"}});
  EXPECT_ERROR_HAS(HfWeights{model_}, "'..'");
  write_index({{"a", "sub/../../outside.safetensors"}});
  EXPECT_ERROR_HAS(HfWeights{model_}, "'..'");
  write_index({{"a", (tmp_ / "outside.safetensors").string()}});
  EXPECT_ERROR_HAS(HfWeights{model_}, "absolute");
  write_index({{"a", ""}});
  EXPECT_ERROR_HAS(HfWeights{model_}, "empty");
  fs::create_symlink(tmp_ / "outside.safetensors", model_ / "link.safetensors");
  write_index({{"a", "link.safetensors"}});
  EXPECT_ERROR_HAS(HfWeights{model_}, "outside the model folder");
  fs::create_directory_symlink(tmp_.path(), model_ / "up");
  write_index({{"a", "up/outside.safetensors"}});
  EXPECT_ERROR_HAS(HfWeights{model_}, "outside the model folder");
  // A symlink that stays inside is fine.
  fs::create_symlink(model_ / "one.safetensors", model_ / "inside.safetensors");
  write_index({{"a", "inside.safetensors"}});
  EXPECT_NO_THROW(HfWeights{model_});
}

TEST_F(HfIndexTest, MissingShardAndMissingTensorAreErrors) {
  write_index({{"a", "one.safetensors"}, {"b", "three.safetensors"}});
  EXPECT_ERROR_HAS(HfWeights{model_}, "three.safetensors");
  EXPECT_ERROR_HAS(HfWeights{model_}, "missing");
  write_index({{"a", "one.safetensors"}, {"b", "one.safetensors"}});
  std::string msg = error_of([&] { HfWeights w(model_); });
  EXPECT_NE(msg.find("'b'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not contain"), std::string::npos) << msg;
}

TEST_F(HfIndexTest, MalformedIndexAndShardAreErrors) {
  test::write_bytes(model_ / "model.safetensors.index.json", "{\"weight_map\": ");
  EXPECT_ERROR_HAS(HfWeights{model_}, "model.safetensors.index.json");
  test::write_bytes(model_ / "model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_ERROR_HAS(HfWeights{model_}, "weight_map");
  test::write_bytes(model_ / "model.safetensors.index.json",
                    R"({"weight_map": {"a": "one.safetensors", "a": "one.safetensors"}})");
  EXPECT_ERROR_HAS(HfWeights{model_}, "duplicate key");
  write_index({{"a", 5}});
  EXPECT_ERROR_HAS(HfWeights{model_}, "file name");
  // A corrupt shard: the error names the shard file.
  test::write_bytes(model_ / "sub" / "two.safetensors", "garbage!garbage!");
  write_index({{"a", "one.safetensors"}, {"b", "sub/two.safetensors"}});
  EXPECT_ERROR_HAS(HfWeights{model_}, "two.safetensors");
}

TEST_F(HfIndexTest, FolderWithoutWeightsIsAnError) {
  EXPECT_ERROR_HAS(HfWeights{model_}, "model.safetensors");
  test::write_bytes(model_ / "pytorch_model.bin", "x");
  EXPECT_ERROR_HAS(HfWeights{model_}, "pytorch_model.bin is not supported");
  EXPECT_ERROR_HAS(HfWeights{tmp_ / "nope"}, "does not exist");
}

// A fake HF cache: $HF_HOME/hub/models--org--name/{refs/main, snapshots/<rev>/}.
class HfCacheTest : public ::testing::Test {
 protected:
  fs::path repo(const std::string& folder) { return tmp_ / "hub" / folder; }
  TempDir tmp_;
  test::EnvGuard home_{"HF_HOME", tmp_.path().string()};
  test::EnvGuard hub_cache_{"HF_HUB_CACHE", std::nullopt};
};

TEST_F(HfCacheTest, RefsMainPicksTheSnapshot) {
  fs::create_directories(repo("models--org--name") / "snapshots" / "aaa111");
  fs::create_directories(repo("models--org--name") / "snapshots" / "bbb222");
  test::write_bytes(repo("models--org--name") / "refs" / "main", "bbb222\n");
  EXPECT_EQ(resolve_model_dir("org/name"), repo("models--org--name") / "snapshots" / "bbb222");
}

TEST_F(HfCacheTest, SingleSnapshotWithoutRefs) {
  fs::create_directories(repo("models--gpt2") / "snapshots" / "ccc333");
  EXPECT_EQ(resolve_model_dir("gpt2"), repo("models--gpt2") / "snapshots" / "ccc333");
}

TEST_F(HfCacheTest, SeveralSnapshotsWithoutRefsListsThem) {
  fs::create_directories(repo("models--org--name") / "snapshots" / "aaa111");
  fs::create_directories(repo("models--org--name") / "snapshots" / "bbb222");
  std::string msg = error_of([&] { resolve_model_dir("org/name"); });
  EXPECT_NE(msg.find("aaa111"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bbb222"), std::string::npos) << msg;
}

TEST_F(HfCacheTest, RefsMainToAMissingSnapshot) {
  fs::create_directories(repo("models--org--name") / "snapshots" / "aaa111");
  test::write_bytes(repo("models--org--name") / "refs" / "main", "fff999");
  EXPECT_ERROR_HAS(resolve_model_dir("org/name"), "fff999");
  test::write_bytes(repo("models--org--name") / "refs" / "main", "../../x");
  EXPECT_ERROR_HAS(resolve_model_dir("org/name"), "invalid revision");
}

TEST_F(HfCacheTest, NotFoundSaysWhereItLooked) {
  std::string msg = error_of([&] { resolve_model_dir("org/absent"); });
  EXPECT_NE(msg.find((tmp_ / "hub" / "models--org--absent").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("never downloads"), std::string::npos) << msg;
  EXPECT_ERROR_HAS(resolve_model_dir("not a/valid/name"), "not found");
}

TEST_F(HfCacheTest, HubCacheOverridesHome) {
  TempDir other;
  test::EnvGuard hub{"HF_HUB_CACHE", other.path().string()};
  fs::create_directories(other / "models--org--name" / "snapshots" / "r1");
  EXPECT_EQ(resolve_model_dir("org/name"), other / "models--org--name" / "snapshots" / "r1");
}

// Moves every file of `dir` into `repo`/blobs/<name-hash> and leaves in `repo`/snapshots/`rev`/
// a relative symlink to it, as huggingface_hub lays out its cache (blob names are content
// hashes there; any unique name does here).
fs::path make_cache_snapshot(const fs::path& dir, const fs::path& repo, const std::string& rev) {
  const fs::path snap = repo / "snapshots" / rev;
  fs::create_directories(snap);
  fs::create_directories(repo / "blobs");
  for (const auto& de : fs::directory_iterator(dir)) {
    const std::string name = de.path().filename().string();
    const std::string blob = rev + "-" + std::to_string(std::hash<std::string>{}(name));
    fs::rename(de.path(), repo / "blobs" / blob);
    fs::create_symlink(fs::path("..") / ".." / "blobs" / blob, snap / name);
  }
  return snap;
}

TEST_F(HfCacheTest, ShardedSnapshotWithBlobSymlinksLoads) {
  Model m = small_model();
  write_hf_weights(tmp_ / "plain", m.named(), DType::kBF16, 600);
  const fs::path repo = this->repo("models--org--sharded");
  const fs::path snap = make_cache_snapshot(tmp_ / "plain", repo, "abc123");
  test::write_bytes(repo / "refs" / "main", "abc123");
  ASSERT_TRUE(fs::is_symlink(snap / "model.safetensors.index.json"));
  EXPECT_EQ(resolve_model_dir("org/sharded"), snap);
  HfWeights w(resolve_model_dir("org/sharded"));
  expect_reads_back(w, m, DType::kBF16);
  // The snapshot folder given as a path works the same.
  HfWeights by_path(snap);
  EXPECT_EQ(by_path.names().size(), m.tensors.size());
}

TEST_F(HfCacheTest, SnapshotLinksOutsideTheRepositoryAreRefused) {
  Model m = small_model();
  write_hf_weights(tmp_ / "plain", m.named(), DType::kF32, 600);
  const fs::path repo = this->repo("models--org--evil");
  const fs::path snap = make_cache_snapshot(tmp_ / "plain", repo, "r1");
  // Re-point one shard at a blob of another repository of the same cache.
  const fs::path other = this->repo("models--org--other") / "blobs";
  fs::create_directories(other);
  const std::string first =
      read_json(snap / "model.safetensors.index.json")["weight_map"].begin()->get<std::string>();
  const fs::path shard = snap / first;
  ASSERT_TRUE(fs::is_symlink(shard)) << shard;
  fs::copy_file(fs::canonical(shard), other / "x");
  fs::remove(shard);
  fs::create_symlink(fs::path("..") / ".." / ".." / "models--org--other" / "blobs" / "x", shard);
  EXPECT_ERROR_HAS(HfWeights{snap}, "outside the hub cache repository");
  // A plain folder's shard linking out of the folder stays refused too.
  write_hf_weights(tmp_ / "plain2", m.named(), DType::kF32, 600);
  fs::rename(tmp_ / "plain2" / first, tmp_ / "outside");
  fs::create_symlink(tmp_ / "outside", tmp_ / "plain2" / first);
  EXPECT_ERROR_HAS(HfWeights{tmp_ / "plain2"}, "outside the model folder");
}

TEST_F(HfCacheTest, RevisionPicksABranchOrACommit) {
  const fs::path repo = this->repo("models--org--name");
  fs::create_directories(repo / "snapshots" / "aaa111");
  fs::create_directories(repo / "snapshots" / "bbb222");
  fs::create_directories(repo / "snapshots" / "ccc333");
  test::write_bytes(repo / "refs" / "main", "aaa111");
  test::write_bytes(repo / "refs" / "v1.0", "bbb222\n");
  // huggingface_hub keeps the ref of revision "refs/pr/7" in refs/refs/pr/7.
  fs::create_directories(repo / "refs" / "refs" / "pr");
  test::write_bytes(repo / "refs" / "refs" / "pr" / "7", "ccc333");
  struct Reset {
    ~Reset() { set_hub_revision(""); }
  } reset;
  EXPECT_EQ(resolve_model_dir("org/name"), repo / "snapshots" / "aaa111");
  set_hub_revision("v1.0");
  EXPECT_EQ(resolve_model_dir("org/name"), repo / "snapshots" / "bbb222");
  set_hub_revision("refs/pr/7");
  EXPECT_EQ(resolve_model_dir("org/name"), repo / "snapshots" / "ccc333");
  set_hub_revision("ccc333");  // a commit hash
  EXPECT_EQ(resolve_model_dir("org/name"), repo / "snapshots" / "ccc333");
  set_hub_revision("main");
  EXPECT_EQ(resolve_model_dir("org/name"), repo / "snapshots" / "aaa111");
  set_hub_revision("v2.0");
  const std::string msg = error_of([&] { resolve_model_dir("org/name"); });
  for (const char* want : {"v2.0", "v1.0", "refs/pr/7", "bbb222", "never downloads"}) {
    EXPECT_NE(msg.find(want), std::string::npos) << want << " not in: " << msg;
  }
  // A folder path is used as it is, whatever the revision.
  EXPECT_EQ(resolve_model_dir((repo / "snapshots" / "aaa111").string()),
            repo / "snapshots" / "aaa111");
  EXPECT_ERROR_HAS(set_hub_revision("../x"), "not a valid revision");
  EXPECT_ERROR_HAS(set_hub_revision("/abs"), "not a valid revision");
  set_hub_revision("main");
  test::write_bytes(repo / "refs" / "main", "../../x");
  EXPECT_ERROR_HAS(resolve_model_dir("org/name"), "invalid revision");
}

TEST_F(HfCacheTest, ExistingFolderIsUsedAsIs) {
  fs::create_directories(tmp_ / "org" / "name");
  fs::path cwd = fs::current_path();
  fs::current_path(tmp_.path());
  // A folder of the same spelling as a hub name wins over the cache.
  EXPECT_EQ(resolve_model_dir("org/name"), fs::path("org/name"));
  fs::current_path(cwd);
  EXPECT_EQ(resolve_model_dir(tmp_.path().string()), tmp_.path());
  test::write_bytes(tmp_ / "file", "x");
  EXPECT_ERROR_HAS(resolve_model_dir((tmp_ / "file").string()), "not a folder");
}

}  // namespace
}  // namespace magix
