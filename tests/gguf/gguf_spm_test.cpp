// SentencePiece vocabularies and the gemma/gemma2/gemma3/qwen3/phi3 architectures from GGUF,
// against transformers loading the same files (tools/reference/make_gguf_spm_fixtures.py):
// token ids and decoded text equal on varied texts, logits within fp32 tolerance. The gemma and
// llama_yarn, llama3, phi3_longrope and phi3_partial files, which transformers 5 cannot read as
// written (it ignores llama rope scaling, rope_freqs.weight and rope_factors_*), are compared with
// the HF models they were written from.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "../io/io_test_util.hpp"
#include "magix/error.hpp"
#include "magix/gguf_export.hpp"
#include "magix/gguf_model.hpp"
#include "magix/hf_files.hpp"
#include "magix/model.hpp"
#include "magix/safetensors.hpp"
#include "magix/tokenizer.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kDir = fs::path(MAGIX_FIXTURES_DIR) / "gguf_spm";

class GgufSpm : public ::testing::Test {
 protected:
  void SetUp() override {
    ::setenv("MAGIX_CACHE", cache_.path().c_str(), 1);
    expected_ = json::parse(std::ifstream(kDir / "expected.json"));
  }
  void TearDown() override { ::unsetenv("MAGIX_CACHE"); }
  json config_of(const std::string& file) const {
    return json::parse(std::ifstream(resolve_model_dir((kDir / file).string()) / "config.json"));
  }

  test::TempDir cache_;
  json expected_;
};

TEST_F(GgufSpm, TokenIdsAndDecodingEqualTransformers) {
  ASSERT_EQ(expected_["tokenizers"].size(), 6u);  // spm_llama, spm_gemma and four models
  for (const auto& [file, texts] : expected_["tokenizers"].items()) {
    SCOPED_TRACE(file);
    const Tokenizer tok = Tokenizer::load((kDir / file).string());
    for (const auto& t : texts) {
      const std::string text = t["text"];
      SCOPED_TRACE(text);
      const auto ids = t["ids"].get<std::vector<int32_t>>();
      EXPECT_EQ(tok.encode(text, true), ids);
      EXPECT_EQ(tok.decode(ids, false), t["decoded"].get<std::string>());
      EXPECT_EQ(tok.decode(ids, true), t["decoded_skip"].get<std::string>());
    }
  }
}

// The merges derived from the scores are the published tokenizer.json's: the ids are HF
// `tokenizers`' on that file, but where transformers' Metaspace and the file's Prepend
// normalizer differ (docs/gguf.md): texts that start with a space, text after a special token.
TEST_F(GgufSpm, SameIdsAsThePublishedTokenizerWhereThePipelinesAgree) {
  const Tokenizer tok = Tokenizer::load((kDir / "spm_llama.gguf").string());
  const json& texts = expected_["tokenizers"]["spm_llama.gguf"];
  const json& published = expected_["published_tokenizer_ids"]["spm_llama.gguf"];
  int compared = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i]["text"];
    if (text.starts_with(' ') || text.find("</s>") != std::string::npos) continue;
    EXPECT_EQ(tok.encode(text, true), published[i].get<std::vector<int32_t>>()) << text;
    ++compared;
  }
  EXPECT_EQ(compared, 5);
}

TEST_F(GgufSpm, SpecialTokensAndFlagsFromMetadata) {
  const fs::path dir = resolve_model_dir((kDir / "spm_llama.gguf").string());
  const json tc = json::parse(std::ifstream(dir / "tokenizer_config.json"));
  EXPECT_EQ(tc.at("bos_token"), "<s>");
  EXPECT_EQ(tc.at("eos_token"), "</s>");
  EXPECT_EQ(tc.at("unk_token"), "<unk>");
  EXPECT_EQ(tc.at("add_bos_token"), true);
  const json tj = json::parse(std::ifstream(dir / "tokenizer.json"));
  EXPECT_EQ(tj["model"]["vocab"].size(), 32000u);
  EXPECT_EQ(tj["model"]["byte_fallback"], true);
  EXPECT_EQ(tj["pre_tokenizer"]["prepend_scheme"], "first");  // add_space_prefix true
}

// tokenizer.ggml.add_space_prefix false: no "▁" prepended and none stripped, so decoding gives
// the text back (transformers ignores the key; magix follows it, as llama.cpp does).
TEST_F(GgufSpm, AddSpacePrefixFalsePrependsNothing) {
  const fs::path dir = resolve_model_dir((kDir / "spm_no_prefix.gguf").string());
  const json tj = json::parse(std::ifstream(dir / "tokenizer.json"));
  EXPECT_EQ(tj["pre_tokenizer"]["prepend_scheme"], "never");
  EXPECT_EQ(tj["decoder"]["decoders"].size(), 3u);  // Replace, ByteFallback, Fuse: no Strip
  const Tokenizer tok = Tokenizer::load((kDir / "spm_no_prefix.gguf").string());
  for (const std::string text : {"Hello world", " one leading space", "tab\tand\nnewline"}) {
    const auto ids = tok.encode(text, false);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(tok.decode(ids, true), text);
  }
  const Tokenizer with_prefix = Tokenizer::load((kDir / "tiny_qwen3.gguf").string());  // same cut
  EXPECT_NE(tok.encode("Hello", false), with_prefix.encode("Hello", false));
}

TEST_F(GgufSpm, LogitsEqualReference) {
  SafetensorsReader want(kDir / "expected.safetensors");
  ASSERT_EQ(expected_["models"].size(), 9u);
  for (const auto& [family, m] : expected_["models"].items()) {
    SCOPED_TRACE(family);
    Mesh mesh;
    Decoder model = load_decoder((kDir / m["file"].get<std::string>()).string(), mesh);
    for (size_t i = 0; i < m["ids"].size(); ++i) {
      const auto ids = m["ids"][i].get<std::vector<int32_t>>();
      const Tensor logits = model.logits(make_causal_batch({ids}, 0));
      const Tensor w = want.read_f32(fmt::format("logits.{}.{}", family, i));
      ASSERT_EQ(logits.numel(), w.numel());
      double max_diff = 0, max_abs = 0;
      for (int64_t k = 0; k < w.numel(); ++k) {
        max_diff =
            std::max(max_diff, double(std::fabs(logits.data<float>()[k] - w.data<float>()[k])));
        max_abs = std::max(max_abs, double(std::fabs(w.data<float>()[k])));
      }
      EXPECT_LT(max_diff, 1e-4 * std::max(1.0, max_abs)) << "sequence " << i;
      std::printf("%s sequence %zu: max |logit difference| %.2e (logit scale %.2f)\n",
                  family.c_str(), i, max_diff, max_abs);
    }
  }
}

// Every family written back by magix's GGUF writer (f32, the tokenizer folder magix made from
// the file) and read again: the same logits, bit for bit, and the same token ids.
TEST_F(GgufSpm, ExportRoundTrip) {
  test::TempDir out;
  for (const auto& [family, m] : expected_["models"].items()) {
    SCOPED_TRACE(family);
    const std::string src = (kDir / m["file"].get<std::string>()).string();
    Mesh mesh;
    Decoder model = load_decoder(src, mesh);
    const fs::path written = out.path() / (family + ".gguf");
    write_gguf_model(written, model.config(), family, resolve_model_dir(src) / "tokenizer.json",
                     model.params(), GgufOutType::kF32);
    Decoder again = load_decoder(written.string(), mesh);
    for (size_t i = 0; i < m["ids"].size(); ++i) {
      const auto ids = m["ids"][i].get<std::vector<int32_t>>();
      const Tensor a = model.logits(make_causal_batch({ids}, 0));
      const Tensor b = again.logits(make_causal_batch({ids}, 0));
      ASSERT_EQ(a.numel(), b.numel());
      EXPECT_EQ(std::memcmp(a.data<float>(), b.data<float>(), a.numel() * sizeof(float)), 0);
    }
    if (!expected_["tokenizers"].contains(m["file"].get<std::string>())) continue;
    const Tokenizer tok = Tokenizer::load(written.string());
    for (const auto& t : expected_["tokenizers"][m["file"].get<std::string>()]) {
      EXPECT_EQ(tok.encode(t["text"].get<std::string>(), true),
                t["ids"].get<std::vector<int32_t>>());
    }
  }
}

TEST_F(GgufSpm, ConfigFromMetadata) {
  const json g3 = config_of("tiny_gemma3.gguf");
  EXPECT_EQ(g3.at("model_type"), "gemma3_text");
  EXPECT_EQ(g3.at("head_dim"), 256);
  EXPECT_EQ(g3.at("query_pre_attn_scalar"), 256);
  EXPECT_EQ(g3.at("sliding_window"), 4);
  EXPECT_EQ(g3.at("tie_word_embeddings"), false);
  const json g2 = config_of("tiny_gemma2.gguf");
  EXPECT_EQ(g2.at("model_type"), "gemma2");
  EXPECT_EQ(g2.at("attn_logit_softcapping"), 50.0);
  EXPECT_EQ(g2.at("final_logit_softcapping"), 30.0);
  EXPECT_EQ(g2.at("tie_word_embeddings"), true);
  const json yarn = config_of("tiny_llama_yarn.gguf");
  EXPECT_EQ(yarn.at("rope_scaling"),
            json({{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32},
                  {"beta_fast", 4.0}, {"beta_slow", 0.5}}));
  // Llama 3.1-style scaling from rope_freqs.weight: HF's parameters recovered exactly.
  EXPECT_EQ(config_of("tiny_llama3.gguf").at("rope_scaling"),
            json({{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                  {"high_freq_factor", 8.0}, {"original_max_position_embeddings", 8192}}));
  EXPECT_EQ(config_of("tiny_phi3.gguf").at("model_type"), "phi3");
  // Phi-3 LongRoPE from rope_factors_short/long.weight and llama.cpp's attention factor.
  const json lr = config_of("tiny_phi3_longrope.gguf");
  EXPECT_EQ(lr.at("original_max_position_embeddings"), 16);
  EXPECT_EQ(lr.at("rope_scaling").at("rope_type"), "longrope");
  EXPECT_EQ(lr.at("rope_scaling").at("short_factor").size(), 8u);
  EXPECT_FLOAT_EQ(lr.at("rope_scaling").at("long_factor")[7].get<float>(), 12.0f);
  EXPECT_NEAR(lr.at("rope_scaling").at("attention_factor").get<double>(),
              std::sqrt(1 + std::log(8.0) / std::log(16.0)), 1e-6);
  EXPECT_EQ(config_of("tiny_qwen3.gguf").at("head_dim"), 128);
  // Phi-4-mini style: rope.dimension_count 12 of head_dim 16, 6 factors each.
  const json partial = config_of("tiny_phi3_partial.gguf");
  EXPECT_EQ(partial.at("partial_rotary_factor"), 0.75);
  EXPECT_EQ(partial.at("rope_scaling").at("long_factor").size(), 6u);
}

TEST_F(GgufSpm, UnsupportedFilesAreClearErrors) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"refused_arch.gguf", "GGUF architecture 'mamba' is not supported"},
      {"refused_tokenizer.gguf", "GGUF tokenizer model 't5' is not supported"},
      {"refused_longrope.gguf", "with one of rope_factors_short/long.weight needs both"},
      {"refused_rope.gguf", "GGUF rope scaling 'longrope' is not supported"},
      {"refused_rope_freqs.gguf", "rope_freqs.weight: its divisors do not follow the Llama 3 rule"},
  };
  for (const auto& [file, message] : cases) {
    SCOPED_TRACE(file);
    try {
      resolve_model_dir((kDir / file).string());
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr(message));
      EXPECT_THAT(e.what(), ::testing::HasSubstr(file));
    }
  }
}

}  // namespace
}  // namespace magix
