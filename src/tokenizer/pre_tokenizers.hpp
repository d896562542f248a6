// tokenizer.json "pre_tokenizer": Split, ByteLevel, Metaspace, Sequence, Whitespace,
// WhitespaceSplit, Digits. A pre-tokenizer cuts normalized text into words for the model.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/normalized_string.hpp"

namespace magix::text {

// Receives the words of a pre-tokenizer, in order.
using PieceSink = std::function<void(NormalizedString&&)>;

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Cuts `piece` into words and passes each to `emit`, left to right (empty words are dropped).
  // The words of one piece never depend on another piece, so a long text is pre-tokenized and
  // encoded one word at a time: memory does not grow with the number of words.
  virtual void split(NormalizedString piece, const PieceSink& emit) const = 0;
};

// null -> nullptr; an unknown "type" is an error naming it and `source`.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j,
                                                 const std::string& source);

// How matches of a pattern become pieces (HF SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
SplitBehavior parse_split_behavior(const std::string& name, const std::string& context);

// Cuts `s` at matches (given one at a time, sorted, non-overlapping) per `behavior`, as HF
// tokenizers' split does, and passes the non-empty pieces to `emit` as soon as they are known.
class MatchSplitter {
 public:
  MatchSplitter(const NormalizedString& s, bool invert, SplitBehavior behavior,
                const PieceSink& emit)
      : s_(s), invert_(invert), behavior_(behavior), emit_(emit) {}
  void match(Range r);  // the next match [b, e)
  void finish();        // after the last match

 private:
  void segment(Range r, bool is_match);
  void piece(Range r);
  void flush();
  const NormalizedString& s_;
  bool invert_;
  SplitBehavior behavior_;
  const PieceSink& emit_;
  size_t done_ = 0;               // bytes of s_ covered by segments so far
  bool previous_match_ = false;   // whether the previous segment was a match
  std::optional<Range> pending_;  // a piece that may still grow
};

}  // namespace magix::text
