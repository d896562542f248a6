// tokenizer.json "normalizer": Sequence, Prepend, Replace, NFC/NFD/NFKC/NFKD, Lowercase, Strip.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>

#include "tokenizer/normalized_string.hpp"
#include "tokenizer/tokenizer_regex.hpp"

namespace magix::text {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(NormalizedString& s) const = 0;
};

// null -> nullptr; an unknown "type" is an error naming it and `source`.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& source);

// {"String": s} or {"Regex": r}.
Pattern parse_pattern(const nlohmann::json& j, const std::string& context);

// Replaces every match of `pattern` in s by `content`; the new bytes align to the match.
void replace_all(NormalizedString& s, const Pattern& pattern, const std::string& content);

}  // namespace magix::text
