#include "tokenizer/normalized_string.hpp"

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

NormalizedString NormalizedString::slice(size_t b, size_t e) const {
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
