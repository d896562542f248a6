// Round trips, streaming, invalid input, long words, byte-fallback validation, lookups.
#include <gtest/gtest.h>

#include <string>

#include "magix/error.hpp"
#include "tokenizer_test_util.hpp"

namespace magix::test {
namespace {

bool valid_utf8(const std::string& s) {
  // Strict check (no overlongs, surrogates or values above U+10FFFF).
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80                   ? 1
               : (c >= 0xC2 && c <= 0xDF) ? 2
               : (c >= 0xE0 && c <= 0xEF) ? 3
               : (c >= 0xF0 && c <= 0xF4) ? 4
                                          : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : c & (0xFF >> (n + 1));
    for (size_t k = 1; k < n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
      return false;
    }
    i += n;
  }
  return true;
}

void check_stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip,
                  const std::string& what) {
  StreamDecoder stream(tok, skip);
  std::string all;
  for (const int32_t id : ids) {
    const std::string piece = stream.push(id);
    ASSERT_TRUE(valid_utf8(piece)) << what;
    all += piece;
  }
  const std::string rest = stream.finish();
  EXPECT_TRUE(valid_utf8(rest)) << what;
  all += rest;
  EXPECT_EQ(all, tok.decode(ids, skip)) << what;
}

// Every fixture tokenizer and the real ones that are present.
std::vector<std::pair<std::string, const Tokenizer*>> all_tokenizers() {
  std::vector<std::pair<std::string, const Tokenizer*>> out;
  for (const char* name : {"trained_bytelevel", "trained_sentencepiece", "trained_metaspace",
                           "trained_misc", "trained_affixes"}) {
    out.emplace_back(name, &fixture_tokenizer(name));
  }
  for (const char* name : {"llama3", "mistral", "gemma3", "qwen3"}) {
    if (const Tokenizer* t = shared_tokenizer(name)) out.emplace_back(name, t);
  }
  return out;
}

TEST(TokenizerRoundTrip, ByteLevelDecodeInvertsEncode) {
  std::vector<std::pair<std::string, const Tokenizer*>> toks = {
      {"trained_bytelevel", &fixture_tokenizer("trained_bytelevel")}};
  if (const Tokenizer* t = shared_tokenizer("llama3")) toks.emplace_back("llama3", t);
  for (const auto& [name, tok] : toks) {
    for (const auto& c : read_cases(name)) {
      // lstrip/rstrip added tokens absorb the spaces around them by design.
      if (c.text.find("<mask>") != std::string::npos || c.text.find("<|sys|>") != std::string::npos)
        continue;
      EXPECT_EQ(tok->decode(tok->encode(c.text, false), false), c.text) << name << ": " << c.text;
      const std::string with_special = tok->decode(tok->encode(c.text, true), false);
      const std::string bos =
          name == "trained_bytelevel" ? "<|bos|>" : "";  // llama3: no bos template
      EXPECT_EQ(with_special, bos + c.text) << name;
    }
  }
}

TEST(TokenizerStream, ConcatenationEqualsDecodeAndPiecesAreValidUtf8) {
  for (const auto& [name, tok] : all_tokenizers()) {
    for (const auto& c : read_cases(name)) {
      check_stream(*tok, c.ids, true, name + ": " + c.text);
      check_stream(*tok, c.ids, false, name + ": " + c.text);
    }
  }
}

TEST(TokenizerStream, HoldsBackIncompleteCharacters) {
  const Tokenizer& tok = fixture_tokenizer("trained_sentencepiece");
  // U+1F600 through byte fallback: <0xF0> <0x9F> <0x98> <0x80>.
  const auto ids = tok.encode("\xF0\x9F\x98\x80", false);
  ASSERT_EQ(ids.size(), 5u);  // "▁" then four byte tokens
  StreamDecoder stream(tok);
  std::string out;
  for (size_t i = 0; i + 1 < ids.size(); ++i) out += stream.push(ids[i]);
  EXPECT_EQ(out, "");  // three of four bytes: nothing complete yet
  out += stream.push(ids.back());
  EXPECT_EQ(out, "\xF0\x9F\x98\x80");
  // A stream cut inside a character: finish() gives U+FFFD for the incomplete bytes.
  StreamDecoder cut(tok);
  std::string partial;
  for (size_t i = 0; i + 1 < ids.size(); ++i) partial += cut.push(ids[i]);
  partial += cut.finish();
  EXPECT_EQ(partial, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(TokenizerInput, InvalidUtf8IsRejectedWithItsByteOffset) {
  const Tokenizer& tok = fixture_tokenizer("trained_bytelevel");
  const auto expect_error = [&](const std::string& text, const std::string& needle) {
    try {
      tok.encode(text);
      ADD_FAILURE() << "no error for invalid UTF-8";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("\xFF", "byte offset 0");
  expect_error("ab\xC3", "byte offset 2");               // truncated 2-byte sequence
  expect_error("abc\xED\xA0\x80", "byte offset 3");      // UTF-16 surrogate
  expect_error("a\xC0\xAF", "byte offset 1");            // overlong
  expect_error("ok \xF4\x90\x80\x80", "byte offset 3");  // above U+10FFFF
}

TEST(TokenizerInput, MegabyteSingleWordFinishes) {
  // 1 MB without spaces: one pre-token for the BPE merge loop (O(n log n) with the heap).
  std::string word;
  while (word.size() < (1u << 20)) word += "abcdefghijklmnopqrstuvwxyz0123456789";
  for (const auto& [name, tok] : all_tokenizers()) {
    const auto ids = tok->encode(word, false);
    EXPECT_GT(ids.size(), 1000u) << name;
    EXPECT_LE(ids.size(), word.size()) << name;  // trained_affixes: one <unk> per character
    if (name != "trained_affixes") {
      EXPECT_LT(ids.size(), word.size()) << name;  // some merges happened
    }
    if (name == "trained_bytelevel" || name == "llama3") {
      EXPECT_EQ(tok->decode(ids), word) << name;
    }
  }
}

std::string minimal_tokenizer_json(const std::string& model_extra, const std::string& vocab_extra,
                                   const std::string& top_extra = "") {
  return R"({"version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": null,
    "post_processor": null, "decoder": null, )" +
         top_extra + R"("model": {"type": "BPE", "vocab": {"<unk>": 0, "a": 1, "b": 2, "ab": 3)" +
         vocab_extra + R"(}, "merges": ["a b"])" + model_extra + "}}";
}

TEST(TokenizerLoad, ByteFallbackNeedsTheByteTokens) {
  // byte_fallback with only <0x41>: 'é' needs <0xC3> which is missing -> an error naming it.
  const auto tok = Tokenizer::from_json_string(minimal_tokenizer_json(
      R"(, "byte_fallback": true, "unk_token": "<unk>")", R"(, "<0x41>": 4)"));
  EXPECT_EQ(tok.encode("abab"), (std::vector<int32_t>{3, 3}));
  try {
    tok.encode("ab\xC3\xA9");
    ADD_FAILURE() << "no error for a missing byte token";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("<0xC3>"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Tokenizer::from_json_string(
                   minimal_tokenizer_json(R"(, "byte_fallback": true)", R"(, "<0xZZ>": 4)")),
               Error);
}

TEST(TokenizerLoad, UnknownComponentTypesAreNamed) {
  for (const std::string comp : {"normalizer", "pre_tokenizer", "post_processor", "decoder"}) {
    std::string json = minimal_tokenizer_json("", "");
    const std::string key = "\"" + comp + "\": null";
    json.replace(json.find(key), key.size(), "\"" + comp + "\": {\"type\": \"FancyThing\"}");
    try {
      Tokenizer::from_json_string(json);
      ADD_FAILURE() << comp;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("FancyThing"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(comp), std::string::npos) << e.what();
    }
  }
  std::string json = minimal_tokenizer_json("", "");
  json.replace(json.find("\"BPE\""), 5, "\"Unigram\"");
  EXPECT_THROW(Tokenizer::from_json_string(json), Error);
  EXPECT_THROW(Tokenizer::from_json_string("{not json"), Error);
  EXPECT_THROW(Tokenizer::from_json_string(minimal_tokenizer_json("", "").replace(
                   minimal_tokenizer_json("", "").find("\"a b\""), 5, "\"a c\"")),
               Error);  // merge with a token outside the vocab
  EXPECT_THROW(Tokenizer::from_file("/nonexistent/tokenizer.json"), Error);
}

// Error message of loading `json`, or "" when it loads.
std::string load_error(const std::string& json) {
  try {
    Tokenizer::from_json_string(json);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TokenizerLoad, RefusesAnIdGivenToTwoTokens) {
  // model.vocab: "c" and "b" both id 2 (HF tokenizers keeps one silently).
  std::string why = load_error(minimal_tokenizer_json("", R"(, "c": 2)"));
  EXPECT_NE(why.find("id 2"), std::string::npos) << why;
  EXPECT_NE(why.find("'b'"), std::string::npos) << why;
  EXPECT_NE(why.find("'c'"), std::string::npos) << why;
  // An added token with the id of another vocab token, or of another added token.
  const auto with_added = [](const std::string& added) {
    std::string json = minimal_tokenizer_json("", "");
    json.replace(json.find("\"added_tokens\": []"), 18, "\"added_tokens\": [" + added + "]");
    return json;
  };
  const auto added = [](int id, const std::string& content) {
    return fmt::format(R"({{"id": {}, "content": "{}", "special": true}})", id, content);
  };
  why = load_error(with_added(added(1, "<s>")));
  EXPECT_NE(why.find("'<s>'"), std::string::npos) << why;
  EXPECT_NE(why.find("'a'"), std::string::npos) << why;
  EXPECT_NE(why.find("id 1"), std::string::npos) << why;
  why = load_error(with_added(added(7, "<s>") + ", " + added(7, "</s>")));
  EXPECT_NE(why.find("'<s>'"), std::string::npos) << why;
  EXPECT_NE(why.find("'</s>'"), std::string::npos) << why;
  EXPECT_NE(why.find("id 7"), std::string::npos) << why;
  // Re-declaring a vocab token with its own id is normal (Gemma, Mistral).
  EXPECT_EQ(load_error(with_added(added(0, "<unk>") + ", " + added(9, "<s>"))), "");
  const auto tok = Tokenizer::from_json_string(with_added(added(0, "<unk>")));
  EXPECT_EQ(tok.id_to_token(0), "<unk>");
  EXPECT_TRUE(tok.is_special(0));
}

TEST(TokenizerLoad, RefusesPostProcessorIdsWithoutToken) {
  // Found by fuzz_tokenizer: a TemplateProcessing special token whose id no token has was
  // accepted, and encode returned an id outside the vocabulary.
  const auto with_template = [](int id) {
    return minimal_tokenizer_json("", "",
                                  fmt::format(R"("post_processor": {{"type": "TemplateProcessing",
          "single": [{{"SpecialToken": {{"id": "<s>", "type_id": 0}}}},
                     {{"Sequence": {{"id": "A", "type_id": 0}}}}],
          "special_tokens": {{"<s>": {{"id": "<s>", "ids": [{}], "tokens": ["<s>"]}}}}}}, )",
                                              id));
  };
  std::string json = with_template(9);
  json.erase(json.find("\"post_processor\": null, "), 24);
  const std::string why = load_error(json);
  EXPECT_NE(why.find("post_processor adds id 9"), std::string::npos) << why;
  json = with_template(0);
  json.erase(json.find("\"post_processor\": null, "), 24);
  EXPECT_EQ(Tokenizer::from_json_string(json).encode("ab"), (std::vector<int32_t>{0, 3}));
  // BertProcessing: [CLS] and [SEP] ids.
  json = minimal_tokenizer_json(
      "", "",
      R"("post_processor": {"type": "BertProcessing", "cls": ["<unk>", 0], "sep": ["x", 7]}, )");
  json.erase(json.find("\"post_processor\": null, "), 24);
  EXPECT_NE(load_error(json).find("post_processor adds id 7"), std::string::npos);
}

TEST(TokenizerLoad, UnkTokenAndFuseUnk) {
  const auto fused = Tokenizer::from_json_string(
      minimal_tokenizer_json(R"(, "unk_token": "<unk>", "fuse_unk": true)", ""));
  EXPECT_EQ(fused.encode("abxyab"), (std::vector<int32_t>{3, 0, 3}));
  const auto unfused =
      Tokenizer::from_json_string(minimal_tokenizer_json(R"(, "unk_token": "<unk>")", ""));
  EXPECT_EQ(unfused.encode("abxyab"), (std::vector<int32_t>{3, 0, 0, 3}));
  const auto enc = unfused.encode_with_offsets("abxyab");
  EXPECT_EQ(enc.offsets, (std::vector<std::pair<size_t, size_t>>{{0, 2}, {2, 3}, {3, 4}, {4, 6}}));
}

TEST(TokenizerLookup, VocabSpecialsAndConfig) {
  const Tokenizer& tok = fixture_tokenizer("trained_bytelevel");
  const int32_t bos = tok.token_to_id("<|bos|>").value();
  EXPECT_EQ(tok.bos_id(), bos);
  EXPECT_EQ(tok.eos_id(), tok.token_to_id("<|endoftext|>"));
  EXPECT_EQ(tok.pad_id(), tok.eos_id());
  EXPECT_TRUE(tok.is_special(bos));
  EXPECT_FALSE(tok.is_special(tok.token_to_id("xyz").value()));  // added, not special
  EXPECT_EQ(tok.id_to_token(bos), "<|bos|>");
  EXPECT_EQ(tok.vocab_size(), 705);
  EXPECT_THROW(tok.id_to_token(705), Error);
  EXPECT_THROW(tok.id_to_token(-1), Error);
  const std::vector<int32_t> bad = {1, 100000};
  EXPECT_THROW(tok.decode(bad), Error);
  EXPECT_FALSE(tok.token_to_id("definitely not a token").has_value());
  EXPECT_EQ(tok.config().add_bos_token, true);
  // Copies share the loaded tokenizer.
  const Tokenizer copy = tok;
  EXPECT_EQ(copy.encode("hello world"), tok.encode("hello world"));
  if (const Tokenizer* llama = shared_tokenizer("llama3")) {
    EXPECT_EQ(llama->vocab_size(), 128256);
    EXPECT_EQ(llama->bos_id(), 128000);
    EXPECT_EQ(llama->encode("<|eot_id|>", false), (std::vector<int32_t>{128009}));
  }
}

}  // namespace
}  // namespace magix::test
