// Added tokens of tokenizer.json ("added_tokens"): found in the text before the model runs,
// leftmost-longest, with the lstrip / rstrip / single_word rules of HF tokenizers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/normalized_string.hpp"

namespace magix::text {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

struct AddedSplit {
  Range range;         // byte range in the searched text
  int32_t token = -1;  // index into the token list, or -1 for plain text
};

// A byte trie over patterns (one per token). Matching: at the leftmost position where some
// pattern matches, the longest one; then on after it (non-overlapping).
class AddedTokenMatcher {
 public:
  AddedTokenMatcher();
  void add(std::string_view pattern, int32_t token);
  bool empty() const { return count_ == 0; }
  // Splits `text` into plain pieces and added tokens (covering all of `text`; "" gives one empty
  // plain piece).
  std::vector<AddedSplit> split(std::string_view text, const std::vector<AddedToken>& tokens) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t token = -1;
  };
  int32_t child(int32_t node, unsigned char b) const;
  std::vector<Node> nodes_;
  size_t count_ = 0;
};

}  // namespace magix::text
