// libFuzzer target over tokenizer.json loading, encoding and decoding. See docs/formats.md for
// how to build and run it. An input is "tokenizer.json text, a NUL byte, text to encode" (no NUL
// byte: all of it is the JSON, the text is empty). For every tokenizer the loader accepts:
//   - the text is encoded with and without special tokens (invalid UTF-8 must be refused with a
//     magix::Error; valid text may be refused too, e.g. for a byte token the file lacks);
//   - ids and offsets have the same length, every offset lies in the text, every id has a token;
//   - the ids decode, with and without special tokens, and through StreamDecoder.
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "magix/error.hpp"
#include "magix/tokenizer.hpp"
#include "tokenizer/unicode.hpp"

namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "fuzz_tokenizer invariant violated: %s\n", what);
  __builtin_trap();
}

void check_encoding(const magix::Tokenizer& tok, std::string_view text, bool add_special) {
  const magix::Tokenizer::Encoding enc = tok.encode_with_offsets(text, add_special);
  if (enc.ids.size() != enc.offsets.size()) die("ids and offsets differ in length");
  for (size_t i = 0; i < enc.ids.size(); ++i) {
    const auto [b, e] = enc.offsets[i];
    if (b > e || e > text.size()) die("offset outside the text");
    if (enc.ids[i] < 0 || enc.ids[i] >= tok.vocab_size()) die("id outside the vocabulary");
  }
  if (tok.encode(text, add_special) != enc.ids) die("encode differs from encode_with_offsets");
  try {  // the ids of an encoding always decode
    for (int32_t id : enc.ids) (void)tok.id_to_token(id);
    for (bool skip : {true, false}) {
      (void)tok.decode(enc.ids, skip);
      magix::StreamDecoder stream(tok, skip);
      for (int32_t id : enc.ids) (void)stream.push(id);
      (void)stream.finish();
    }
  } catch (const magix::Error& e) {
    std::fprintf(stderr, "decoding an encoding failed: %s\n", e.what());
    die("encoded ids do not decode");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view json = input.substr(0, nul);
  const std::string_view text = nul == std::string_view::npos ? "" : input.substr(nul + 1);
  std::optional<magix::Tokenizer> tok;
  try {
    tok = magix::Tokenizer::from_json_string(json, {}, "fuzz");
  } catch (const magix::Error&) {
    return 0;
  }
  bool valid = true;
  try {
    magix::text::check_utf8(text, "fuzz text");
  } catch (const magix::Error&) {
    valid = false;
  }
  for (bool add_special : {true, false}) {
    try {
      check_encoding(*tok, text, add_special);
      if (!valid) die("invalid UTF-8 was encoded");
    } catch (const magix::Error&) {
      // a refusal is fine; what matters is that nothing crashes or breaks an invariant
    }
  }
  return 0;
}
