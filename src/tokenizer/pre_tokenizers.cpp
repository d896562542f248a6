#include "tokenizer/pre_tokenizers.hpp"

#include <algorithm>

#include "magix/error.hpp"
#include "magix/json_parse.hpp"
#include "tokenizer/normalizers.hpp"
#include "tokenizer/tokenizer_regex.hpp"
#include "tokenizer/unicode.hpp"

namespace magix::text {
namespace {

using nlohmann::json;

// GPT-2's pattern, used by ByteLevel when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class SequencePreTokenizer final : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  void split(NormalizedString piece, const PieceSink& emit) const override {
    split_from(0, std::move(piece), emit);
  }

 private:
  // Words of `piece` through parts[i..]: each word of part i goes through the next parts first.
  void split_from(size_t i, NormalizedString piece, const PieceSink& emit) const {
    if (i == parts.size()) {
      if (!piece.empty()) emit(std::move(piece));
      return;
    }
    parts[i]->split(std::move(piece),
                    [&](NormalizedString&& p) { split_from(i + 1, std::move(p), emit); });
  }
};

// Cuts `s` at the matches of `pattern` (a Pattern or a Regex).
template <typename P>
void split_at(const P& pattern, const NormalizedString& s, bool invert, SplitBehavior behavior,
              const PieceSink& emit) {
  MatchSplitter splitter(s, invert, behavior, emit);
  pattern.find_each(s.text, [&](size_t b, size_t e) { splitter.match({b, e}); });
  splitter.finish();
}

class SplitPreTokenizer final : public PreTokenizer {
 public:
  Pattern pattern;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  void split(NormalizedString piece, const PieceSink& emit) const override {
    split_at(pattern, piece, invert, behavior, emit);
  }
};

// Maps every byte to the GPT-2 alphabet (after an optional regex split and prefix space).
class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  bool add_prefix_space = false;
  std::unique_ptr<Regex> regex;  // null when use_regex is false
  void split(NormalizedString s, const PieceSink& emit) const override {
    if (add_prefix_space && !s.text.empty() && s.text[0] != ' ') {
      s.materialize();
      s.text = " " + s.text;
      s.align.insert(s.align.begin(), s.align.front());
    }
    const auto map_bytes = [&](NormalizedString&& p) {
      p.materialize();
      const ByteLevelAlphabet& alphabet = byte_level_alphabet();
      NormalizedString m;
      m.original_begin = p.original_begin;
      m.original_end = p.original_end;
      m.text.reserve(p.text.size() * 2);
      m.align.reserve(p.text.size() * 2);
      for (size_t i = 0; i < p.text.size(); ++i) {
        // Bytes of one character all carry the character's range.
        m.append(alphabet.byte_to_utf8[static_cast<unsigned char>(p.text[i])], p.align[i]);
      }
      emit(std::move(m));
    };
    if (regex) {
      split_at(*regex, s, false, SplitBehavior::kIsolated, map_bytes);
    } else if (!s.empty()) {
      map_bytes(std::move(s));
    }
  }
};

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  std::string replacement = "\xE2\x96\x81";  // U+2581
  enum class Prepend { kAlways, kFirst, kNever } prepend = Prepend::kAlways;
  bool split_words = true;
  void split(NormalizedString s, const PieceSink& emit) const override {
    if (split_words && replacement.size() == utf8_len(static_cast<unsigned char>(replacement[0])) &&
        replacement != " ") {
      split_by_word(s, emit);
      return;
    }
    s.materialize();
    replace_all(s, Pattern::literal(" "), replacement);
    const bool starts = s.text.compare(0, replacement.size(), replacement) == 0;
    const bool first = !s.empty() && s.align.front().first == 0;
    if (!s.empty() && !starts &&
        (prepend == Prepend::kAlways || (prepend == Prepend::kFirst && first))) {
      s.text = replacement + s.text;
      s.align.insert(s.align.begin(), replacement.size(), s.align.front());
    }
    if (split_words) {
      split_at(Pattern::literal(replacement), s, false, SplitBehavior::kMergedWithNext, emit);
    } else if (!s.empty()) {
      emit(std::move(s));
    }
  }

 private:
  // The same words as above, without rewriting the whole piece first: with a one-character
  // replacement, the words of the rewritten text start at the spaces and replacements of `s`
  // (one for one), so `s` is cut there and each word rewritten on its own (the first also gets
  // the prepended replacement, which joins the first word).
  void split_by_word(const NormalizedString& s, const PieceSink& emit) const {
    if (s.empty()) return;
    const bool starts = s.text[0] == ' ' || s.text.compare(0, replacement.size(), replacement) == 0;
    const bool first = s.original_range(0, 1).first == 0;
    const bool add =
        !starts && (prepend == Prepend::kAlways || (prepend == Prepend::kFirst && first));
    bool first_word = true;
    const PieceSink rewrite = [&](NormalizedString&& word) {
      word.materialize();
      if (word.text[0] == ' ') {
        replace_all(word, Pattern::literal(" "), replacement);
      }
      if (first_word && add) {
        word.text = replacement + word.text;
        word.align.insert(word.align.begin(), replacement.size(), word.align.front());
      }
      first_word = false;
      emit(std::move(word));
    };
    MatchSplitter splitter(s, false, SplitBehavior::kMergedWithNext, rewrite);
    for (size_t i = 0; i < s.text.size();) {
      if (s.text[i] == ' ') {
        splitter.match({i, i + 1});
        i += 1;
      } else if (s.text.compare(i, replacement.size(), replacement) == 0) {
        splitter.match({i, i + replacement.size()});
        i += replacement.size();
      } else {
        i += utf8_len(static_cast<unsigned char>(s.text[i]));
      }
    }
    splitter.finish();
  }
};

class RegexSplitPreTokenizer final : public PreTokenizer {
 public:
  RegexSplitPreTokenizer(const char* pattern, bool invert, SplitBehavior b, const std::string& ctx)
      : regex_(pattern, ctx), invert_(invert), behavior_(b) {}
  void split(NormalizedString piece, const PieceSink& emit) const override {
    split_at(regex_, piece, invert_, behavior_, emit);
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

void MatchSplitter::match(Range r) {
  if (r.first > done_) segment({done_, r.first}, invert_);
  segment(r, !invert_);
  done_ = r.second;
}

void MatchSplitter::finish() {
  if (done_ < s_.text.size()) segment({done_, s_.text.size()}, invert_);
  done_ = s_.text.size();
  flush();
}

void MatchSplitter::piece(Range r) {
  if (r.second > r.first) emit_(s_.slice(r.first, r.second));
}

void MatchSplitter::flush() {
  if (pending_) piece(*pending_);
  pending_.reset();
}

// One segment (a match or the text between two): what becomes of it depends on the behavior and
// on the segment before it; at most one piece waits (`pending_`) for the next segment.
void MatchSplitter::segment(Range r, bool is_match) {
  switch (behavior_) {
    case SplitBehavior::kRemoved:
      if (!is_match) piece(r);
      break;
    case SplitBehavior::kIsolated:
      piece(r);
      break;
    case SplitBehavior::kMergedWithPrevious:  // a match joins the non-match before it
      if (is_match && !previous_match_ && pending_) {
        pending_->second = r.second;
      } else {
        flush();
        pending_ = r;
      }
      break;
    case SplitBehavior::kMergedWithNext:  // a match joins the non-match after it
      if (is_match) {
        flush();
        pending_ = r;
      } else if (pending_) {
        pending_->second = r.second;
        flush();
      } else {
        piece(r);
      }
      break;
    case SplitBehavior::kContiguous:  // consecutive segments of one kind form one piece
      if (pending_ && is_match == previous_match_) {
        pending_->second = r.second;
      } else {
        flush();
        pending_ = r;
      }
      break;
  }
  previous_match_ = is_match;
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& source) {
  if (j.is_null()) return nullptr;
  MAGIX_CHECK(j.is_object() && j.contains("type"),
              "{}: pre_tokenizer must be an object with a 'type'", source);
  const std::string type = json_get<std::string>(j, "type", source + ": pre_tokenizer");
  const std::string ctx = source + ": pre_tokenizer " + type;
  if (type == "Sequence") {
    auto p = std::make_unique<SequencePreTokenizer>();
    const nlohmann::json& parts = json_array_at(j, "pretokenizers", ctx);
    for (size_t i = 0; i < parts.size(); ++i) {
      // each part an object: a null one would be a missing stage (HF tokenizers refuses it too)
      json_expect_object(parts[i], fmt::format("{}[{}]", json_key_name(ctx, "pretokenizers"), i));
      p->parts.push_back(make_pre_tokenizer(parts[i], source));
    }
    return p;
  }
  if (type == "Split") {
    auto p = std::make_unique<SplitPreTokenizer>();
    p->pattern = parse_pattern(json_object_at(j, "pattern", ctx), ctx);
    p->behavior = parse_split_behavior(json_get<std::string>(j, "behavior", ctx), ctx);
    p->invert = json_value<bool>(j, "invert", false, ctx);
    return p;
  }
  if (type == "ByteLevel") {
    auto p = std::make_unique<ByteLevelPreTokenizer>();
    p->add_prefix_space = json_value<bool>(j, "add_prefix_space", false, ctx);
    if (json_value<bool>(j, "use_regex", true, ctx))
      p->regex = std::make_unique<Regex>(kGpt2Pattern, ctx);
    return p;
  }
  if (type == "Metaspace") {
    auto p = std::make_unique<MetaspacePreTokenizer>();
    p->replacement = json_value<std::string>(j, "replacement", p->replacement, ctx);
    p->split_words = json_value<bool>(j, "split", true, ctx);
    std::string scheme = json_value<std::string>(j, "prepend_scheme", "", ctx);
    if (scheme.empty())
      scheme = json_value<bool>(j, "add_prefix_space", true, ctx) ? "always" : "never";
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
    const bool individual = json_value<bool>(j, "individual_digits", false, ctx);
    return std::make_unique<RegexSplitPreTokenizer>(
        R"(\p{N})", false, individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, ctx);
  }
  MAGIX_FAIL(
      "{}: unsupported pre_tokenizer type '{}' (supported: Sequence, Split, ByteLevel, "
      "Metaspace, Whitespace, WhitespaceSplit, Digits)",
      source, type);
}

}  // namespace magix::text
