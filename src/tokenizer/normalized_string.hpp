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
  // All bytes of one normalized character share the same range.
  std::vector<Range> align;
  size_t original_begin = 0, original_end = 0;  // the original range this piece covers

  // Identity alignment: text == original.substr(begin, text.size()).
  static NormalizedString from_original(std::string_view text, size_t begin);

  bool empty() const { return text.empty(); }
  // Original range covered by normalized bytes [b, e); e > b.
  Range original_range(size_t b, size_t e) const { return {align[b].first, align[e - 1].second}; }
  NormalizedString slice(size_t b, size_t e) const;

  // Appends `piece` whose bytes all come from original range `from`.
  void append(std::string_view piece, Range from);
};

}  // namespace magix::text
