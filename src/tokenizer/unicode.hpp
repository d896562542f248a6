// UTF-8 and Unicode helpers for the tokenizer: validation, lossy decoding (Rust's
// String::from_utf8_lossy rules), character classes (via ICU) and the GPT-2 byte-level alphabet.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace magix::text {

// One step of UTF-8 decoding at s[i]. valid: `cp` is the scalar value and `len` its byte length.
// invalid: `len` is the length of the maximal prefix of a valid sequence (>= 1), the unit that
// gets one U+FFFD in lossy decoding.
struct Utf8Step {
  char32_t cp = 0;
  size_t len = 1;
  bool valid = false;
};
Utf8Step utf8_step(std::string_view s, size_t i);

// Throws magix::Error naming `what` and the byte offset of the first invalid sequence.
void check_utf8(std::string_view s, std::string_view what);
bool is_valid_utf8(std::string_view s);

// Valid UTF-8 only: the code point at s[i] and its byte length.
inline size_t utf8_len(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}
char32_t utf8_decode(std::string_view s, size_t i);
void utf8_append(std::string& out, char32_t cp);

// Each maximal invalid subsequence becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);
// Length of the longest prefix of `s` that does not end inside an incomplete (but so far valid)
// multibyte sequence.
size_t utf8_complete_prefix(std::string_view s);

bool is_whitespace(char32_t cp);  // Unicode White_Space (Rust char::is_whitespace, regex \s)
bool is_word_char(char32_t cp);   // Rust regex \w: Alphabetic, M, Nd, Pc, Join_Control

// GPT-2 byte-level alphabet: byte b <-> one printable code point (UTF-8 encoded).
struct ByteLevelAlphabet {
  std::array<std::string, 256> byte_to_utf8;
  std::array<int16_t, 512> cp_to_byte;  // -1 where a code point < 512 is not in the alphabet
  ByteLevelAlphabet();
  int byte_of(char32_t cp) const { return cp < 512 ? cp_to_byte[cp] : -1; }
};
const ByteLevelAlphabet& byte_level_alphabet();

}  // namespace magix::text
