// A piece of text being normalized, with per-byte alignment to the original input, so that token
// offsets can be reported as byte ranges of the text the user passed in.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace magix::text {

using Range = std::pair<size_t, size_t>;  // [begin, end) byte offsets

struct NormalizedString {
  std::string text;
  // align[b] = original byte range that normalized byte b came from; align.size() == text.size().
  // All bytes of one normalized character share the same range. Empty while `identity`.
  std::vector<Range> align;
  size_t original_begin = 0, original_end = 0;  // the original range this piece covers
  // text == original.substr(original_begin, text.size()) and `align` is implied (not stored:
  // 16 bytes per byte of a long text); materialize() stores it before `align` is used.
  bool identity = false;

  // Identity alignment: text == original.substr(begin, text.size()), `align` stored.
  static NormalizedString from_original(std::string_view text, size_t begin);
  // The same without storing `align` (until materialize()).
  static NormalizedString identity_of(std::string_view text, size_t begin);
  void materialize();  // stores `align` of an identity string

  bool empty() const { return text.empty(); }
  // Original range covered by normalized bytes [b, e); e > b.
  Range original_range(size_t b, size_t e) const {
    if (identity) return {char_begin(b), char_end(e - 1)};
    return {align[b].first, align[e - 1].second};
  }
  // Bytes [b, e); a slice of an identity string cut at character boundaries stays identity.
  NormalizedString slice(size_t b, size_t e) const;

  // Appends `piece` whose bytes all come from original range `from`.
  void append(std::string_view piece, Range from);

 private:
  // Original range of the character holding byte i of an identity string.
  size_t char_begin(size_t i) const;
  size_t char_end(size_t i) const;
};

}  // namespace magix::text
