// magix export's library part: a checkpoint step -> an HF folder whose weights load_decoder reads
// back bitwise (f32) or rounded to bf16 exactly as Tensor::to does; config and tokenizer files
// copied; a non-empty output refused; damaged extra files reported.
#include <gtest/gtest.h>

#include <fstream>

#include "checkpoint_test_util.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"
#include "magix/hf_files.hpp"
#include "magix/safetensors.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
using test::bitwise_equal;
using test::CkptTempDir;

const fs::path kModels = fs::path(MAGIX_FIXTURES_DIR) / "models";
const fs::path kTokenizer = fs::path(MAGIX_FIXTURES_DIR) / "tokenizers" / "trained_bytelevel";

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

// Saves fixture `name` (HF folder) as step 1 of `dir` with its config and tokenizer files.
fs::path save_fixture(const fs::path& dir, const std::string& name, const Mesh& mesh) {
  Decoder model = load_decoder((kModels / name).string(), mesh);
  CheckpointManager m(dir, mesh, {.async = true});
  m.save(1, {{"model", sharded_tensors(model.params())}}, {{"step", 1}},
         {kModels / name / "config.json", kTokenizer / "tokenizer.json",
          kTokenizer / "tokenizer_config.json"});
  m.wait();
  return m.step_dir(1);
}

TEST(CheckpointExport, F32ExportLoadsBitwiseEqualToTheCheckpoint) {
  CkptTempDir tmp;
  Mesh mesh;
  for (const std::string name :
       {"llama_gqa", "qwen2_tied", "gemma", "qwen3", "gemma2", "gemma3_text", "phi3"}) {
    const fs::path step = save_fixture(tmp.path() / ("ck_" + name), name, mesh);
    const fs::path out = tmp.path() / ("hf_" + name);
    // Small shards: several files + model.safetensors.index.json.
    export_checkpoint(step, out, {.dtype = DType::kF32, .max_shard_bytes = 60'000});
    EXPECT_TRUE(fs::exists(out / "model.safetensors.index.json")) << name;
    EXPECT_FALSE(fs::exists(out / "model.safetensors")) << name;
    EXPECT_EQ(read_json(out / "config.json").at("torch_dtype"), "float32");
    EXPECT_EQ(read_json(out / "tokenizer.json"), read_json(kTokenizer / "tokenizer.json"));
    EXPECT_TRUE(fs::exists(out / "tokenizer_config.json"));
    EXPECT_FALSE(fs::exists(out / "index.json"));
    EXPECT_FALSE(fs::exists(out / "trainer_state.json"));
    Decoder want = load_checkpoint_decoder(step, mesh);
    Decoder got = load_decoder(out.string(), mesh);
    ASSERT_EQ(got.params().size(), want.params().size());
    for (size_t i = 0; i < want.params().size(); ++i) {
      EXPECT_TRUE(bitwise_equal(got.params().tensor(i), want.params().tensor(i)))
          << name << " " << want.params().info(i).name;
    }
    for (const auto& e : fs::directory_iterator(out)) {
      if (e.path().extension() != ".safetensors") continue;
      // Over the limit only when one tensor alone exceeds it (as transformers does).
      SafetensorsReader r(e.path());
      uint64_t data = 0;
      for (const SafetensorsEntry& t : r.entries()) data += t.nbytes;
      EXPECT_TRUE(data <= 60'000u || r.entries().size() == 1) << e.path();
    }
  }
}

// generation_config.json: a step without one gets transformers' from_model_config form made from
// its config.json (each fixture's own file was written by transformers from its config); a step
// that carries the source model's file exports it unchanged.
TEST(CheckpointExport, GenerationConfigIsMadeOrCopied) {
  CkptTempDir tmp;
  Mesh mesh;
  for (const std::string name : {"llama_gqa", "gemma"}) {
    const fs::path step = save_fixture(tmp.path() / ("ck_" + name), name, mesh);
    const fs::path out = tmp.path() / ("hf_" + name);
    export_checkpoint(step, out);
    EXPECT_EQ(read_json(out / "generation_config.json"),
              read_json(kModels / name / "generation_config.json"))
        << name;
  }
  {
    Decoder model = load_decoder((kModels / "llama_gqa").string(), mesh);
    CheckpointManager m(tmp.path() / "ck_custom", mesh, {.async = false});
    std::ofstream(tmp.path() / "generation_config.json")
        << R"({"do_sample": true, "eos_token_id": [2, 5], "temperature": 0.6})";
    m.save(1, {{"model", sharded_tensors(model.params())}}, {{"step", 1}},
           {kModels / "llama_gqa" / "config.json", tmp.path() / "generation_config.json"});
    m.wait();
    export_checkpoint(m.step_dir(1), tmp.path() / "hf_custom");
    EXPECT_EQ(read_json(tmp.path() / "hf_custom" / "generation_config.json"),
              read_json(tmp.path() / "generation_config.json"));
  }
}

TEST(CheckpointExport, Bf16ExportRoundsLikeTensorTo) {
  CkptTempDir tmp;
  Mesh mesh;
  const fs::path step = save_fixture(tmp.path() / "ck", "llama_gqa", mesh);
  const fs::path out = tmp.path() / "hf";
  export_checkpoint(step, out, {.dtype = DType::kBF16});
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  EXPECT_EQ(read_json(out / "config.json").at("torch_dtype"), "bfloat16");
  HfWeights w(out);
  EXPECT_EQ(w.entry("model.embed_tokens.weight").dtype, DType::kBF16);
  Decoder want = load_checkpoint_decoder(step, mesh);
  Decoder got = load_decoder(out.string(), mesh);
  for (size_t i = 0; i < want.params().size(); ++i) {
    EXPECT_TRUE(bitwise_equal(got.params().tensor(i),
                              want.params().tensor(i).to(DType::kBF16).to(DType::kF32)))
        << want.params().info(i).name;
  }
}

TEST(CheckpointExport, RefusesANonEmptyOutputUnlessOverwrite) {
  CkptTempDir tmp;
  Mesh mesh;
  const fs::path step = save_fixture(tmp.path() / "ck", "qwen2", mesh);
  const fs::path out = tmp.path() / "hf";
  fs::create_directories(out);
  std::ofstream(out / "notes.txt") << "keep";
  try {
    export_checkpoint(step, out);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not empty"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(out / "config.json"));
  export_checkpoint(step, out, {.overwrite = true});
  EXPECT_TRUE(fs::exists(out / "config.json"));
  EXPECT_TRUE(fs::exists(out / "notes.txt"));
  // Overwriting a sharded export with a single-file one leaves no stale shards.
  export_checkpoint(step, out, {.max_shard_bytes = 20'000, .overwrite = true});
  EXPECT_TRUE(fs::exists(out / "model.safetensors.index.json"));
  export_checkpoint(step, out, {.overwrite = true});
  EXPECT_FALSE(fs::exists(out / "model.safetensors.index.json"));
  for (const auto& e : fs::directory_iterator(out)) {
    EXPECT_FALSE(e.path().filename().string().starts_with("model-")) << e.path();
  }
  load_decoder(out.string(), mesh);
}

TEST(CheckpointExport, DamagedStepIsReportedAndNothingLooksValid) {
  CkptTempDir tmp;
  Mesh mesh;
  const fs::path step = save_fixture(tmp.path() / "ck", "qwen2", mesh);
  std::ofstream(step / "tokenizer.json", std::ios::app) << " ";
  const fs::path out = tmp.path() / "hf";
  try {
    export_checkpoint(step, out);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find((step / "tokenizer.json").string()), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(out / "config.json"));
  // config.json altered: load_checkpoint_decoder refuses it too.
  std::ofstream(step / "config.json", std::ios::app) << " ";
  EXPECT_THROW(load_checkpoint_decoder(step, mesh), Error);
}

}  // namespace
}  // namespace magix
