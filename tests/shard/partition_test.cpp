#include <gtest/gtest.h>

#include <functional>
#include <map>

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

// A fused tensor qkv (q 8 rows, k 4, v 4; 3 columns) split part by part: each model rank's shard
// is its q rows, then its k rows, then its v rows, exactly the rows of slicing the full tensor.
TEST(ShardPieces, EachModelRankHoldsItsRowsOfEveryPart) {
  const std::vector<SpecPart> parts = {{"q", "num_attention_heads*head_dim"},
                                       {"k", "num_key_value_heads*head_dim"},
                                       {"v", "num_key_value_heads * head_dim"}};
  const PartitionSpec spec({"model", "data"}, parts);
  const std::map<std::string, int64_t, std::less<>> fields = {
      {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 2}};
  const Shape global = {16, 6};
  const std::vector<int64_t> rows = resolve_parts("qkv_proj.weight", global, spec, fields);
  EXPECT_EQ(rows, (std::vector<int64_t>{8, 4, 4}));
  std::vector<float> full(16 * 6);
  for (size_t i = 0; i < full.size(); ++i) full[i] = static_cast<float>(i);
  for (int M : {1, 2, 4}) {
    for (int D : {1, 2}) {
      std::vector<int> covered(full.size(), 0);
      for (int d = 0; d < D; ++d) {
        for (int m = 0; m < M; ++m) {
          const auto boxes = shard_pieces("qkv_proj.weight", global, spec, rows, D, M, d, m);
          // The rank's local tensor: its boxes stacked along dim 0.
          std::vector<float> local;
          for (const ShardBox& b : boxes) {
            EXPECT_EQ(b.extent[1], 6 / D);
            EXPECT_EQ(b.start[1], d * (6 / D));
            for (int64_t i = 0; i < b.extent[0]; ++i) {
              for (int64_t j = 0; j < b.extent[1]; ++j) {
                const int64_t e = (b.start[0] + i) * 6 + b.start[1] + j;
                local.push_back(full[e]);
                covered[e]++;
              }
            }
          }
          // Expected: slices of the full tensor's q, k and v row blocks, in that order.
          std::vector<float> want;
          for (auto [first, n] : {std::pair{0, 8}, {8, 4}, {12, 4}}) {
            const int per = n / M;
            for (int i = first + m * per; i < first + (m + 1) * per; ++i) {
              for (int j = d * (6 / D); j < (d + 1) * (6 / D); ++j) want.push_back(full[i * 6 + j]);
            }
          }
          EXPECT_EQ(local, want) << "mesh " << D << "x" << M << " rank " << d << "," << m;
          // One merged box when dim 0 is not split; one per part otherwise.
          EXPECT_EQ(boxes.size(), M == 1 ? 1u : 3u);
        }
      }
      for (int c : covered) EXPECT_EQ(c, 1);
    }
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ShardPieces, BadPartSpecsAreClearErrors) {
  const std::map<std::string, int64_t, std::less<>> fields = {
      {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 2}};
  // Sizes that do not sum to the rows.
  PartitionSpec spec({"model", "data"}, {{"q", "8"}, {"k", "4"}, {"v", "2"}});
  std::string m = error_of([&] { resolve_parts("w.qkv", {16, 6}, spec, fields); });
  EXPECT_NE(m.find("w.qkv"), std::string::npos) << m;
  EXPECT_NE(m.find("sum to 14 rows"), std::string::npos) << m;
  // A part that does not divide by the axis.
  spec = PartitionSpec({"model", "data"}, {{"q", "10"}, {"k", "3"}, {"v", "3"}});
  const auto rows = resolve_parts("w.qkv", {16, 6}, spec, fields);
  m = error_of([&] { shard_pieces("w.qkv", {16, 6}, spec, rows, 1, 2, 0, 0); });
  EXPECT_NE(m.find("part 'k' (3 rows) does not divide by the 'model' axis (size 2)"),
            std::string::npos)
      << m;
  // Unknown field, bad syntax, one part, duplicate names, non-positive size.
  m = error_of([] { PartitionRules({{"qkv", PartitionSpec({"model"}, {{"q", "heads*2"}, {"k", "2"}})}}); });
  EXPECT_NE(m.find("'heads'"), std::string::npos) << m;
  EXPECT_NE(m.find("num_key_value_heads"), std::string::npos) << m;
  m = error_of([] { PartitionRules({{"qkv", PartitionSpec({"model"}, {{"q", "2**2"}, {"k", "2"}})}}); });
  EXPECT_NE(m.find("part 'q'"), std::string::npos) << m;
  m = error_of([] { PartitionRules({{"qkv", PartitionSpec({"model"}, {{"q", "2"}})}}); });
  EXPECT_NE(m.find("at least two parts"), std::string::npos) << m;
  m = error_of([] { PartitionRules({{"qkv", PartitionSpec({"model"}, {{"q", "2"}, {"q", "2"}})}}); });
  EXPECT_NE(m.find("part 'q' is named twice"), std::string::npos) << m;
  m = error_of([&] {
    resolve_parts("w", {4, 2}, PartitionSpec({"model"}, {{"a", "0"}, {"b", "4"}}), fields);
  });
  EXPECT_NE(m.find("part 'a' has 0 rows"), std::string::npos) << m;
}

TEST(PartitionRules, PartsFromFile) {
  auto path = std::filesystem::temp_directory_path() / "magix_rules_parts_test.json";
  {
    std::ofstream(path) << R"([["qkv_proj\\.weight$", ["model", "data"],
        [["q", "num_attention_heads*head_dim"], ["k", 4], ["v", "num_key_value_heads*head_dim"]]],
        ["norm", []]])";
  }
  PartitionRules r = load_partition_rules(path);
  const PartitionSpec spec = r.spec_for("model.layers.0.self_attn.qkv_proj.weight", 2);
  ASSERT_EQ(spec.parts.size(), 3u);
  EXPECT_EQ(spec.parts[1], (SpecPart{"k", "4"}));
  EXPECT_EQ(spec.str(),
            "(model, data) parts [q: num_attention_heads*head_dim, k: 4, v: "
            "num_key_value_heads*head_dim]");
  for (const char* bad : {R"([["qkv", ["model"], [["q", "x*2"], ["k", 2]]]])",
                          R"([["qkv", ["model"], {"q": 2}]])",
                          R"([["qkv", ["model"], [["q", -2], ["k", 2]]]])",
                          R"([["qkv", ["model"], [["q", 2]]]])"}) {
    { std::ofstream(path) << bad; }
    const std::string m = error_of([&] { load_partition_rules(path); });
    EXPECT_NE(m.find(path.string()), std::string::npos) << bad << ": " << m;
    EXPECT_TRUE(m.find("entry 0") != std::string::npos || m.find("'qkv'") != std::string::npos)
        << bad << ": " << m;
  }
  std::filesystem::remove(path);
}

TEST(PartitionRules, DefaultPhi3RulesSplitFusedWeightsByParts) {
  PartitionRules r = default_partition_rules("phi3");
  const PartitionSpec qkv = r.spec_for("model.layers.0.self_attn.qkv_proj.weight", 2);
  EXPECT_EQ(qkv.dims, (PartitionSpec{"model", "data"}.dims));
  ASSERT_EQ(qkv.parts.size(), 3u);
  EXPECT_EQ(qkv.parts[0].name, "q");
  const PartitionSpec gu = r.spec_for("model.layers.0.mlp.gate_up_proj.weight", 2);
  ASSERT_EQ(gu.parts.size(), 2u);
  EXPECT_EQ(gu.parts[1], (SpecPart{"up", "intermediate_size"}));
  EXPECT_EQ(r.spec_for("model.layers.0.mlp.down_proj.weight", 2), (PartitionSpec{"data", "model"}));
}

}  // namespace
}  // namespace magix
