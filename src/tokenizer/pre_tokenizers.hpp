// tokenizer.json "pre_tokenizer": Split, ByteLevel, Metaspace, Sequence, Whitespace,
// WhitespaceSplit, Digits. A pre-tokenizer cuts normalized text into words for the model.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/normalized_string.hpp"

namespace magix::text {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their sub-pieces (empty pieces are dropped).
  virtual void split(std::vector<NormalizedString>& pieces) const = 0;
};

// null -> nullptr; an unknown "type" is an error naming it and `source`.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j,
                                                 const std::string& source);

// How matches of a pattern become pieces (HF SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
SplitBehavior parse_split_behavior(const std::string& name, const std::string& context);

// Cuts `s` at `matches` (sorted, non-overlapping) per `behavior`; appends the non-empty pieces.
void split_by_matches(const NormalizedString& s, const std::vector<Range>& matches, bool invert,
                      SplitBehavior behavior, std::vector<NormalizedString>& out);

}  // namespace magix::text
