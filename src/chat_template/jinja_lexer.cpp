#include "chat_template/jinja_lexer.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "chat_template/jinja_value.hpp"
#include "magix/error.hpp"

namespace magix::jinja {

std::string normalize_source(const std::string& source) {
  std::string out;
  out.reserve(source.size());
  for (size_t k = 0; k < source.size(); ++k) {
    if (source[k] == '\r') {
      out += '\n';
      if (k + 1 < source.size() && source[k + 1] == '\n') ++k;
    } else {
      out += source[k];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string position_of(const std::string& src, size_t offset) {
  offset = std::min(offset, src.size());
  int line =
      1 + static_cast<int>(std::count(src.begin(), src.begin() + static_cast<long>(offset), '\n'));
  size_t nl = offset == 0 ? std::string::npos : src.rfind('\n', offset - 1);
  size_t line_start = nl == std::string::npos ? 0 : nl + 1;
  size_t column = utf8_length(std::string_view(src).substr(line_start, offset - line_start)) + 1;
  return fmt::format("line {}, column {}", line, column);
}

namespace {

// Length of the Python-whitespace run (str.isspace) starting at `pos`.
size_t space_run(const std::string& s, size_t pos) {
  size_t k = pos;
  while (k < s.size()) {
    auto c = static_cast<unsigned char>(s[k]);
    if (c < 0x80) {
      if (!is_py_space(c)) break;
      ++k;
      continue;
    }
    // a multi-byte sequence: decode one code point
    size_t n = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (k + n > s.size()) break;
    auto cps = decode_utf8(std::string_view(s).substr(k, n));
    if (cps.size() != 1 || !is_py_space(cps[0])) break;
    k += n;
  }
  return k - pos;
}

// Python's str.rstrip() on whitespace.
std::string rstrip_space(const std::string& s) {
  auto cps = decode_utf8(s);
  size_t end = cps.size();
  while (end > 0 && is_py_space(cps[end - 1])) --end;
  return encode_utf8(cps, 0, end);
}

bool all_space(const std::string& s, size_t from) {
  return from < s.size() && space_run(s, from) == s.size() - from;
}

bool is_name_start(unsigned char c) {
  return std::isalpha(c) || c == '_' || c >= 0x80;
}
bool is_name_char(unsigned char c) {
  return std::isalnum(c) || c == '_' || c >= 0x80;
}

class Lexer {
 public:
  explicit Lexer(const std::string& src) : src_(src) {}

  std::vector<Token> run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t tag = find_tag(pos_);
      if (tag == std::string::npos) {
        emit(Tok::Data, src_.substr(pos_), pos_);
        break;
      }
      std::string text = src_.substr(pos_, tag - pos_);
      char kind = src_[tag + 1];  // '{', '%' or '#'
      char sign = tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+')
                      ? src_[tag + 2]
                      : 0;
      size_t raw_end = kind == '%' ? match_raw_begin(tag) : 0;
      if (sign == '-') {
        text = rstrip_space(text);
      } else if (sign != '+' && kind != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting) && all_space(text, l_pos)) text.resize(l_pos);
      }
      if (!text.empty()) emit(Tok::Data, text, pos_);
      size_t after = tag + 2 + (sign ? 1 : 0);
      if (raw_end) {
        pos_ = raw_end;
        line_starting = lex_raw_body();
      } else if (kind == '#') {
        line_starting = skip_comment(tag, after);
      } else {
        emit(kind == '{' ? Tok::VarBegin : Tok::BlockBegin, "", tag);
        pos_ = after;
        line_starting = lex_tag(kind == '{');
      }
    }
    emit(Tok::Eof, "", src_.size());
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void fail(size_t offset, const std::string& what) const {
    MAGIX_FAIL("template syntax error at {}: {}", position_of(src_, offset), what);
  }

  void emit(Tok type, std::string text, size_t offset) {
    // positions are computed incrementally: offsets only grow
    while (line_pos_ < offset) {
      auto c = static_cast<unsigned char>(src_[line_pos_]);
      if (c == '\n') {
        ++line_;
        column_ = 1;
      } else if ((c & 0xc0) != 0x80) {
        ++column_;  // a code point starts here (UTF-8 continuation bytes do not count)
      }
      ++line_pos_;
    }
    tokens_.push_back(Token{type, std::move(text), line_, column_});
  }

  size_t find_tag(size_t from) const {
    for (size_t k = src_.find('{', from); k != std::string::npos; k = src_.find('{', k + 1)) {
      if (k + 1 < src_.size() && (src_[k + 1] == '{' || src_[k + 1] == '%' || src_[k + 1] == '#'))
        return k;
    }
    return std::string::npos;
  }

  // `{%(-|+|)\s*raw\s*(-%}\s*|%})` at `tag`: the offset after it, or 0.
  size_t match_raw_begin(size_t tag) const {
    size_t k = tag + 2;
    if (k < src_.size() && (src_[k] == '-' || src_[k] == '+')) ++k;
    k += space_run(src_, k);
    if (src_.compare(k, 3, "raw") != 0) return 0;
    k += 3;
    k += space_run(src_, k);
    if (src_.compare(k, 3, "-%}") == 0) return k + 3 + space_run(src_, k + 3);
    if (src_.compare(k, 2, "%}") == 0) return k + 2;
    return 0;
  }

  // The body of a raw block up to `{% endraw %}`; returns whether the end consumed a newline.
  bool lex_raw_body() {
    for (size_t k = src_.find("{%", pos_); k != std::string::npos; k = src_.find("{%", k + 1)) {
      size_t m = k + 2;
      char sign = m < src_.size() && (src_[m] == '-' || src_[m] == '+') ? src_[m] : 0;
      if (sign) ++m;
      m += space_run(src_, m);
      if (src_.compare(m, 6, "endraw") != 0) continue;
      m += 6;
      m += space_run(src_, m);
      size_t end;
      if (src_.compare(m, 3, "+%}") == 0) {
        end = m + 3;
      } else if (src_.compare(m, 3, "-%}") == 0) {
        end = m + 3 + space_run(src_, m + 3);
      } else if (src_.compare(m, 2, "%}") == 0) {
        end = m + 2 + (m + 2 < src_.size() && src_[m + 2] == '\n' ? 1 : 0);
      } else {
        continue;
      }
      std::string text = src_.substr(pos_, k - pos_);
      if (sign == '-') {
        text = rstrip_space(text);
      } else if (sign != '+') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        // the raw begin tag never ends a line, so only text after a newline is stripped
        if (l_pos > 0 && all_space(text, l_pos)) text.resize(l_pos);
      }
      if (!text.empty()) emit(Tok::Data, text, pos_);
      pos_ = end;
      return src_[end - 1] == '\n';
    }
    fail(pos_, "missing end of raw directive");
  }

  bool skip_comment(size_t tag, size_t after) {
    for (size_t k = src_.find("#}", after); k != std::string::npos; k = src_.find("#}", k + 1)) {
      size_t end;
      if (k > after && src_[k - 1] == '+') {
        end = k + 2;
      } else if (k > after && src_[k - 1] == '-') {
        end = k + 2 + space_run(src_, k + 2);
      } else {
        end = k + 2 + (k + 2 < src_.size() && src_[k + 2] == '\n' ? 1 : 0);
      }
      pos_ = end;
      return src_[end - 1] == '\n';
    }
    fail(tag, "missing end of comment tag");
  }

  // Tokens inside {{ }} or {% %} up to the end tag; returns whether the end consumed a newline.
  bool lex_tag(bool variable) {
    std::vector<char> balance;
    size_t begin = pos_;
    while (true) {
      if (pos_ >= src_.size()) {
        fail(begin, variable ? "unexpected end of template, expected '}}'"
                             : "unexpected end of template, expected '%}'");
      }
      if (balance.empty()) {
        if (variable) {
          if (src_.compare(pos_, 3, "-}}") == 0) {
            emit(Tok::VarEnd, "", pos_);
            pos_ += 3 + space_run(src_, pos_ + 3);
            return src_[pos_ - 1] == '\n';
          }
          if (src_.compare(pos_, 2, "}}") == 0) {
            emit(Tok::VarEnd, "", pos_);
            pos_ += 2;
            return false;
          }
        } else {
          if (src_.compare(pos_, 3, "+%}") == 0) {
            emit(Tok::BlockEnd, "", pos_);
            pos_ += 3;
            return false;
          }
          if (src_.compare(pos_, 3, "-%}") == 0) {
            emit(Tok::BlockEnd, "", pos_);
            pos_ += 3 + space_run(src_, pos_ + 3);
            return src_[pos_ - 1] == '\n';
          }
          if (src_.compare(pos_, 2, "%}") == 0) {
            emit(Tok::BlockEnd, "", pos_);
            pos_ += 2;
            if (pos_ < src_.size() && src_[pos_] == '\n') {
              ++pos_;
              return true;
            }
            return false;
          }
        }
      }
      size_t ws = space_run(src_, pos_);
      if (ws) {
        pos_ += ws;
        continue;
      }
      auto c = static_cast<unsigned char>(src_[pos_]);
      if (std::isdigit(c)) {
        lex_number();
      } else if (is_name_start(c)) {
        size_t k = pos_;
        while (k < src_.size() && is_name_char(static_cast<unsigned char>(src_[k]))) ++k;
        emit(Tok::Name, src_.substr(pos_, k - pos_), pos_);
        pos_ = k;
      } else if (c == '\'' || c == '"') {
        lex_string();
      } else {
        lex_operator(balance);
      }
    }
  }

  // digits with single '_' separators; returns the end offset or `k` if none
  size_t digits(size_t k, bool (*ok)(char)) const {
    size_t start = k;
    while (k < src_.size()) {
      if (ok(src_[k])) {
        ++k;
      } else if (src_[k] == '_' && k > start && k + 1 < src_.size() && ok(src_[k + 1])) {
        ++k;
      } else {
        break;
      }
    }
    return k;
  }

  void lex_number() {
    auto dec = [](char ch) { return ch >= '0' && ch <= '9'; };
    size_t start = pos_;
    size_t k = digits(pos_, dec);
    // float: digits ( (.digits)? e[+-]?digits | .digits )
    size_t f = k;
    bool is_float = false;
    if (f < src_.size() && src_[f] == '.' && f + 1 < src_.size() && dec(src_[f + 1])) {
      f = digits(f + 1, dec);
      is_float = true;
    }
    if (f < src_.size() && (src_[f] == 'e' || src_[f] == 'E')) {
      size_t e = f + 1;
      if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
      if (e < src_.size() && dec(src_[e])) {
        f = digits(e, dec);
        is_float = true;
      }
    }
    if (is_float) {
      std::string text = src_.substr(start, f - start);
      text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
      emit(Tok::Float, text, start);
      pos_ = f;
      return;
    }
    // integers: 0b / 0o / 0x prefixes, decimal, or zeros
    if (src_[start] == '0' && k == start + 1 && start + 2 < src_.size()) {
      char p = static_cast<char>(std::tolower(static_cast<unsigned char>(src_[start + 1])));
      bool (*ok)(char) = nullptr;
      if (p == 'b') ok = [](char ch) { return ch == '0' || ch == '1'; };
      if (p == 'o') ok = [](char ch) { return ch >= '0' && ch <= '7'; };
      if (p == 'x') ok = [](char ch) { return std::isxdigit(static_cast<unsigned char>(ch)) != 0; };
      if (ok) {
        size_t e = start + 2;
        if (src_[e] == '_') ++e;
        size_t end = e < src_.size() && ok(src_[e]) ? digits(e, ok) : e;
        if (end > e) {
          std::string text = src_.substr(start + 2, end - start - 2);
          text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
          int base = p == 'b' ? 2 : p == 'o' ? 8 : 16;
          errno = 0;
          const long long v = std::strtoll(text.c_str(), nullptr, base);
          if (errno == ERANGE) fail(start, "integer literal out of range");
          emit(Tok::Integer, std::to_string(v), start);
          pos_ = end;
          return;
        }
      }
    }
    std::string text = src_.substr(start, k - start);
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    if (text.size() > 1 && text[0] == '0') {
      // "0(_?0)*" only: a leading zero followed by other digits is just "0" then more tokens
      emit(Tok::Integer, "0", start);
      pos_ = start + 1;
      while (pos_ < k && (src_[pos_] == '0' || src_[pos_] == '_')) ++pos_;
      return;
    }
    emit(Tok::Integer, text, start);
    pos_ = k;
  }

  void lex_string() {
    char quote = src_[pos_];
    size_t start = pos_;
    std::string value;
    size_t k = pos_ + 1;
    while (true) {
      if (k >= src_.size()) fail(start, "unexpected end of string literal");
      char c = src_[k];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        ++k;
        continue;
      }
      if (k + 1 >= src_.size()) fail(start, "unexpected end of string literal");
      char e = src_[k + 1];
      k += 2;
      auto hex = [&](int n) {
        if (k + static_cast<size_t>(n) > src_.size())
          fail(start, "truncated \\x, \\u or \\U escape");
        std::string h = src_.substr(k, static_cast<size_t>(n));
        if (!std::all_of(h.begin(), h.end(),
                         [](char ch) { return std::isxdigit(static_cast<unsigned char>(ch)); })) {
          fail(start, "truncated \\x, \\u or \\U escape");
        }
        k += static_cast<size_t>(n);
        append_utf8(value, static_cast<char32_t>(std::stoul(h, nullptr, 16)));
      };
      switch (e) {
        case '\n':
          break;
        case '\\':
          value += '\\';
          break;
        case '\'':
          value += '\'';
          break;
        case '"':
          value += '"';
          break;
        case 'a':
          value += '\a';
          break;
        case 'b':
          value += '\b';
          break;
        case 'f':
          value += '\f';
          break;
        case 'n':
          value += '\n';
          break;
        case 'r':
          value += '\r';
          break;
        case 't':
          value += '\t';
          break;
        case 'v':
          value += '\v';
          break;
        case 'x':
          hex(2);
          break;
        case 'u':
          hex(4);
          break;
        case 'U':
          hex(8);
          break;
        default:
          if (e >= '0' && e <= '7') {
            unsigned v = static_cast<unsigned>(e - '0');
            for (int n = 0; n < 2 && k < src_.size() && src_[k] >= '0' && src_[k] <= '7'; ++n) {
              v = v * 8 + static_cast<unsigned>(src_[k++] - '0');
            }
            append_utf8(value, v);
          } else {
            value += '\\';
            value += e;
          }
      }
    }
    emit(Tok::String, std::move(value), start);
    pos_ = k + 1;
  }

  void lex_operator(std::vector<char>& balance) {
    static const char* const kOps[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/",
                                       "*",  "%",  "~",  "[",  "]",  "(",  ")", "{", "}",
                                       ">",  "<",  "=",  ".",  ":",  "|",  ",", ";"};
    for (const char* op : kOps) {
      size_t n = std::strlen(op);
      if (src_.compare(pos_, n, op) != 0) continue;
      char c = op[0];
      if (n == 1 && (c == '{' || c == '(' || c == '[')) {
        balance.push_back(c == '{' ? '}' : c == '(' ? ')' : ']');
      } else if (n == 1 && (c == '}' || c == ')' || c == ']')) {
        if (balance.empty()) fail(pos_, fmt::format("unexpected '{}'", c));
        if (balance.back() != c)
          fail(pos_, fmt::format("unexpected '{}', expected '{}'", c, balance.back()));
        balance.pop_back();
      }
      emit(Tok::Op, op, pos_);
      pos_ += n;
      return;
    }
    auto cps = decode_utf8(std::string_view(src_).substr(pos_, 4));
    std::string ch;
    append_utf8(ch, cps.empty() ? U'?' : cps[0]);
    fail(pos_, fmt::format("unexpected char '{}'", ch));
  }

  const std::string& src_;
  size_t pos_ = 0;
  std::vector<Token> tokens_;
  int line_ = 1;
  int column_ = 1;       // of the byte at line_pos_
  size_t line_pos_ = 0;  // tokens are emitted at increasing offsets
};

}  // namespace

std::vector<Token> tokenize(const std::string& normalized) {
  return Lexer(normalized).run();
}

}  // namespace magix::jinja
