#include <gtest/gtest.h>

#include <fstream>

#include "magix/error.hpp"
#include "magix/sharding.hpp"

namespace magix {
namespace {

const std::optional<std::string> kNone = std::nullopt;

TEST(PartitionRules, DefaultRulesFollowTheDesignTable) {
  PartitionRules r = default_partition_rules("llama");
  EXPECT_EQ(r.spec_for("model.embed_tokens.weight", 2), (PartitionSpec{"model", "data"}));
  EXPECT_EQ(r.spec_for("lm_head.weight", 2), (PartitionSpec{"model", "data"}));
  for (const char* p : {"q", "k", "v"}) {
    std::string base = fmt::format("model.layers.3.self_attn.{}_proj", p);
    EXPECT_EQ(r.spec_for(base + ".weight", 2), (PartitionSpec{"model", "data"})) << base;
    EXPECT_EQ(r.spec_for(base + ".bias", 1), (PartitionSpec{"model"})) << base;
  }
  EXPECT_EQ(r.spec_for("model.layers.0.mlp.gate_proj.weight", 2), (PartitionSpec{"model", "data"}));
  EXPECT_EQ(r.spec_for("model.layers.0.mlp.up_proj.weight", 2), (PartitionSpec{"model", "data"}));
  EXPECT_EQ(r.spec_for("model.layers.0.mlp.down_proj.weight", 2), (PartitionSpec{"data", "model"}));
  EXPECT_EQ(r.spec_for("model.layers.0.self_attn.o_proj.weight", 2),
            (PartitionSpec{"data", "model"}));
  EXPECT_TRUE(r.spec_for("model.layers.0.self_attn.o_proj.bias", 1).replicated());
  EXPECT_TRUE(r.spec_for("model.layers.0.input_layernorm.weight", 1).replicated());
  EXPECT_TRUE(r.spec_for("model.norm.weight", 1).replicated());
  EXPECT_TRUE(r.spec_for("model.embed_tokens.weight", 0).replicated());  // scalars replicated
  for (const char* f : {"mistral", "gemma", "qwen2"}) EXPECT_NO_THROW(default_partition_rules(f));
  EXPECT_THROW(default_partition_rules("gpt2"), Error);
}

TEST(PartitionRules, FirstMatchWinsAndNoMatchIsReplicated) {
  PartitionRules r({{"layers\\.0\\..*weight$", {kNone, "model"}}, {"weight$", {"model"}}});
  EXPECT_EQ(r.spec_for("layers.0.a.weight", 2), (PartitionSpec{kNone, "model"}));
  EXPECT_EQ(r.spec_for("layers.1.a.weight", 2), (PartitionSpec{"model"}));
  EXPECT_TRUE(r.spec_for("layers.1.a.bias", 1).replicated());
  EXPECT_EQ(*r.match("x.weight"), 1u);
}

TEST(PartitionRules, BadRulesAreErrors) {
  EXPECT_THROW(PartitionRules(RuleList{{"(", {"model"}}}), Error);
  EXPECT_THROW(PartitionRules(RuleList{{"a", {"pipeline"}}}), Error);
  EXPECT_THROW(PartitionRules(RuleList{{"a", {"model", "model"}}}), Error);
  PartitionRules r({{"bias", {"model", "data"}}});
  try {
    r.spec_for("q_proj.bias", 1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q_proj.bias"), std::string::npos) << e.what();
  }
}

TEST(PartitionRules, LoadFromFile) {
  auto path = std::filesystem::temp_directory_path() / "magix_rules_test.json";
  { std::ofstream(path) << R"([["embed", ["model", null]], ["norm", []]])"; }
  PartitionRules r = load_partition_rules(path);
  EXPECT_EQ(r.spec_for("model.embed_tokens.weight", 2), (PartitionSpec{"model", kNone}));
  { std::ofstream(path) << R"([["embed", ["model", 3]]])"; }
  EXPECT_THROW(load_partition_rules(path), Error);
  { std::ofstream(path) << R"({"embed": 1})"; }
  EXPECT_THROW(load_partition_rules(path), Error);
  { std::ofstream(path) << R"([["embed", ["tensor"]]])"; }
  try {
    load_partition_rules(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos);
  }
  std::filesystem::remove(path);
  EXPECT_THROW(load_partition_rules(path), Error);
}

TEST(ShardBox, BoxesTileTheTensor) {
  // (model, data) on a 2x4 mesh: dim 0 split in 4 by model rank, dim 1 in 2 by data rank.
  Shape global = {16, 6};
  PartitionSpec spec{"model", "data"};
  std::vector<int> covered(16 * 6, 0);
  for (int d = 0; d < 2; ++d) {
    for (int m = 0; m < 4; ++m) {
      ShardBox b = shard_box("w", global, spec, 2, 4, d, m);
      EXPECT_EQ(b.extent, (Shape{4, 3}));
      EXPECT_EQ(b.start, (Shape{4 * m, 3 * d}));
      for (int64_t i = 0; i < b.extent[0]; ++i)
        for (int64_t j = 0; j < b.extent[1]; ++j) covered[(b.start[0] + i) * 6 + b.start[1] + j]++;
    }
  }
  for (int c : covered) EXPECT_EQ(c, 1);
  EXPECT_EQ(shard_box("n", {8}, {}, 2, 4, 1, 3), (ShardBox{{0}, {8}}));
}

TEST(ShardBox, IndivisibleDimNamesParameterDimAndAxis) {
  try {
    shard_box("model.layers.0.mlp.up_proj.weight", {10, 8}, {"model", "data"}, 2, 4, 0, 0);
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("model.layers.0.mlp.up_proj.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("dim 0"), std::string::npos) << m;
    EXPECT_NE(m.find("'model'"), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace magix
