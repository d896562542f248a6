// Loading weights: every expected tensor present with its shape; the error lists the rest.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "magix/error.hpp"
#include "magix/hf_files.hpp"
#include "magix/model.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           fmt::format("magix_model_test_{}", ::testing::UnitTest::GetInstance()->random_seed() +
                                                  reinterpret_cast<uintptr_t>(this) % 100000);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

const char* kConfig = R"({"model_type": "llama", "vocab_size": 16, "hidden_size": 8,
  "intermediate_size": 12, "num_hidden_layers": 1, "num_attention_heads": 2,
  "num_key_value_heads": 1, "tie_word_embeddings": false})";

// Writes config + the given tensors; returns the load error ("" if it loads).
std::string load_error(const fs::path& dir, const std::vector<std::pair<std::string, Tensor>>& ts) {
  std::ofstream(dir / "config.json") << kConfig;
  std::vector<NamedTensor> named;
  for (const auto& [name, t] : ts) named.push_back({name, &t});
  write_safetensors(dir / "model.safetensors", named);
  Mesh mesh;
  try {
    load_decoder(dir.string(), mesh);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::vector<std::pair<std::string, Tensor>> complete() {
  ModelConfig c = parse_model_config(nlohmann::json::parse(kConfig), "x");
  std::vector<std::pair<std::string, Tensor>> out;
  for (const ParamInfo& p : expected_parameters(c))
    out.emplace_back(p.name, Tensor(p.global_shape));
  return out;
}

TEST(ModelWeights, CompleteFolderLoads) {
  TempDir dir;
  EXPECT_EQ(load_error(dir.path, complete()), "");
}

TEST(ModelWeights, MissingUnexpectedAndMisshapedAreListed) {
  TempDir dir;
  auto ts = complete();
  ts.erase(ts.begin() + 3);  // model.layers.0.self_attn.k_proj.weight
  ts.emplace_back("model.layers.0.self_attn.extra.weight", Tensor({2}));
  for (auto& [name, t] : ts) {
    if (name == "model.norm.weight") t = Tensor({9});
  }
  const std::string err = load_error(dir.path, ts);
  EXPECT_NE(err.find("missing tensors: model.layers.0.self_attn.k_proj.weight"), std::string::npos)
      << err;
  EXPECT_NE(err.find("unexpected tensors: model.layers.0.self_attn.extra.weight"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("model.norm.weight (file [9], expected [8])"), std::string::npos) << err;
}

TEST(ModelWeights, Bf16WeightsConvertToF32) {
  TempDir dir;
  auto ts = complete();
  for (auto& [name, t] : ts) {
    for (float& v : t.span<float>()) v = 1.5f;
    t = t.to(DType::kBF16);
  }
  ASSERT_EQ(load_error(dir.path, ts), "");
  Mesh mesh;
  Decoder d = load_decoder(dir.path.string(), mesh);
  EXPECT_EQ(d.params().at("model.norm.weight").data<float>()[3], 1.5f);
}

}  // namespace
}  // namespace magix
