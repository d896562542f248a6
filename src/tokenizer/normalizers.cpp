#include "tokenizer/normalizers.hpp"

#include <algorithm>

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>

#include "magix/error.hpp"
#include "magix/json_parse.hpp"
#include "tokenizer/unicode.hpp"

namespace magix::text {
namespace {

using nlohmann::json;

class SequenceNormalizer final : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> parts;
  void normalize(NormalizedString& s) const override {
    for (const auto& p : parts) p->normalize(s);
  }
};

// Prepends `prefix` to a non-empty string; the prefix aligns to the first character.
class PrependNormalizer final : public Normalizer {
 public:
  std::string prefix;
  void normalize(NormalizedString& s) const override {
    if (s.empty()) return;
    s.text = prefix + s.text;
    s.align.insert(s.align.begin(), prefix.size(), s.align.front());
  }
};

class ReplaceNormalizer final : public Normalizer {
 public:
  Pattern pattern;
  std::string content;
  void normalize(NormalizedString& s) const override { replace_all(s, pattern, content); }
};

// Unicode normalization forms through ICU. The text is cut at normalization boundaries; a segment
// that changes aligns all its output to the segment's original range.
class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(const std::string& form) {
    UErrorCode err = U_ZERO_ERROR;
    if (form == "NFC") norm_ = icu::Normalizer2::getNFCInstance(err);
    if (form == "NFD") norm_ = icu::Normalizer2::getNFDInstance(err);
    if (form == "NFKC") norm_ = icu::Normalizer2::getNFKCInstance(err);
    if (form == "NFKD") norm_ = icu::Normalizer2::getNFKDInstance(err);
    MAGIX_CHECK(U_SUCCESS(err) && norm_ != nullptr, "normalizer {}: ICU instance unavailable",
                form);
  }
  void normalize(NormalizedString& s) const override {
    UErrorCode err = U_ZERO_ERROR;
    const icu::UnicodeString whole = icu::UnicodeString::fromUTF8(s.text);
    if (norm_->isNormalized(whole, err) && U_SUCCESS(err)) return;
    NormalizedString out;
    out.original_begin = s.original_begin;
    out.original_end = s.original_end;
    size_t seg = 0;  // byte where the current segment starts
    for (size_t i = 0; i <= s.text.size();) {
      const bool at_end = i == s.text.size();
      const char32_t cp = at_end ? 0 : utf8_decode(s.text, i);
      if (at_end || (i > seg && norm_->hasBoundaryBefore(static_cast<UChar32>(cp)))) {
        flush(s, seg, i, out);
        seg = i;
      }
      if (at_end) break;
      i += utf8_len(static_cast<unsigned char>(s.text[i]));
    }
    s = std::move(out);
  }

 private:
  void flush(const NormalizedString& s, size_t b, size_t e, NormalizedString& out) const {
    if (e <= b) return;
    UErrorCode err = U_ZERO_ERROR;
    const std::string_view piece(s.text.data() + b, e - b);
    const icu::UnicodeString u = icu::UnicodeString::fromUTF8(
        icu::StringPiece(piece.data(), static_cast<int32_t>(piece.size())));
    const icu::UnicodeString n = norm_->normalize(u, err);
    MAGIX_CHECK(U_SUCCESS(err), "Unicode normalization failed: {}", u_errorName(err));
    std::string utf8;
    n.toUTF8String(utf8);
    if (utf8 == piece) {
      out.text.append(piece);
      out.align.insert(out.align.end(), s.align.begin() + static_cast<std::ptrdiff_t>(b),
                       s.align.begin() + static_cast<std::ptrdiff_t>(e));
      return;
    }
    // Output character k aligns with input character min(k, last): a composed character takes
    // its base character's range, extra decomposed characters the last one's (as HF does).
    std::vector<Range> in_ranges;
    for (size_t i = b; i < e; i += utf8_len(static_cast<unsigned char>(s.text[i])))
      in_ranges.push_back(s.align[i]);
    size_t k = 0;
    for (size_t i = 0; i < utf8.size(); ++k) {
      const size_t n = utf8_len(static_cast<unsigned char>(utf8[i]));
      out.append(std::string_view(utf8).substr(i, n), in_ranges[std::min(k, in_ranges.size() - 1)]);
      i += n;
    }
  }

  const icu::Normalizer2* norm_ = nullptr;
};

// Full Unicode lowercase mapping, character by character.
class LowercaseNormalizer final : public Normalizer {
 public:
  void normalize(NormalizedString& s) const override {
    NormalizedString out;
    out.original_begin = s.original_begin;
    out.original_end = s.original_end;
    out.text.reserve(s.text.size());
    for (size_t i = 0; i < s.text.size();) {
      const size_t n = utf8_len(static_cast<unsigned char>(s.text[i]));
      const char32_t cp = utf8_decode(s.text, i);
      std::string lower;
      if (cp < 0x80) {
        lower += static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
      } else {
        UChar src[2], dst[8];
        int32_t src_len = 0;
        U16_APPEND_UNSAFE(src, src_len, static_cast<UChar32>(cp));
        UErrorCode err = U_ZERO_ERROR;
        const int32_t len = u_strToLower(dst, 8, src, src_len, "", &err);
        MAGIX_CHECK(U_SUCCESS(err), "Lowercase: ICU error {}", u_errorName(err));
        icu::UnicodeString(dst, len).toUTF8String(lower);
      }
      out.append(lower, s.align[i]);
      i += n;
    }
    s = std::move(out);
  }
};

class StripNormalizer final : public Normalizer {
 public:
  bool left = true, right = true;
  void normalize(NormalizedString& s) const override {
    size_t b = 0, e = s.text.size();
    if (left) {
      while (b < e && is_whitespace(utf8_decode(s.text, b)))
        b += utf8_len(static_cast<unsigned char>(s.text[b]));
    }
    if (right) {
      while (e > b) {
        size_t p = e - 1;
        while (p > b && (static_cast<unsigned char>(s.text[p]) & 0xC0) == 0x80) --p;
        if (!is_whitespace(utf8_decode(s.text, p))) break;
        e = p;
      }
    }
    if (b != 0 || e != s.text.size()) s = s.slice(b, e);
  }
};

}  // namespace

Pattern parse_pattern(const json& j, const std::string& context) {
  MAGIX_CHECK(j.is_object(), "{}: 'pattern' must be an object with 'String' or 'Regex'", context);
  const std::string where = context + ": pattern";
  if (j.contains("String")) return Pattern::literal(json_get<std::string>(j, "String", where));
  if (j.contains("Regex")) return Pattern::regex(json_get<std::string>(j, "Regex", where), context);
  MAGIX_FAIL("{}: 'pattern' must have 'String' or 'Regex', got {}", context, j.dump());
}

void replace_all(NormalizedString& s, const Pattern& pattern, const std::string& content) {
  std::vector<Range> matches;
  pattern.find_all(s.text, matches);
  if (matches.empty()) return;
  NormalizedString out;
  out.original_begin = s.original_begin;
  out.original_end = s.original_end;
  out.text.reserve(s.text.size() + matches.size() * content.size());
  out.align.reserve(out.text.capacity());
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    out.text.append(s.text, prev, b - prev);
    out.align.insert(out.align.end(), s.align.begin() + static_cast<std::ptrdiff_t>(prev),
                     s.align.begin() + static_cast<std::ptrdiff_t>(b));
    out.append(content, s.original_range(b, e));
    prev = e;
  }
  out.text.append(s.text, prev);
  out.align.insert(out.align.end(), s.align.begin() + static_cast<std::ptrdiff_t>(prev),
                   s.align.end());
  s = std::move(out);
}

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& source) {
  if (j.is_null()) return nullptr;
  MAGIX_CHECK(j.is_object() && j.contains("type"), "{}: normalizer must be an object with a 'type'",
              source);
  const std::string type = json_get<std::string>(j, "type", source + ": normalizer");
  const std::string ctx = source + ": normalizer " + type;
  if (type == "Sequence") {
    auto n = std::make_unique<SequenceNormalizer>();
    const nlohmann::json& parts = json_array_at(j, "normalizers", ctx);
    for (size_t i = 0; i < parts.size(); ++i) {
      // each part an object: a null one would be a missing stage (HF tokenizers refuses it too)
      json_expect_object(parts[i], fmt::format("{}[{}]", json_key_name(ctx, "normalizers"), i));
      n->parts.push_back(make_normalizer(parts[i], source));
    }
    return n;
  }
  if (type == "Prepend") {
    auto n = std::make_unique<PrependNormalizer>();
    n->prefix = json_get<std::string>(j, "prepend", ctx);
    return n;
  }
  if (type == "Replace") {
    auto n = std::make_unique<ReplaceNormalizer>();
    n->pattern = parse_pattern(json_object_at(j, "pattern", ctx), ctx);
    n->content = json_get<std::string>(j, "content", ctx);
    return n;
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    return std::make_unique<UnicodeNormalizer>(type);
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip") {
    auto n = std::make_unique<StripNormalizer>();
    n->left = json_value<bool>(j, "strip_left", true, ctx);
    n->right = json_value<bool>(j, "strip_right", true, ctx);
    return n;
  }
  MAGIX_FAIL(
      "{}: unsupported normalizer type '{}' (supported: Sequence, Prepend, Replace, NFC, NFD, "
      "NFKC, NFKD, Lowercase, Strip)",
      source, type);
}

}  // namespace magix::text
