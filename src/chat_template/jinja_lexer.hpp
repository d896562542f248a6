// The Jinja lexer, with jinja2's whitespace rules under trim_blocks=True, lstrip_blocks=True
// and keep_trailing_newline=False (transformers' environment).
#pragma once

#include <string>
#include <vector>

namespace magix::jinja {

enum class Tok {
  Data,        // template text, already stripped as jinja2 strips it
  VarBegin,    // {{
  VarEnd,      // }}
  BlockBegin,  // {%
  BlockEnd,    // %}
  Name,
  String,   // text = the unescaped value
  Integer,  // text = the literal without '_'
  Float,
  Op,  // text = the operator: + - / // * % ** ~ [ ] ( ) { } == != > >= < <= = . : | , ;
  Eof,
};

struct Token {
  Tok type;
  std::string text;
  int line = 1, column = 1;  // of the token's first character in the (newline-normalized) source
};

// The newline-normalized source that positions refer to: \r\n and \r become \n, and one
// trailing newline is dropped.
std::string normalize_source(const std::string& source);

// Splits a normalized source into tokens; throws magix::Error "template syntax error at
// line L, column C: ..." on an unterminated tag, comment, string or raw block.
std::vector<Token> tokenize(const std::string& normalized);

// "line L, column C" of a byte offset.
std::string position_of(const std::string& normalized, size_t offset);

}  // namespace magix::jinja
