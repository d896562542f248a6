// run_generation end to end on a small random model with a real tokenizer: texts are the
// decode of the generated ids, stop strings cut them, and a magix checkpoint step of the same
// weights generates the same file as the HF folder.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "../common/json_wrong_types.hpp"
#include "magix/checkpoint.hpp"
#include "magix/dataset.hpp"
#include "magix/error.hpp"
#include "magix/generate.hpp"
#include "magix/hf_files.hpp"
#include "magix/model.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The ids the tokenizer has (the model's vocabulary is larger).
std::vector<int32_t> known_ids(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::vector<int32_t> out;
  for (int32_t id : ids) {
    if (id < tok.vocab_size()) out.push_back(id);
  }
  return out;
}

class RunGeneration : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("magix_generate_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "model");
    const nlohmann::json j{{"model_type", "llama"},    {"vocab_size", 768},
                           {"hidden_size", 64},        {"intermediate_size", 128},
                           {"num_hidden_layers", 2},   {"num_attention_heads", 4},
                           {"num_key_value_heads", 2}, {"max_position_embeddings", 512},
                           {"rms_norm_eps", 1e-5},     {"initializer_range", 1.0},
                           {"bos_token_id", 700},      {"eos_token_id", 0}};
    config_ = parse_model_config(j, "test");
    infos_ = expected_parameters(config_);
    shard_parameters(infos_, mesh_);
    params_ = init_parameters(config_, infos_, 3);
    std::vector<NamedTensor> named;
    for (size_t i = 0; i < params_.size(); ++i)
      named.push_back({infos_[i].name, &params_.tensor(i)});
    write_hf_weights(dir_ / "model", named, DType::kF32);
    std::ofstream(dir_ / "model" / "config.json") << j.dump();
    const fs::path tok = fs::path(MAGIX_FIXTURES_DIR) / "tokenizers" / "trained_bytelevel";
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
      fs::copy_file(tok / f, dir_ / "model" / f);
    }
    std::ofstream(dir_ / "prompts.txt") << "Hello world\nhéllo wörld 日本\nThe quick brown fox\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  GenerateArgs args(const std::string& model, const std::string& out) const {
    GenerateArgs a;
    a.prompts = (dir_ / "prompts.txt").string();
    a.model_name_or_path = model;
    a.tokenizer_name_or_path = (dir_ / "model").string();
    a.output_file = (dir_ / out).string();
    a.batch_size = 2;
    a.generation.max_new_tokens = 12;
    return a;
  }

  fs::path dir_;
  Mesh mesh_;
  ModelConfig config_;
  std::vector<ParamInfo> infos_;
  ParameterSet params_;
};

TEST_F(RunGeneration, TextsAreTheDecodeOfTheIdsAndCheckpointsWork) {
  const GenerationSummary sum = run_generation(args((dir_ / "model").string(), "hf.jsonl"), mesh_);
  EXPECT_EQ(sum.prompts, 3);
  EXPECT_FALSE(fs::exists(dir_ / "hf.jsonl.partial"));

  // The same prompts through the library: the file holds the decode of the generated ids.
  const Tokenizer tok = Tokenizer::load((dir_ / "model").string());
  Generator gen(config_, mesh_, params_, &tok);
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.pad_to_multiple_of = 64;
  o.pad_id = *tok.pad_id();
  std::vector<std::vector<int32_t>> prompts;
  for (const char* p : {"Hello world", "héllo wörld 日本", "The quick brown fox"}) {
    prompts.push_back(tok.encode(p));
  }
  // As run_generation batches them (batch_size 2), so that the numerics are the same.
  std::vector<GenerationResult> results = gen.generate({prompts[0], prompts[1]}, o, {0, 1});
  results.push_back(gen.generate({prompts[2]}, o, {2})[0]);
  std::istringstream lines(read_file(dir_ / "hf.jsonl"));
  std::string line;
  int64_t tokens = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(std::getline(lines, line));
    const nlohmann::json j = nlohmann::json::parse(line);
    const std::vector<int32_t> known = known_ids(tok, results[i].tokens);
    EXPECT_EQ(j.at("generated").get<std::string>(), tok.decode(known)) << i;
    EXPECT_EQ(results[i].text, tok.decode(known)) << i;
    tokens += std::ssize(results[i].tokens);
  }
  EXPECT_FALSE(std::getline(lines, line));
  EXPECT_EQ(sum.generated_tokens, tokens);

  // A checkpoint step of the same weights: the same output file.
  {
    CheckpointManager manager(dir_ / "ckpt", mesh_, {.max_to_keep = 1, .async = false});
    manager.save(5, {{"model", sharded_tensors(params_)}}, nlohmann::json::object(),
                 {dir_ / "model" / "config.json"});
    manager.wait();
  }
  const fs::path step = dir_ / "ckpt" / "000005";
  ASSERT_TRUE(is_checkpoint_step(step));
  run_generation(args(step.string(), "ckpt.jsonl"), mesh_);
  EXPECT_EQ(read_file(dir_ / "ckpt.jsonl"), read_file(dir_ / "hf.jsonl"));
}

// A stop string ends the sequence at the token that completes it; the text stops just before
// it. Tried with every 2-byte-or-longer piece of the unstopped text's first characters.
TEST_F(RunGeneration, StopStringsCutTheText) {
  const Tokenizer tok = Tokenizer::load((dir_ / "model").string());
  Generator gen(config_, mesh_, params_, &tok);
  GenerateOptions o;
  o.max_new_tokens = 12;
  const std::vector<int32_t> prompt = tok.encode("The quick brown fox");
  const GenerationResult full = gen.generate({prompt}, o)[0];
  ASSERT_GE(full.text.size(), 6u) << full.text;
  int tried = 0;
  for (size_t at = 1; at + 2 <= full.text.size() && tried < 4; ++at) {
    const std::string stop = full.text.substr(at, 2);
    if (find_invalid_utf8(stop)) continue;  // only whole characters can match decoded text
    ++tried;
    o.stop = {"never there", stop};
    const GenerationResult r = gen.generate({prompt}, o)[0];
    const size_t cut = full.text.find(stop);
    EXPECT_EQ(r.text, full.text.substr(0, cut)) << stop;
    EXPECT_EQ(r.finish, FinishReason::kStop);
    // Its ids are a prefix of the unstopped ones, ending where the stop string appeared.
    ASSERT_LE(r.tokens.size(), full.tokens.size());
    EXPECT_TRUE(std::equal(r.tokens.begin(), r.tokens.end(), full.tokens.begin()));
    EXPECT_NE(tok.decode(known_ids(tok, r.tokens)).find(stop), std::string::npos);
  }
  EXPECT_GT(tried, 0);
}

}  // namespace
}  // namespace magix

namespace magix {
namespace {

// generation_config.json gives defaults; the flags given explicitly win; max_new_tokens (from
// either) overrides the file's max_length; every eos id of a list stops.
TEST(GenerationConfigDefaults, FileValuesUnlessGiven) {
  const GenerationConfig g = parse_generation_config(
      nlohmann::json::parse(R"({"do_sample": true, "temperature": 0.6, "top_p": 0.9,
                                "top_k": 20, "max_length": 40, "eos_token_id": [7, 9],
                                "pad_token_id": 3, "repetition_penalty": null})"),
      "test");
  GenerateOptions o;
  const std::vector<std::string> taken = apply_generation_config(g, {"temperature"}, o);
  EXPECT_TRUE(o.sampling.sample);
  EXPECT_FLOAT_EQ(o.sampling.temperature, GenerateOptions{}.sampling.temperature);  // given
  EXPECT_FLOAT_EQ(o.sampling.top_p, 0.9f);
  EXPECT_EQ(o.sampling.top_k, 20);
  EXPECT_FLOAT_EQ(o.sampling.repetition_penalty, 1.0f);  // null: absent
  EXPECT_EQ(o.max_length, 40);
  EXPECT_EQ(o.eos_ids, (std::vector<int32_t>{7, 9}));
  EXPECT_EQ(o.pad_id, 3);
  EXPECT_EQ(taken.size(), 6u);  // do_sample, top_k, top_p, max_length, eos, pad

  GenerateOptions given;
  given.max_length = 99;
  apply_generation_config(g, {"max_length", "sample", "top_k"}, given);
  EXPECT_EQ(given.max_length, 99);
  EXPECT_FALSE(given.sampling.sample);
  EXPECT_EQ(given.sampling.top_k, 0);

  // max_new_tokens set (flag or file): the file's max_length is not taken.
  GenerateOptions flag;
  apply_generation_config(g, {"max_new_tokens"}, flag);
  EXPECT_EQ(flag.max_length, GenerateOptions{}.max_length);
  const GenerationConfig both = parse_generation_config(
      nlohmann::json::parse(R"({"max_new_tokens": 5, "max_length": 40, "eos_token_id": 2})"),
      "test");
  GenerateOptions file;
  apply_generation_config(both, {}, file);
  EXPECT_EQ(file.max_new_tokens, 5);
  EXPECT_EQ(file.max_length, GenerateOptions{}.max_length);
  EXPECT_EQ(file.eos_ids, (std::vector<int32_t>{2}));

  EXPECT_THROW(parse_generation_config(nlohmann::json::parse(R"({"eos_token_id": "x"})"), "t"),
               Error);
  EXPECT_THROW(parse_generation_config(nlohmann::json::parse(R"({"top_k": -1})"), "t"), Error);
  EXPECT_THROW(parse_generation_config(nlohmann::json::parse(R"({"do_sample": 1})"), "t"), Error);
}

// generation_config.json fields of the wrong type: a magix::Error naming the field (null means
// "not set" for each of them), never a JSON library exception.
TEST(GenerationConfig, WrongTypesNameTheField) {
  const nlohmann::json valid = nlohmann::json::parse(
      R"({"eos_token_id": [2, 5], "pad_token_id": 0, "bos_token_id": 1, "do_sample": true,
          "temperature": 0.6, "top_p": 0.9, "repetition_penalty": 1.1, "top_k": 20,
          "max_new_tokens": 5, "max_length": 40})");
  const auto read = [](const nlohmann::json& j) {
    parse_generation_config(j, "generation_config.json");
  };
  std::vector<test::JsonField> fields = {
      {"/eos_token_id/1", false, "\"eos_token_id\"[1]"},
      {"/eos_token_id", true, "", {"x", 2.5, nlohmann::json{{"k", 1}}, true}},
  };
  for (const char* key : {"pad_token_id", "bos_token_id", "do_sample", "temperature", "top_p",
                          "repetition_penalty", "top_k", "max_new_tokens", "max_length"}) {
    fields.push_back({std::string("/") + key, true});
  }
  test::expect_wrong_types_named(valid, fields, read);
  test::expect_only_magix_errors(valid, read);
  try {
    read(nlohmann::json::array());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("generation_config.json: expected a JSON object, found list"),
        std::string::npos)
        << e.what();
  }
}

// Every fixture model's generation_config.json (written by transformers) is read, and is what
// generation_config_from_model_config makes of its config.json.
TEST(GenerationConfigDefaults, TransformersFilesAreReadAndMadeAlike) {
  int n = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(MAGIX_FIXTURES_DIR) / "models")) {
    if (!fs::is_regular_file(entry.path() / "generation_config.json")) continue;
    SCOPED_TRACE(entry.path().string());
    const std::optional<GenerationConfig> g = load_generation_config(entry.path());
    ASSERT_TRUE(g.has_value());
    const nlohmann::json config =
        nlohmann::json::parse(std::ifstream(entry.path() / "config.json"));
    ASSERT_EQ(g->eos_token_ids.size(), 1u);
    EXPECT_EQ(g->eos_token_ids[0], config.at("eos_token_id").get<int32_t>());
    EXPECT_EQ(g->bos_token_id, config.at("bos_token_id").get<int32_t>());
    EXPECT_EQ(generation_config_from_model_config(config), g->raw);
    ++n;
  }
  EXPECT_GE(n, 7);
  EXPECT_FALSE(load_generation_config(fs::temp_directory_path() / "no-such-model").has_value());
}

}  // namespace
}  // namespace magix

namespace magix {
namespace {

TEST_F(RunGeneration, GenerationConfigGivesDefaultsAndFlagsWin) {
  std::ofstream(dir_ / "model" / "generation_config.json")
      << R"({"max_new_tokens": 2, "eos_token_id": [700, 701]})";
  const std::string model = (dir_ / "model").string();
  GenerateArgs a = args(model, "file.jsonl");  // max_new_tokens 12, but not given
  const GenerationSummary from_file = run_generation(a, mesh_);
  EXPECT_LE(from_file.generated_tokens, 3 * 2);
  a.given = {"max_new_tokens"};
  const GenerationSummary from_flag = run_generation(a, mesh_);
  EXPECT_GT(from_flag.generated_tokens, 3 * 2);
}

}  // namespace
}  // namespace magix
