// The BPE model of tokenizer.json: vocab, ranked merges, byte fallback, unk handling,
// ignore_merges, continuing_subword_prefix / end_of_word_suffix.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace magix::text {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct ModelToken {
  int32_t id;
  size_t begin, end;  // byte range within the word
};

class BpeModel {
 public:
  // `model` is the "model" object of tokenizer.json (type "BPE").
  BpeModel(const nlohmann::json& model, const std::string& source);

  // Appends the tokens of one pre-tokenized word. Merging uses a priority queue over a linked
  // list of symbols: O(n log n) in the word length n.
  void tokenize(std::string_view word, std::vector<ModelToken>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;  // null when the model has no such id
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  int32_t byte_token(unsigned char b) const;  // throws if the vocab lacks <0xXX>

  std::string source_;
  TokenMap vocab_;
  std::vector<std::string> id_to_token_;  // "" for ids without a token
  std::vector<bool> has_id_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::vector<int32_t> byte_tokens_;  // <0xXX> ids, -1 where absent
  std::optional<int32_t> unk_id_;
  std::string unk_token_;
  std::string prefix_, suffix_;  // continuing_subword_prefix, end_of_word_suffix
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
};

}  // namespace magix::text
