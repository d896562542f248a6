// PCRE2 regular expressions (UTF + UCP, JIT) as tokenizer.json patterns need them: Unicode
// classes, look-ahead, leftmost-first alternation like the Oniguruma engine HF tokenizers uses.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/normalized_string.hpp"

namespace magix::text {

using MatchFn = std::function<void(size_t, size_t)>;  // a match [b, e)

class Regex {
 public:
  // `context` names the component in error messages (e.g. "pre_tokenizer Split").
  Regex(const std::string& pattern, const std::string& context);
  // Appends every non-empty, non-overlapping match [b, e) of `s` (valid UTF-8), left to right.
  void find_all(std::string_view s, std::vector<Range>& out) const;
  // The same, calling fn(b, e) for each match as it is found.
  void find_each(std::string_view s, const MatchFn& fn) const;

 private:
  std::shared_ptr<void> code_;  // pcre2_code_8
};

// A tokenizer.json "pattern": {"String": "..."} (literal) or {"Regex": "..."}.
class Pattern {
 public:
  Pattern() = default;
  static Pattern literal(std::string s);
  static Pattern regex(const std::string& pattern, const std::string& context);
  void find_all(std::string_view s, std::vector<Range>& out) const;
  void find_each(std::string_view s, const MatchFn& fn) const;

 private:
  std::string literal_;
  std::shared_ptr<const Regex> regex_;
};

}  // namespace magix::text
