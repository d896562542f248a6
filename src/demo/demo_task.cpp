// The demo's task, tokenizer and model config (include/magix/demo.hpp).
#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <unordered_set>

#include "magix/demo.hpp"
#include "magix/error.hpp"
#include "splitmix_stream.hpp"

namespace magix {
namespace {

using detail::SplitMix64;

int64_t pow10(int digits) {
  int64_t p = 1;
  for (int i = 0; i < digits; ++i) p *= 10;
  return p;
}

const char* const kSpecialTokens[] = {"<pad>", "</s>", "<unk>", "<|user|>", "<|assistant|>"};

// The chat template: user and assistant turns, each closed by eos; system turns are refused.
constexpr const char* kChatTemplate =
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' + message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('the demo chat template has user and assistant turns only') }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

}  // namespace

DemoProblem make_demo_problem(int64_t a, int64_t b, int digits) {
  MAGIX_CHECK(digits >= 1 && digits <= 9, "the demo's operands have 1 to 9 digits, got {}", digits);
  const int64_t limit = pow10(digits);
  MAGIX_CHECK(a >= 0 && a < limit && b >= 0 && b < limit,
              "demo operands {} and {} must lie in [0, {})", a, b, limit);
  DemoProblem p;
  p.a = a;
  p.b = b;
  p.prompt = fmt::format("{:0{}}+{:0{}}", a, digits, b, digits);
  std::string sum = fmt::format("{:0{}}", a + b, digits + 1);
  std::reverse(sum.begin(), sum.end());
  p.answer = sum;
  return p;
}

int64_t demo_answer_value(const std::string& answer, int digits) {
  if (static_cast<int>(answer.size()) != digits + 1) return -1;
  int64_t value = 0;
  for (auto it = answer.rbegin(); it != answer.rend(); ++it) {
    if (*it < '0' || *it > '9') return -1;
    value = value * 10 + (*it - '0');
  }
  return value;
}

DemoData make_demo_data(const DemoTask& task) {
  MAGIX_CHECK(task.digits >= 1 && task.digits <= 9, "--digits must be in [1, 9], got {}",
              task.digits);
  MAGIX_CHECK(task.train_examples > 0 && task.test_examples > 0,
              "the demo needs at least one training and one test example (got {} and {})",
              task.train_examples, task.test_examples);
  const int64_t limit = pow10(task.digits);
  const uint64_t pairs = static_cast<uint64_t>(limit) * static_cast<uint64_t>(limit);
  const uint64_t wanted = static_cast<uint64_t>(task.train_examples + task.test_examples);
  MAGIX_CHECK(wanted <= pairs,
              "{} training + {} test examples exceed the {} distinct {}-digit additions",
              task.train_examples, task.test_examples, pairs, task.digits);
  SplitMix64 rng(task.seed);
  std::vector<uint64_t> codes;  // pair (a, b) as a * limit + b, in draw order
  codes.reserve(wanted);
  if (pairs <= (1ull << 22)) {
    // Partial Fisher-Yates over every pair: exact for any count up to all of them.
    std::vector<uint64_t> all(pairs);
    std::iota(all.begin(), all.end(), 0ull);
    for (uint64_t i = 0; i < wanted; ++i) {
      std::swap(all[i], all[i + rng.below(pairs - i)]);
      codes.push_back(all[i]);
    }
  } else {
    // Rejection of repeats: the wanted count is a small fraction of the pairs here.
    MAGIX_CHECK(wanted <= pairs / 2, "too many demo examples for rejection sampling");
    std::unordered_set<uint64_t> seen;
    while (codes.size() < wanted) {
      const uint64_t c = rng.below(pairs);
      if (seen.insert(c).second) codes.push_back(c);
    }
  }
  DemoData data;
  for (uint64_t i = 0; i < wanted; ++i) {
    const auto a = static_cast<int64_t>(codes[i] / limit);
    const auto b = static_cast<int64_t>(codes[i] % limit);
    auto& dst = i < static_cast<uint64_t>(task.test_examples) ? data.test : data.train;
    dst.push_back(make_demo_problem(a, b, task.digits));
  }
  return data;
}

std::string demo_tokenizer_json() {
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  nlohmann::ordered_json added = nlohmann::ordered_json::array();
  int32_t id = 0;
  for (const char* s : kSpecialTokens) {
    added.push_back({{"id", id},
                     {"content", s},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
    vocab[s] = id++;
  }
  vocab["\n"] = id++;
  for (int c = 0x20; c < 0x7f; ++c) vocab[std::string(1, static_cast<char>(c))] = id++;
  nlohmann::ordered_json model = {{"type", "BPE"},
                                  {"dropout", nullptr},
                                  {"unk_token", "<unk>"},
                                  {"continuing_subword_prefix", nullptr},
                                  {"end_of_word_suffix", nullptr},
                                  {"fuse_unk", false},
                                  {"byte_fallback", false},
                                  {"ignore_merges", false},
                                  {"vocab", vocab},
                                  {"merges", nlohmann::ordered_json::array()}};
  nlohmann::ordered_json j = {
      {"version", "1.0"},          {"truncation", nullptr},         {"padding", nullptr},
      {"added_tokens", added},     {"normalizer", nullptr},         {"pre_tokenizer", nullptr},
      {"post_processor", nullptr}, {"decoder", {{"type", "Fuse"}}}, {"model", model}};
  return j.dump(2) + "\n";
}

nlohmann::ordered_json demo_tokenizer_config() {
  return {{"tokenizer_class", "PreTrainedTokenizerFast"},
          {"eos_token", "</s>"},
          {"pad_token", "<pad>"},
          {"unk_token", "<unk>"},
          {"add_bos_token", false},
          {"add_eos_token", false},
          {"model_max_length", 64},
          {"chat_template", kChatTemplate}};
}

nlohmann::ordered_json demo_model_config(int64_t vocab_size) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", vocab_size},
          {"hidden_size", 128},
          {"intermediate_size", 256},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"max_position_embeddings", 64},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"hidden_act", "silu"},
          {"initializer_range", 0.02},
          {"tie_word_embeddings", false},
          {"pad_token_id", 0},
          {"eos_token_id", 1}};
}

nlohmann::ordered_json demo_train_record(const DemoProblem& p) {
  return {{"messages",
           {{{"role", "user"}, {"content", p.prompt}},
            {{"role", "assistant"}, {"content", p.answer}}}}};
}

nlohmann::ordered_json demo_test_record(const DemoProblem& p) {
  return {{"prompt", p.prompt}, {"answer", p.answer}};
}

}  // namespace magix
