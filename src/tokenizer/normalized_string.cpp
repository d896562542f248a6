#include "tokenizer/normalized_string.hpp"

#include <algorithm>

namespace magix::text {

NormalizedString NormalizedString::from_original(std::string_view text, size_t begin) {
  NormalizedString n;
  n.text.assign(text);
  n.align.resize(text.size());
  // Characters are aligned as a whole: every byte of a multibyte character maps to its range.
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    for (size_t k = 0; k < len && i + k < text.size(); ++k)
      n.align[i + k] = {begin + i, begin + i + len};
    i += len;
  }
  n.original_begin = begin;
  n.original_end = begin + text.size();
  return n;
}

NormalizedString NormalizedString::identity_of(std::string_view text, size_t begin) {
  NormalizedString n;
  n.text.assign(text);
  n.identity = true;
  n.original_begin = begin;
  n.original_end = begin + text.size();
  return n;
}

void NormalizedString::materialize() {
  if (!identity) return;
  NormalizedString full = from_original(text, original_begin);
  align = std::move(full.align);
  identity = false;
}

namespace {

bool is_continuation(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

size_t lead_len(unsigned char c) {  // as from_original counts a character's bytes
  return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

}  // namespace

size_t NormalizedString::char_begin(size_t i) const {
  while (i > 0 && is_continuation(text[i])) --i;
  return original_begin + i;
}

size_t NormalizedString::char_end(size_t i) const {
  const size_t lead = char_begin(i) - original_begin;
  return original_begin + lead + lead_len(static_cast<unsigned char>(text[lead]));
}

NormalizedString NormalizedString::slice(size_t b, size_t e) const {
  const auto boundary = [&](size_t i) { return i >= text.size() || !is_continuation(text[i]); };
  if (identity && !(boundary(b) && boundary(e))) {
    NormalizedString full = *this;
    full.materialize();
    return full.slice(b, e);
  }
  if (identity) {
    NormalizedString n = identity_of(std::string_view(text).substr(b, e - b), original_begin + b);
    if (e <= b) n.original_begin = n.original_end = original_begin + std::min(b, text.size());
    return n;
  }
  NormalizedString n;
  n.text = text.substr(b, e - b);
  n.align.assign(align.begin() + static_cast<std::ptrdiff_t>(b),
                 align.begin() + static_cast<std::ptrdiff_t>(e));
  if (e > b) {
    n.original_begin = align[b].first;
    n.original_end = align[e - 1].second;
  } else {
    n.original_begin = n.original_end = b < align.size() ? align[b].first : original_end;
  }
  return n;
}

void NormalizedString::append(std::string_view piece, Range from) {
  text.append(piece);
  align.insert(align.end(), piece.size(), from);
}

}  // namespace magix::text
