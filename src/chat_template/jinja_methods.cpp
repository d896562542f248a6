// Python's str methods for the Jinja interpreter (what `s.strip()`, `s.split(',')` ... return),
// and the case mappings the filters share.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "chat_template/jinja_budget.hpp"
#include "chat_template/jinja_builtins.hpp"
#include "magix/error.hpp"

namespace magix::jinja {

namespace {

// Case mapping for ASCII, Latin-1, Greek and Cyrillic letters (Python maps all of Unicode).
char32_t to_upper(char32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if ((c >= 0xe0 && c <= 0xfe && c != 0xf7)) return c - 32;
  if (c == 0xff) return 0x178;
  if (c >= 0x3b1 && c <= 0x3c9 && c != 0x3c2) return c - 32;
  if (c >= 0x430 && c <= 0x44f) return c - 32;
  if (c >= 0x450 && c <= 0x45f) return c - 80;
  return c;
}
char32_t to_lower(char32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if ((c >= 0xc0 && c <= 0xde && c != 0xd7)) return c + 32;
  if (c == 0x178) return 0xff;
  if (c >= 0x391 && c <= 0x3a9 && c != 0x3a2) return c + 32;
  if (c >= 0x410 && c <= 0x42f) return c + 32;
  if (c >= 0x400 && c <= 0x40f) return c + 80;
  return c;
}
bool is_cased(char32_t c) {
  return to_upper(c) != c || to_lower(c) != c;
}

bool is_ascii(const std::string& s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

template <typename F>
std::string map_chars(const std::string& s, F f) {
  if (is_ascii(s)) {
    std::string out = s;
    for (char& c : out) c = static_cast<char>(f(static_cast<char32_t>(c)));
    return out;
  }
  std::string out;
  for (char32_t c : decode_utf8(s)) append_utf8(out, f(c));
  return out;
}

const std::string& need_str(const Value& v, const char* what) {
  if (v.kind != Kind::String) MAGIX_FAIL("{} must be str, not {}", what, type_name(v));
  return v.s;
}

int64_t need_int(const Value& v, const char* what) {
  if (!v.is_int_like()) MAGIX_FAIL("{} must be an integer, not {}", what, type_name(v));
  return v.i;
}

std::vector<Value> py_split(const std::string& s, const Value& sep, int64_t maxsplit) {
  std::vector<Value> out;
  if (sep.is_none() || sep.is_undefined()) {
    auto cps = decode_utf8(s);
    size_t k = 0, n = cps.size();
    while (true) {
      while (k < n && is_py_space(cps[k])) ++k;
      if (k >= n) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        size_t end = n;
        while (end > k && is_py_space(cps[end - 1])) --end;
        out.push_back(Value::str(encode_utf8(cps, k, end)));
        break;
      }
      size_t start = k;
      while (k < n && !is_py_space(cps[k])) ++k;
      out.push_back(Value::str(encode_utf8(cps, start, k)));
    }
    return out;
  }
  const std::string& d = need_str(sep, "separator");
  if (d.empty()) MAGIX_FAIL("empty separator");
  size_t start = 0;
  while (true) {
    size_t hit = s.find(d, start);
    if (hit == std::string::npos ||
        (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit)) {
      out.push_back(Value::str(s.substr(start)));
      return out;
    }
    out.push_back(Value::str(s.substr(start, hit - start)));
    start = hit + d.size();
  }
}

bool affix_match(const std::string& s, const Value& affix, bool prefix) {
  auto one = [&](const Value& a) {
    const std::string& x = need_str(a, prefix ? "startswith argument" : "endswith argument");
    if (x.size() > s.size()) return false;
    return prefix ? s.compare(0, x.size(), x) == 0
                  : s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (affix.kind == Kind::Tuple) {
    return std::any_of(affix.items().begin(), affix.items().end(), one);
  }
  return one(affix);
}

// str.format with "{}", "{0}" and "{name}" fields (no format specs).
std::string py_format(const std::string& fmt_str, const Args& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t k = 0; k < fmt_str.size(); ++k) {
    char c = fmt_str[k];
    if (c == '{' && k + 1 < fmt_str.size() && fmt_str[k + 1] == '{') {
      out += '{';
      ++k;
    } else if (c == '}' && k + 1 < fmt_str.size() && fmt_str[k + 1] == '}') {
      out += '}';
      ++k;
    } else if (c == '{') {
      size_t end = fmt_str.find('}', k);
      if (end == std::string::npos) MAGIX_FAIL("Single '{{' encountered in format string");
      std::string field = fmt_str.substr(k + 1, end - k - 1);
      if (field.find_first_of(":!") != std::string::npos)
        MAGIX_FAIL("format specs are not supported");
      const Value* v = nullptr;
      if (field.empty()) {
        if (auto_index >= args.pos.size())
          MAGIX_FAIL("Replacement index {} out of range", auto_index);
        v = &args.pos[auto_index++];
      } else if (std::all_of(field.begin(), field.end(), ::isdigit)) {
        if (field.size() > 9) MAGIX_FAIL("Replacement index {} out of range", field);
        size_t idx = std::stoul(field);
        if (idx >= args.pos.size()) MAGIX_FAIL("Replacement index {} out of range", idx);
        v = &args.pos[idx];
      } else {
        v = args.kwarg(field);
        if (!v) MAGIX_FAIL("'{}'", field);
      }
      std::string piece = to_str(*v);
      budget_check_length(out.size() + piece.size(), "string");
      out += piece;
      k = end;
    } else if (c == '}') {
      MAGIX_FAIL("Single '}}' encountered in format string");
    } else {
      out += c;
    }
  }
  budget_check_size(out.size(), "string");
  return out;
}

}  // namespace

Value string_method(const Value& self, const std::string& name) {
  const std::string s = self.s;
  auto fn = [&](auto body) { return Value::function("str." + name, body); };
  static const Value kNone = Value::none();
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    bool l = name != "rstrip", r = name != "lstrip";
    return fn([s, l, r](const Args& a) {
      return Value::str(py_strip(s, arg_or(a, 0, "chars", kNone), l, r));
    });
  }
  if (name == "split" || name == "rsplit") {
    bool reverse = name == "rsplit";
    return fn([s, reverse](const Args& a) {
      int64_t maxsplit = need_int(arg_or(a, 1, "maxsplit", Value::integer(-1)), "maxsplit");
      Value sep = arg_or(a, 0, "sep", kNone);
      if (!reverse || maxsplit < 0) return Value::make_list(py_split(s, sep, maxsplit));
      // rsplit with a limit: split the reversed string by the reversed separator
      auto cps = decode_utf8(s);
      std::reverse(cps.begin(), cps.end());
      Value rsep = sep;
      if (sep.kind == Kind::String) {
        auto sc = decode_utf8(sep.s);
        std::reverse(sc.begin(), sc.end());
        rsep = Value::str(encode_utf8(sc, 0, sc.size()));
      }
      auto parts = py_split(encode_utf8(cps, 0, cps.size()), rsep, maxsplit);
      std::reverse(parts.begin(), parts.end());
      for (auto& p : parts) {
        auto pc = decode_utf8(p.s);
        std::reverse(pc.begin(), pc.end());
        p.s = encode_utf8(pc, 0, pc.size());
      }
      return Value::make_list(std::move(parts));
    });
  }
  if (name == "splitlines") {
    return fn([s](const Args&) {
      std::vector<Value> out;
      size_t start = 0;
      for (size_t k = 0; k < s.size(); ++k) {
        if (s[k] == '\n' || s[k] == '\r') {
          out.push_back(Value::str(s.substr(start, k - start)));
          if (s[k] == '\r' && k + 1 < s.size() && s[k + 1] == '\n') ++k;
          start = k + 1;
        }
      }
      if (start < s.size()) out.push_back(Value::str(s.substr(start)));
      return Value::make_list(std::move(out));
    });
  }
  if (name == "startswith" || name == "endswith") {
    bool prefix = name == "startswith";
    return fn([s, prefix](const Args& a) {
      if (a.pos.empty())
        MAGIX_FAIL("{} takes at least 1 argument", prefix ? "startswith" : "endswith");
      return Value::boolean(affix_match(s, a.pos[0], prefix));
    });
  }
  if (name == "upper") return fn([s](const Args&) { return Value::str(py_upper(s)); });
  if (name == "lower") return fn([s](const Args&) { return Value::str(py_lower(s)); });
  if (name == "title") return fn([s](const Args&) { return Value::str(py_title(s)); });
  if (name == "capitalize") return fn([s](const Args&) { return Value::str(py_capitalize(s)); });
  if (name == "replace") {
    return fn([s](const Args& a) {
      if (a.pos.size() < 2) MAGIX_FAIL("replace expected at least 2 arguments");
      int64_t count = a.pos.size() > 2 ? need_int(a.pos[2], "count") : -1;
      return Value::str(py_replace(s, need_str(a.pos[0], "old"), need_str(a.pos[1], "new"), count));
    });
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    return fn([s, name](const Args& a) {
      if (a.pos.empty()) MAGIX_FAIL("{} takes at least 1 argument", name);
      const std::string& sub = need_str(a.pos[0], "substring");
      if (name == "count") {
        if (sub.empty()) return Value::integer(static_cast<int64_t>(utf8_length(s)) + 1);
        int64_t n = 0;
        for (size_t k = s.find(sub); k != std::string::npos; k = s.find(sub, k + sub.size())) ++n;
        return Value::integer(n);
      }
      size_t hit = name[0] == 'r' ? s.rfind(sub) : s.find(sub);
      if (hit == std::string::npos) {
        if (name == "index" || name == "rindex") MAGIX_FAIL("substring not found");
        return Value::integer(-1);
      }
      return Value::integer(static_cast<int64_t>(utf8_length(std::string_view(s).substr(0, hit))));
    });
  }
  if (name == "join") {
    return fn([s](const Args& a) {
      if (a.pos.empty()) MAGIX_FAIL("join takes exactly one argument");
      std::string out;
      bool first = true;
      for (const Value& v : iterate(a.pos[0])) {
        const std::string& item = need_str(v, "sequence item");
        budget_check_length(out.size() + (first ? 0 : s.size()) + item.size(), "string");
        if (!first) out += s;
        first = false;
        out += item;
      }
      budget_check_size(out.size(), "string");
      return Value::str(out);
    });
  }
  if (name == "format") return fn([s](const Args& a) { return Value::str(py_format(s, a)); });
  if (name == "removeprefix" || name == "removesuffix") {
    bool prefix = name == "removeprefix";
    return fn([s, prefix](const Args& a) {
      if (a.pos.empty()) MAGIX_FAIL("missing argument");
      const std::string& x = need_str(a.pos[0], "affix");
      if (affix_match(s, a.pos[0], prefix)) {
        return Value::str(prefix ? s.substr(x.size()) : s.substr(0, s.size() - x.size()));
      }
      return Value::str(s);
    });
  }
  if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" ||
      name == "isupper" || name == "islower") {
    return fn([s, name](const Args&) {
      auto cps = decode_utf8(s);
      if (cps.empty()) return Value::boolean(false);
      auto dig = [](char32_t c) { return c >= '0' && c <= '9'; };
      auto alpha = [](char32_t c) {
        return (c < 0x80 && std::isalpha(static_cast<int>(c))) || is_cased(c);
      };
      if (name == "isdigit") return Value::boolean(std::all_of(cps.begin(), cps.end(), dig));
      if (name == "isalpha") return Value::boolean(std::all_of(cps.begin(), cps.end(), alpha));
      if (name == "isalnum") {
        return Value::boolean(
            std::all_of(cps.begin(), cps.end(), [&](char32_t c) { return dig(c) || alpha(c); }));
      }
      if (name == "isspace")
        return Value::boolean(std::all_of(cps.begin(), cps.end(), is_py_space));
      bool any_cased = std::any_of(cps.begin(), cps.end(), is_cased);
      bool up = name == "isupper";
      return Value::boolean(any_cased && std::none_of(cps.begin(), cps.end(), [&](char32_t c) {
                              return up ? to_upper(c) != c : to_lower(c) != c;
                            }));
    });
  }
  return Value::undefined(fmt::format("'str object' has no attribute '{}'", name));
}

std::string py_strip(const std::string& s, const Value& chars, bool left, bool right) {
  auto cps = decode_utf8(s);
  std::vector<char32_t> set;
  bool ws = chars.is_none() || chars.is_undefined();
  if (!ws) set = decode_utf8(need_str(chars, "strip argument"));
  auto strip_it = [&](char32_t c) {
    return ws ? is_py_space(c) : std::find(set.begin(), set.end(), c) != set.end();
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip_it(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip_it(cps[e - 1])) --e;
  }
  return encode_utf8(cps, b, e);
}

std::string py_upper(const std::string& s) {
  return map_chars(s, to_upper);
}
std::string py_lower(const std::string& s) {
  return map_chars(s, to_lower);
}

std::string py_title(const std::string& s) {
  bool prev_cased = false;
  return map_chars(s, [&](char32_t c) {
    char32_t r = prev_cased ? to_lower(c) : to_upper(c);
    prev_cased = is_cased(c);
    return r;
  });
}

std::string py_capitalize(const std::string& s) {
  bool first = true;
  return map_chars(s, [&](char32_t c) {
    char32_t r = first ? to_upper(c) : to_lower(c);
    first = false;
    return r;
  });
}

std::string py_replace(const std::string& s, const std::string& old, const std::string& repl,
                       int64_t count) {
  // the size of the result, checked before it is built
  uint64_t hits = 0;
  if (old.empty()) {
    hits = utf8_length(s) + 1;
  } else {
    for (size_t k = s.find(old); k != std::string::npos; k = s.find(old, k + old.size())) ++hits;
  }
  if (count >= 0) hits = std::min<uint64_t>(hits, static_cast<uint64_t>(count));
  if (repl.size() > old.size())
    budget_check_size(s.size() + hits * (repl.size() - old.size()), "string");
  std::string out;
  if (old.empty()) {
    // Python inserts `repl` before every character and at the end
    auto cps = decode_utf8(s);
    int64_t n = 0;
    for (size_t k = 0; k <= cps.size(); ++k) {
      if (count < 0 || n < count) {
        out += repl;
        ++n;
      }
      if (k < cps.size()) append_utf8(out, cps[k]);
    }
    return out;
  }
  size_t start = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    size_t hit = s.find(old, start);
    if (hit == std::string::npos) break;
    out.append(s, start, hit - start);
    out += repl;
    start = hit + old.size();
    ++n;
  }
  out.append(s, start, std::string::npos);
  return out;
}

std::string py_percent_format(const std::string& fmt_str, const Value& values) {
  // the arguments: a tuple gives several, a dict is a mapping for %(name)s, anything else is one
  std::vector<Value> args;
  const Dict* mapping = values.kind == Kind::Dict ? values.dict.get() : nullptr;
  if (values.kind == Kind::Tuple) {
    args = values.items();
  } else {
    args.push_back(values);
  }
  size_t next_arg = 0;
  std::string out;
  for (size_t k = 0; k < fmt_str.size(); ++k) {
    if (fmt_str[k] != '%') {
      out += fmt_str[k];
      continue;
    }
    if (++k >= fmt_str.size()) MAGIX_FAIL("incomplete format");
    const Value* arg = nullptr;
    if (fmt_str[k] == '(') {
      size_t close = fmt_str.find(')', k);
      if (close == std::string::npos) MAGIX_FAIL("incomplete format key");
      if (!mapping) MAGIX_FAIL("format requires a mapping");
      std::string key = fmt_str.substr(k + 1, close - k - 1);
      arg = mapping->find(key);
      if (!arg) MAGIX_FAIL("'{}'", key);
      k = close + 1;
    }
    std::string spec = "%";
    while (k < fmt_str.size() && std::strchr("-+ 0#", fmt_str[k])) spec += fmt_str[k++];
    std::string width, precision;
    while (k < fmt_str.size() && std::isdigit(static_cast<unsigned char>(fmt_str[k])))
      width += fmt_str[k++];
    if (k < fmt_str.size() && fmt_str[k] == '.') {
      ++k;
      while (k < fmt_str.size() && std::isdigit(static_cast<unsigned char>(fmt_str[k])))
        precision += fmt_str[k++];
      if (precision.empty()) precision = "0";
    }
    while (k < fmt_str.size() && (fmt_str[k] == 'l' || fmt_str[k] == 'h' || fmt_str[k] == 'L')) ++k;
    if (k >= fmt_str.size()) MAGIX_FAIL("incomplete format");
    if (width.size() > 9 || precision.size() > 9) MAGIX_FAIL("width or precision too big");
    if (!width.empty()) budget_check_size(std::stoul(width), "string");
    char conv = fmt_str[k];
    if (conv == '%' && spec == "%" && width.empty() && precision.empty() && !arg) {
      out += '%';
      continue;
    }
    if (!arg) {
      if (next_arg >= args.size()) MAGIX_FAIL("not enough arguments for format string");
      arg = &args[next_arg++];
    }
    std::string piece;
    if (conv == 's' || conv == 'r' || conv == 'a') {
      std::string text = conv == 's' ? to_str(*arg) : repr(*arg);
      auto cps = decode_utf8(text);
      if (!precision.empty())
        cps.resize(std::min(cps.size(), static_cast<size_t>(std::stoul(precision))));
      piece = encode_utf8(cps, 0, cps.size());
      size_t w = width.empty() ? 0 : std::stoul(width);
      if (cps.size() < w) {
        std::string pad(w - cps.size(), ' ');
        piece = spec.find('-') != std::string::npos ? piece + pad : pad + piece;
      }
    } else if (std::strchr("diouxXeEfFgGc", conv)) {
      if (!arg->is_number()) {
        MAGIX_FAIL("%{} format: a real number is required, not {}", conv, type_name(*arg));
      }
      char buf[512];
      std::string f = spec + width + (precision.empty() ? "" : "." + precision);
      if (std::strchr("diouxXc", conv)) {
        auto v = static_cast<long long>(arg->kind == Kind::Float ? std::trunc(arg->f)
                                                                 : static_cast<double>(arg->i));
        if (arg->is_int_like()) v = arg->i;
        char c = conv == 'i' || conv == 'u' ? 'd' : conv;
        if (c == 'c') {
          append_utf8(piece, static_cast<char32_t>(v));
        } else {
          std::snprintf(buf, sizeof buf, (f + "ll" + c).c_str(), v);
          piece = buf;
        }
      } else {
        std::snprintf(buf, sizeof buf, (f + conv).c_str(), arg->as_double());
        piece = buf;
      }
    } else {
      MAGIX_FAIL("unsupported format character '{}'", conv);
    }
    budget_check_length(out.size() + piece.size(), "string");
    out += piece;
  }
  if (!mapping && next_arg < args.size())
    MAGIX_FAIL("not all arguments converted during string formatting");
  budget_check_size(out.size(), "string");
  return out;
}

}  // namespace magix::jinja
