#include "tokenizer/decoders.hpp"

#include "magix/error.hpp"
#include "magix/json_parse.hpp"
#include "tokenizer/normalized_string.hpp"
#include "tokenizer/normalizers.hpp"
#include "tokenizer/unicode.hpp"

namespace magix::text {
namespace {

using nlohmann::json;

class SequenceDecoder final : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> parts;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts) p->decode_chain(tokens);
  }
};

// GPT-2 alphabet back to bytes; a token with a character outside the alphabet keeps its own
// bytes. The result is one string, invalid UTF-8 replaced by U+FFFD.
class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    const ByteLevelAlphabet& alphabet = byte_level_alphabet();
    std::string bytes, tok_bytes;
    for (const auto& t : tokens) {
      tok_bytes.clear();
      bool mapped = true;
      for (size_t i = 0; i < t.size() && mapped;) {
        const Utf8Step st = utf8_step(t, i);
        const int b = st.valid ? alphabet.byte_of(st.cp) : -1;
        if (b < 0)
          mapped = false;
        else
          tok_bytes += static_cast<char>(b);
        i += st.len;
      }
      bytes += mapped ? tok_bytes : t;
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

// Runs of <0xHH> tokens become their bytes when these form valid UTF-8, else one U+FFFD per token.
class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string bytes;
    size_t count = 0;
    const auto flush = [&] {
      if (count == 0) return;
      if (is_valid_utf8(bytes)) {
        out.push_back(bytes);
      } else {
        for (size_t k = 0; k < count; ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      count = 0;
    };
    for (auto& t : tokens) {
      int v = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        v = 0;
        for (int k = 3; k < 5 && v >= 0; ++k) {
          const char c = t[static_cast<size_t>(k)];
          const int d = c >= '0' && c <= '9'   ? c - '0'
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                               : -1;
          v = d < 0 ? -1 : v * 16 + d;
        }
      }
      if (v >= 0) {
        bytes += static_cast<char>(v);
        ++count;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Per token: removes up to `start` leading and `stop` trailing characters equal to `content`.
class StripDecoder final : public Decoder {
 public:
  std::string content;
  size_t start = 0, stop = 0;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      size_t b = 0, e = t.size();
      for (size_t k = 0;
           k < start && e - b >= content.size() && t.compare(b, content.size(), content) == 0;
           ++k) {
        b += content.size();
      }
      for (size_t k = 0; k < stop && e - b >= content.size() &&
                         t.compare(e - content.size(), content.size(), content) == 0;
           ++k) {
        e -= content.size();
      }
      t = t.substr(b, e - b);
    }
  }
};

class ReplaceDecoder final : public Decoder {
 public:
  Pattern pattern;
  std::string content;
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<Range> matches;
    for (auto& t : tokens) {
      matches.clear();
      pattern.find_all(t, matches);
      if (matches.empty()) continue;
      std::string out;
      size_t prev = 0;
      for (const auto& [b, e] : matches) {
        out.append(t, prev, b - prev);
        out += content;
        prev = e;
      }
      out.append(t, prev);
      t = std::move(out);
    }
  }
};

// The replacement character becomes a space; the first token loses one leading space unless
// the prepend scheme is "never".
class MetaspaceDecoder final : public Decoder {
 public:
  std::string replacement = "\xE2\x96\x81";
  bool strip_first = true;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      for (size_t p = 0; p < t.size();) {
        if (t.compare(p, replacement.size(), replacement) == 0) {
          out += ' ';
          p += replacement.size();
        } else {
          out += t[p++];
        }
      }
      if (i == 0 && strip_first && !out.empty() && out[0] == ' ') out.erase(0, 1);
      tokens[i] = std::move(out);
    }
  }
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& source) {
  if (j.is_null()) return nullptr;
  MAGIX_CHECK(j.is_object() && j.contains("type"), "{}: decoder must be an object with a 'type'",
              source);
  const std::string type = json_get<std::string>(j, "type", source + ": decoder");
  const std::string ctx = source + ": decoder " + type;
  if (type == "Sequence") {
    auto d = std::make_unique<SequenceDecoder>();
    const nlohmann::json& parts = json_array_at(j, "decoders", ctx);
    for (size_t i = 0; i < parts.size(); ++i) {
      // each part an object: a null one would be a missing stage (HF tokenizers refuses it too)
      json_expect_object(parts[i], fmt::format("{}[{}]", json_key_name(ctx, "decoders"), i));
      d->parts.push_back(make_decoder(parts[i], source));
    }
    return d;
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    auto d = std::make_unique<StripDecoder>();
    d->content = json_get<std::string>(j, "content", ctx);
    d->start = json_value<size_t>(j, "start", 0, ctx);
    d->stop = json_value<size_t>(j, "stop", 0, ctx);
    return d;
  }
  if (type == "Replace") {
    auto d = std::make_unique<ReplaceDecoder>();
    d->pattern = parse_pattern(json_object_at(j, "pattern", ctx), ctx);
    d->content = json_get<std::string>(j, "content", ctx);
    return d;
  }
  if (type == "Metaspace") {
    auto d = std::make_unique<MetaspaceDecoder>();
    d->replacement = json_value<std::string>(j, "replacement", d->replacement, ctx);
    std::string scheme = json_value<std::string>(j, "prepend_scheme", "", ctx);
    if (scheme.empty())
      scheme = json_value<bool>(j, "add_prefix_space", true, ctx) ? "always" : "never";
    d->strip_first = scheme != "never";
    return d;
  }
  MAGIX_FAIL(
      "{}: unsupported decoder type '{}' (supported: Sequence, ByteLevel, ByteFallback, Fuse, "
      "Strip, Replace, Metaspace)",
      source, type);
}

}  // namespace magix::text
