// Damaged checkpoints are reported, never loaded: a truncated shard file, one flipped bit, a
// missing rank file, an edited index.json — each an error naming the file.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <limits>

#include "checkpoint_test_util.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
using test::CkptTempDir;
using test::pattern_full;

class CheckpointCorruption : public ::testing::Test {
 protected:
  void SetUp() override {
    CheckpointItems items;
    items["model"].push_back(ShardedTensor{"w", {64, 32}, {}, {0, 0}, pattern_full(1, {64, 32})});
    items["model"].push_back(
        ShardedTensor{"h", {16, 8}, {}, {0, 0}, pattern_full(2, {16, 8}, DType::kBF16)});
    CheckpointManager m(tmp_.path(), mesh_, {.async = false});
    m.save(5, items, {{"step", 5}});
    step_ = m.step_dir(5);
    shard_file_ = step_ / "model" / "rank-00000.bin";
    ASSERT_TRUE(fs::exists(shard_file_));
  }

  // Reads every tensor of item "model"; returns the error message ("" if none).
  std::string read_all() {
    try {
      CheckpointReader r(step_);
      std::vector<ShardedTensor> t{{"w", {64, 32}, {}, {0, 0}, Tensor({64, 32})},
                                   {"h", {16, 8}, {}, {0, 0}, Tensor({16, 8})}};
      r.read("model", t);
      return "";
    } catch (const Error& e) {
      return e.what();
    }
  }

  void edit_index(const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j;
    {
      std::ifstream in(step_ / "index.json");
      j = nlohmann::json::parse(in);
    }
    edit(j);
    std::ofstream(step_ / "index.json") << j.dump(1);
  }

  static bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
  }

  Mesh mesh_;
  CkptTempDir tmp_;
  fs::path step_, shard_file_;
};

TEST_F(CheckpointCorruption, IntactReadsFine) {
  EXPECT_EQ(read_all(), "");
}

TEST_F(CheckpointCorruption, TruncatedShardFile) {
  fs::resize_file(shard_file_, fs::file_size(shard_file_) - 3);
  const std::string err = read_all();
  EXPECT_TRUE(contains(err, shard_file_.string())) << err;
  EXPECT_TRUE(contains(err, "truncated")) << err;
}

TEST_F(CheckpointCorruption, OneFlippedBit) {
  for (uint64_t pos : {uint64_t{0}, uint64_t{5000}, fs::file_size(shard_file_) - 1}) {
    std::fstream f(shard_file_, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(pos));
    char c;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x10);
    f.seekp(static_cast<std::streamoff>(pos));
    f.write(&c, 1);
    f.close();
    const std::string err = read_all();
    EXPECT_TRUE(contains(err, shard_file_.string())) << err;
    EXPECT_TRUE(contains(err, "checksum")) << err;
    f.open(shard_file_, std::ios::in | std::ios::out | std::ios::binary);  // restore
    c = static_cast<char>(c ^ 0x10);
    f.seekp(static_cast<std::streamoff>(pos));
    f.write(&c, 1);
  }
  EXPECT_EQ(read_all(), "");
}

TEST_F(CheckpointCorruption, MissingRankFile) {
  fs::remove(shard_file_);
  const std::string err = read_all();
  EXPECT_TRUE(contains(err, shard_file_.string())) << err;
}

TEST_F(CheckpointCorruption, MissingIndexIsUncommitted) {
  fs::remove(step_ / "index.json");
  EXPECT_FALSE(is_checkpoint_step(step_));
  const std::string err = read_all();
  EXPECT_TRUE(contains(err, "not committed")) << err;
  CheckpointManager m(tmp_.path(), mesh_);  // cleans it
  EXPECT_FALSE(fs::exists(step_));
  EXPECT_TRUE(m.steps().empty());
}

TEST_F(CheckpointCorruption, EditedIndex) {
  const std::string index = (step_ / "index.json").string();
  struct Case {
    const char* what;
    std::function<void(nlohmann::json&)> edit;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"checksum",
       [](nlohmann::json& j) {
         j["items"]["model"]["w"]["shards"][0]["xxh3"] = "0123456789abcdef";
       },
       "checksum"},
      {"offset", [](nlohmann::json& j) { j["items"]["model"]["w"]["shards"][0]["offset"] = 4; },
       "checksum"},
      {"shape",
       [](nlohmann::json& j) {
         j["items"]["model"]["w"]["shape"] = {32, 64};
       },
       "outside the shape"},
      {"bigger shape",
       [](nlohmann::json& j) {
         j["items"]["model"]["w"]["shape"] = {65, 32};
       },
       "cover"},
      {"dtype", [](nlohmann::json& j) { j["items"]["model"]["h"]["dtype"] = "F32"; }, "bytes"},
      {"version", [](nlohmann::json& j) { j["version"] = 2; }, "version 2"},
      // A number where the format name belongs (found by fuzz_checkpoint_index).
      {"format type", [](nlohmann::json& j) { j["format"] = 1; }, "\"format\" is not"},
      {"path", [](nlohmann::json& j) { j["items"]["model"]["w"]["shards"][0]["file"] = "../x"; },
       "not a plain path"},
      {"no shards",
       [](nlohmann::json& j) { j["items"]["model"]["w"]["shards"] = nlohmann::json::array(); },
       "cover 0 of"},
      // Found by fuzz_checkpoint_index: start + extent overflowed int64 (undefined behaviour;
      // in practice it wrapped negative and passed the bounds check).
      {"box overflow",
       [](nlohmann::json& j) {
         const int64_t big = int64_t{1} << 62;
         j["items"]["model"]["w"]["shape"] = {big};
         auto& s = j["items"]["model"]["w"]["shards"];
         s = nlohmann::json::array({s[0]});
         s[0]["start"] = {big};
         s[0]["extent"] = {big};
       },
       "lies outside the shape"},
      // Elements x dtype size wrapped around uint64 to 0 bytes.
      {"bytes overflow",
       [](nlohmann::json& j) {
         const int64_t big = int64_t{1} << 62;
         j["items"]["model"]["w"]["shape"] = {big};
         auto& s = j["items"]["model"]["w"]["shards"];
         s = nlohmann::json::array({s[0]});
         s[0]["start"] = {0};
         s[0]["extent"] = {big};
         s[0]["nbytes"] = 0;
       },
       "records 0 bytes"},
  };
  const std::string original = [&] {
    std::ifstream in(index);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }();
  for (const Case& c : cases) {
    std::ofstream(index) << original;
    edit_index(c.edit);
    const std::string err = read_all();
    EXPECT_TRUE(contains(err, c.expect)) << c.what << ": " << err;
    if (std::string(c.what) != "checksum" && std::string(c.what) != "offset") {
      EXPECT_TRUE(contains(err, index)) << c.what << ": " << err;
    } else {
      EXPECT_TRUE(contains(err, shard_file_.string())) << c.what << ": " << err;
    }
  }
  std::ofstream(index) << "{\"format\": \"magix-checkpoint\", ";  // torn JSON
  const std::string err = read_all();
  EXPECT_TRUE(contains(err, index)) << err;
  std::ofstream(index) << original;
  EXPECT_EQ(read_all(), "");
}

// A NaN or infinity saved into a step (a diverged run written by other code) is refused when
// read, naming the file, the tensor and the element, in f32 and bf16 shards alike.
TEST(CheckpointNonFinite, NaNOrInfInAShardIsRefusedNamingTheElement) {
  CkptTempDir tmp;
  Mesh mesh;
  Tensor w = pattern_full(1, {64, 32});
  w.data<float>()[3 * 32 + 7] = std::numeric_limits<float>::quiet_NaN();
  Tensor h = pattern_full(2, {16, 8}, DType::kBF16);
  h.data<uint16_t>()[5 * 8 + 1] = 0xff80;  // -inf
  CheckpointItems items;
  items["model"].push_back(ShardedTensor{"w", {64, 32}, {}, {0, 0}, w});
  items["optimizer"].push_back(ShardedTensor{"h", {16, 8}, {}, {0, 0}, h});
  CheckpointManager m(tmp.path(), mesh, {.async = false});
  m.save(1, items, {{"step", 1}});
  const CheckpointReader r(m.step_dir(1));
  const auto error_of = [&](const std::string& item, ShardedTensor t) {
    std::vector<ShardedTensor> targets{std::move(t)};
    try {
      r.read(item, targets);
      return std::string();
    } catch (const Error& e) {
      return std::string(e.what());
    }
  };
  const std::string ew = error_of("model", {"w", {64, 32}, {}, {0, 0}, Tensor({64, 32})});
  EXPECT_NE(ew.find("tensor model/w has a non-finite value at [3, 7]"), std::string::npos) << ew;
  EXPECT_NE(ew.find("model/rank-00000.bin"), std::string::npos) << ew;
  // A box of another mesh that does not hold the bad element still reads the whole shard.
  const std::string eb = error_of("model", {"w", {64, 32}, {}, {32, 0}, Tensor({32, 32})});
  EXPECT_NE(eb.find("[3, 7]"), std::string::npos) << eb;
  const std::string eh = error_of("optimizer", {"h", {16, 8}, {}, {0, 0}, Tensor({16, 8})});
  EXPECT_NE(eh.find("tensor optimizer/h has a non-finite value at [5, 1]"), std::string::npos)
      << eh;
}

}  // namespace
}  // namespace magix
