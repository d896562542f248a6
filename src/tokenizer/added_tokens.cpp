#include "tokenizer/added_tokens.hpp"

#include <algorithm>

#include "tokenizer/unicode.hpp"

namespace magix::text {
namespace {

// The character ending right before byte `end` (valid UTF-8, end > 0).
char32_t char_before(std::string_view s, size_t end) {
  size_t p = end - 1;
  while (p > 0 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
  return utf8_decode(s, p);
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher() : nodes_(1) {}

int32_t AddedTokenMatcher::child(int32_t node, unsigned char b) const {
  const auto& ch = nodes_[static_cast<size_t>(node)].children;
  const auto it = std::lower_bound(ch.begin(), ch.end(), std::make_pair(b, int32_t{-1}));
  return it != ch.end() && it->first == b ? it->second : -1;
}

void AddedTokenMatcher::add(std::string_view pattern, int32_t token) {
  if (pattern.empty()) return;
  int32_t node = 0;
  for (const char c : pattern) {
    const auto b = static_cast<unsigned char>(c);
    int32_t next = child(node, b);
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_.emplace_back();
      auto& ch = nodes_[static_cast<size_t>(node)].children;
      ch.insert(std::lower_bound(ch.begin(), ch.end(), std::make_pair(b, int32_t{-1})), {b, next});
    }
    node = next;
  }
  // The first token registered for a pattern keeps it.
  if (nodes_[static_cast<size_t>(node)].token < 0) {
    nodes_[static_cast<size_t>(node)].token = token;
    ++count_;
  }
}

std::vector<AddedSplit> AddedTokenMatcher::split(std::string_view text,
                                                 const std::vector<AddedToken>& tokens) const {
  std::vector<AddedSplit> out;
  if (text.empty()) {
    out.push_back({{0, 0}, -1});
    return out;
  }
  size_t start_offset = 0;  // end of the last emitted piece
  size_t pos = 0;           // where the search for the next match starts
  while (pos < text.size() && count_ > 0) {
    // Leftmost-longest match starting at the first position >= pos.
    size_t mstart = pos, mend = 0;
    int32_t mtoken = -1;
    for (; mstart < text.size(); ++mstart) {
      int32_t node = 0;
      for (size_t k = mstart; k < text.size(); ++k) {
        node = child(node, static_cast<unsigned char>(text[k]));
        if (node < 0) break;
        if (nodes_[static_cast<size_t>(node)].token >= 0) {
          mtoken = nodes_[static_cast<size_t>(node)].token;
          mend = k + 1;
        }
      }
      if (mtoken >= 0) break;
    }
    if (mtoken < 0) break;
    pos = mend;
    const AddedToken& tok = tokens[static_cast<size_t>(mtoken)];
    size_t start = mstart, stop = mend;
    if (tok.single_word) {
      const bool start_ok = start == 0 || !is_word_char(char_before(text, start));
      const bool stop_ok = stop == text.size() || !is_word_char(utf8_decode(text, stop));
      if (!start_ok || !stop_ok) continue;
    }
    if (tok.lstrip) {
      size_t s = start;
      while (s > 0 && is_whitespace(char_before(text, s))) {
        size_t p = s - 1;
        while (p > 0 && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
        s = p;
      }
      start = std::max(s, start_offset);
    }
    if (tok.rstrip) {
      while (stop < text.size() && is_whitespace(utf8_decode(text, stop))) {
        stop += utf8_len(static_cast<unsigned char>(text[stop]));
      }
    }
    if (start_offset < start) out.push_back({{start_offset, start}, -1});
    out.push_back({{start, stop}, mtoken});
    start_offset = stop;
  }
  if (start_offset != text.size()) out.push_back({{start_offset, text.size()}, -1});
  return out;
}

}  // namespace magix::text
