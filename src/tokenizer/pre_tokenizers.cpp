#include "tokenizer/pre_tokenizers.hpp"

#include <algorithm>

#include "magix/error.hpp"
#include "tokenizer/normalizers.hpp"
#include "tokenizer/tokenizer_regex.hpp"
#include "tokenizer/unicode.hpp"

namespace magix::text {
namespace {

using nlohmann::json;

// GPT-2's pattern, used by ByteLevel when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Applies `fn(piece, out)` to every piece.
template <typename Fn>
void for_each_piece(std::vector<NormalizedString>& pieces, Fn&& fn) {
  std::vector<NormalizedString> out;
  out.reserve(pieces.size());
  for (const auto& p : pieces) fn(p, out);
  pieces = std::move(out);
}

class SequencePreTokenizer final : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  void split(std::vector<NormalizedString>& pieces) const override {
    for (const auto& p : parts) p->split(pieces);
  }
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  Pattern pattern;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  void split(std::vector<NormalizedString>& pieces) const override {
    std::vector<Range> matches;
    for_each_piece(pieces, [&](const NormalizedString& p, std::vector<NormalizedString>& out) {
      matches.clear();
      pattern.find_all(p.text, matches);
      split_by_matches(p, matches, invert, behavior, out);
    });
  }
};

// Maps every byte to the GPT-2 alphabet (after an optional regex split and prefix space).
class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  bool add_prefix_space = false;
  std::unique_ptr<Regex> regex;  // null when use_regex is false
  void split(std::vector<NormalizedString>& pieces) const override {
    std::vector<Range> matches;
    for_each_piece(pieces, [&](const NormalizedString& p, std::vector<NormalizedString>& out) {
      NormalizedString s = p;
      if (add_prefix_space && !s.text.empty() && s.text[0] != ' ') {
        s.text = " " + s.text;
        s.align.insert(s.align.begin(), s.align.front());
      }
      if (regex) {
        matches.clear();
        regex->find_all(s.text, matches);
        split_by_matches(s, matches, false, SplitBehavior::kIsolated, out);
      } else if (!s.empty()) {
        out.push_back(std::move(s));
      }
    });
    const ByteLevelAlphabet& alphabet = byte_level_alphabet();
    for (auto& p : pieces) {
      NormalizedString m;
      m.original_begin = p.original_begin;
      m.original_end = p.original_end;
      m.text.reserve(p.text.size() * 2);
      m.align.reserve(p.text.size() * 2);
      for (size_t i = 0; i < p.text.size(); ++i) {
        // Bytes of one character all carry the character's range.
        m.append(alphabet.byte_to_utf8[static_cast<unsigned char>(p.text[i])], p.align[i]);
      }
      p = std::move(m);
    }
  }
};

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  std::string replacement = "\xE2\x96\x81";  // U+2581
  enum class Prepend { kAlways, kFirst, kNever } prepend = Prepend::kAlways;
  bool split_words = true;
  void split(std::vector<NormalizedString>& pieces) const override {
    const Pattern space = Pattern::literal(" ");
    const Pattern rep = Pattern::literal(replacement);
    std::vector<Range> matches;
    for_each_piece(pieces, [&](const NormalizedString& p, std::vector<NormalizedString>& out) {
      NormalizedString s = p;
      replace_all(s, space, replacement);
      const bool starts = s.text.compare(0, replacement.size(), replacement) == 0;
      const bool first = !s.empty() && s.align.front().first == 0;
      if (!s.empty() && !starts &&
          (prepend == Prepend::kAlways || (prepend == Prepend::kFirst && first))) {
        s.text = replacement + s.text;
        s.align.insert(s.align.begin(), replacement.size(), s.align.front());
      }
      if (split_words) {
        matches.clear();
        rep.find_all(s.text, matches);
        split_by_matches(s, matches, false, SplitBehavior::kMergedWithNext, out);
      } else if (!s.empty()) {
        out.push_back(std::move(s));
      }
    });
  }
};

class RegexSplitPreTokenizer final : public PreTokenizer {
 public:
  RegexSplitPreTokenizer(const char* pattern, bool invert, SplitBehavior b, const std::string& ctx)
      : regex_(pattern, ctx), invert_(invert), behavior_(b) {}
  void split(std::vector<NormalizedString>& pieces) const override {
    std::vector<Range> matches;
    for_each_piece(pieces, [&](const NormalizedString& p, std::vector<NormalizedString>& out) {
      matches.clear();
      regex_.find_all(p.text, matches);
      split_by_matches(p, matches, invert_, behavior_, out);
    });
  }

 private:
  Regex regex_;
  bool invert_;
  SplitBehavior behavior_;
};

}  // namespace

SplitBehavior parse_split_behavior(const std::string& name, const std::string& context) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  MAGIX_FAIL("{}: unknown split behavior '{}'", context, name);
}

void split_by_matches(const NormalizedString& s, const std::vector<Range>& matches, bool invert,
                      SplitBehavior behavior, std::vector<NormalizedString>& out) {
  if (s.empty()) return;
  // Segments covering s: (range, is_match).
  std::vector<std::pair<Range, bool>> segs;
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (b > prev) segs.push_back({{prev, b}, invert});
    segs.push_back({{b, e}, !invert});
    prev = e;
  }
  if (prev < s.text.size()) segs.push_back({{prev, s.text.size()}, invert});

  std::vector<Range> pieces;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const auto& [r, m] : segs) {
        if (!m) pieces.push_back(r);
      }
      break;
    case SplitBehavior::kIsolated:
      for (const auto& [r, m] : segs) pieces.push_back(r);
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const auto& [r, m] : segs) {
        if (m && !previous_match && !pieces.empty()) {
          pieces.back().second = r.second;
        } else {
          pieces.push_back(r);
        }
        previous_match = m;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->second && !previous_match && !pieces.empty()) {
          pieces.back().first = it->first.first;
        } else {
          pieces.push_back(it->first);
        }
        previous_match = it->second;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
    case SplitBehavior::kContiguous:
      for (size_t i = 0; i < segs.size(); ++i) {
        if (i > 0 && segs[i].second == previous_match) {
          pieces.back().second = segs[i].first.second;
        } else {
          pieces.push_back(segs[i].first);
        }
        previous_match = segs[i].second;
      }
      break;
  }
  for (const auto& [b, e] : pieces) {
    if (e > b) out.push_back(s.slice(b, e));
  }
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& source) {
  if (j.is_null()) return nullptr;
  MAGIX_CHECK(j.is_object() && j.contains("type"),
              "{}: pre_tokenizer must be an object with a 'type'", source);
  const std::string type = j.at("type").get<std::string>();
  const std::string ctx = source + ": pre_tokenizer " + type;
  if (type == "Sequence") {
    auto p = std::make_unique<SequencePreTokenizer>();
    for (const auto& part : j.at("pretokenizers"))
      p->parts.push_back(make_pre_tokenizer(part, source));
    return p;
  }
  if (type == "Split") {
    auto p = std::make_unique<SplitPreTokenizer>();
    p->pattern = parse_pattern(j.at("pattern"), ctx);
    p->behavior = parse_split_behavior(j.at("behavior").get<std::string>(), ctx);
    p->invert = j.value("invert", false);
    return p;
  }
  if (type == "ByteLevel") {
    auto p = std::make_unique<ByteLevelPreTokenizer>();
    p->add_prefix_space = j.value("add_prefix_space", false);
    if (j.value("use_regex", true)) p->regex = std::make_unique<Regex>(kGpt2Pattern, ctx);
    return p;
  }
  if (type == "Metaspace") {
    auto p = std::make_unique<MetaspacePreTokenizer>();
    if (j.contains("replacement")) p->replacement = j.at("replacement").get<std::string>();
    p->split_words = j.value("split", true);
    std::string scheme = j.value("prepend_scheme", std::string());
    if (scheme.empty()) scheme = j.value("add_prefix_space", true) ? "always" : "never";
    if (scheme == "always") {
      p->prepend = MetaspacePreTokenizer::Prepend::kAlways;
    } else if (scheme == "first") {
      p->prepend = MetaspacePreTokenizer::Prepend::kFirst;
    } else if (scheme == "never") {
      p->prepend = MetaspacePreTokenizer::Prepend::kNever;
    } else {
      MAGIX_FAIL("{}: unknown prepend_scheme '{}'", ctx, scheme);
    }
    return p;
  }
  if (type == "Whitespace") {
    return std::make_unique<RegexSplitPreTokenizer>(R"(\w+|[^\w\s]+)", true,
                                                    SplitBehavior::kRemoved, ctx);
  }
  if (type == "WhitespaceSplit") {
    return std::make_unique<RegexSplitPreTokenizer>(R"(\s+)", false, SplitBehavior::kRemoved, ctx);
  }
  if (type == "Digits") {
    const bool individual = j.value("individual_digits", false);
    return std::make_unique<RegexSplitPreTokenizer>(
        R"(\p{N})", false, individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, ctx);
  }
  MAGIX_FAIL(
      "{}: unsupported pre_tokenizer type '{}' (supported: Sequence, Split, ByteLevel, "
      "Metaspace, Whitespace, WhitespaceSplit, Digits)",
      source, type);
}

}  // namespace magix::text
