// Attribute/item access, Python operators and str/dict/list methods for the Jinja interpreter.
#include <algorithm>
#include <cmath>
#include <limits>

#include "magix/error.hpp"
#include "text/jinja_builtins.hpp"

namespace magix::jinja {

void fail_undefined(const Value& v) {
  MAGIX_FAIL("{}", v.s.empty() ? std::string("undefined value") : v.s);
}

Value arg_or(const Args& args, size_t index, const char* name, const Value& fallback) {
  if (index < args.pos.size()) return args.pos[index];
  if (const Value* v = args.kwarg(name)) return *v;
  return fallback;
}

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
bool is_cased(char32_t c) { return to_upper(c) != c || to_lower(c) != c; }

bool is_ascii(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
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
    if (hit == std::string::npos || (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit)) {
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
    return prefix ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0;
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
      if (field.find_first_of(":!") != std::string::npos) MAGIX_FAIL("format specs are not supported");
      const Value* v = nullptr;
      if (field.empty()) {
        if (auto_index >= args.pos.size()) MAGIX_FAIL("Replacement index {} out of range", auto_index);
        v = &args.pos[auto_index++];
      } else if (std::all_of(field.begin(), field.end(), ::isdigit)) {
        size_t idx = std::stoul(field);
        if (idx >= args.pos.size()) MAGIX_FAIL("Replacement index {} out of range", idx);
        v = &args.pos[idx];
      } else {
        v = args.kwarg(field);
        if (!v) MAGIX_FAIL("'{}'", field);
      }
      out += to_str(*v);
      k = end;
    } else if (c == '}') {
      MAGIX_FAIL("Single '}}' encountered in format string");
    } else {
      out += c;
    }
  }
  return out;
}

Value string_method(const Value& self, const std::string& name) {
  const std::string s = self.s;
  auto fn = [&](auto body) { return Value::function("str." + name, body); };
  static const Value kNone = Value::none();
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    bool l = name != "rstrip", r = name != "lstrip";
    return fn([s, l, r](const Args& a) { return Value::str(py_strip(s, arg_or(a, 0, "chars", kNone), l, r)); });
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
      if (a.pos.empty()) MAGIX_FAIL("{} takes at least 1 argument", prefix ? "startswith" : "endswith");
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
        if (!first) out += s;
        first = false;
        out += need_str(v, "sequence item");
      }
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
      auto alpha = [](char32_t c) { return (c < 0x80 && std::isalpha(static_cast<int>(c))) || is_cased(c); };
      if (name == "isdigit") return Value::boolean(std::all_of(cps.begin(), cps.end(), dig));
      if (name == "isalpha") return Value::boolean(std::all_of(cps.begin(), cps.end(), alpha));
      if (name == "isalnum") {
        return Value::boolean(std::all_of(cps.begin(), cps.end(), [&](char32_t c) { return dig(c) || alpha(c); }));
      }
      if (name == "isspace") return Value::boolean(std::all_of(cps.begin(), cps.end(), is_py_space));
      bool any_cased = std::any_of(cps.begin(), cps.end(), is_cased);
      bool up = name == "isupper";
      return Value::boolean(any_cased && std::none_of(cps.begin(), cps.end(), [&](char32_t c) {
                              return up ? to_upper(c) != c : to_lower(c) != c;
                            }));
    });
  }
  return Value::undefined(fmt::format("'str object' has no attribute '{}'", name));
}

Value dict_method(const Value& self, const std::string& name, bool* found) {
  *found = true;
  auto d = self.dict;
  if (name == "items") {
    return Value::function("dict.items", [d](const Args&) {
      std::vector<Value> out;
      for (const auto& [k, v] : d->entries) out.push_back(Value::make_tuple({k, v}));
      return Value::make_list(std::move(out));
    });
  }
  if (name == "keys" || name == "values") {
    bool keys = name == "keys";
    return Value::function("dict." + name, [d, keys](const Args&) {
      std::vector<Value> out;
      for (const auto& [k, v] : d->entries) out.push_back(keys ? k : v);
      return Value::make_list(std::move(out));
    });
  }
  if (name == "get") {
    return Value::function("dict.get", [d](const Args& a) {
      if (a.pos.empty()) MAGIX_FAIL("get expected at least 1 argument");
      const Value* v = d->find(a.pos[0]);
      return v ? *v : (a.pos.size() > 1 ? a.pos[1] : Value::none());
    });
  }
  if (name == "copy") return Value::function("dict.copy", [self](const Args&) { return Value::make_dict(*self.dict); });
  if (name == "update" || name == "pop" || name == "popitem" || name == "setdefault" || name == "clear") {
    return Value::undefined(fmt::format("access to attribute '{}' of 'dict' object is unsafe.", name));
  }
  *found = false;
  return {};
}

Value list_method(const Value& self, const std::string& name) {
  if (name == "index" || name == "count") {
    bool count = name == "count";
    return Value::function("list." + name, [self, count](const Args& a) {
      if (a.pos.empty()) MAGIX_FAIL("{} takes exactly one argument", count ? "count" : "index");
      int64_t n = 0;
      for (size_t k = 0; k < self.items().size(); ++k) {
        if (equals(self.items()[k], a.pos[0])) {
          if (!count) return Value::integer(static_cast<int64_t>(k));
          ++n;
        }
      }
      if (!count) MAGIX_FAIL("{} is not in list", repr(a.pos[0]));
      return Value::integer(n);
    });
  }
  if (name == "append" || name == "extend" || name == "insert" || name == "pop" || name == "remove" ||
      name == "sort" || name == "reverse" || name == "clear") {
    return Value::undefined(fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, type_name(self)));
  }
  return Value::undefined(fmt::format("'{} object' has no attribute '{}'", type_name(self), name));
}

}  // namespace

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

std::string py_upper(const std::string& s) { return map_chars(s, to_upper); }
std::string py_lower(const std::string& s) { return map_chars(s, to_lower); }

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

Value get_attr(const Value& obj, const std::string& name) {
  switch (obj.kind) {
    case Kind::Undefined: fail_undefined(obj);
    case Kind::String: return string_method(obj, name);
    case Kind::Dict: {
      bool found = false;
      Value m = dict_method(obj, name, &found);
      if (found) return m;
      if (const Value* v = obj.dict->find(name)) return *v;
      return Value::undefined(fmt::format("'dict object' has no attribute '{}'", name));
    }
    case Kind::Namespace: {
      if (const Value* v = obj.dict->find(name)) return *v;
      return Value::undefined(fmt::format("'Namespace object' has no attribute '{}'", name));
    }
    case Kind::List:
    case Kind::Tuple: return list_method(obj, name);
    default: return Value::undefined(fmt::format("'{} object' has no attribute '{}'", type_name(obj), name));
  }
}

namespace {

// Python index normalization; false if out of range.
bool normalize_index(int64_t& i, size_t n) {
  if (i < 0) i += static_cast<int64_t>(n);
  return i >= 0 && i < static_cast<int64_t>(n);
}

}  // namespace

Value get_item(const Value& obj, const Value& key) {
  switch (obj.kind) {
    case Kind::Undefined: fail_undefined(obj);
    case Kind::Dict: {
      if (const Value* v = obj.dict->find(key)) return *v;
      if (key.kind == Kind::String) {
        bool found = false;
        Value m = dict_method(obj, key.s, &found);
        if (found) return m;
      }
      return Value::undefined(fmt::format("'dict object' has no attribute {}", repr(key)));
    }
    case Kind::List:
    case Kind::Tuple: {
      if (key.is_int_like()) {
        int64_t i = key.i;
        if (normalize_index(i, obj.items().size())) return obj.items()[static_cast<size_t>(i)];
        return Value::undefined(fmt::format("{} object has no element {}", type_name(obj), key.i));
      }
      if (key.kind == Kind::String) return get_attr(obj, key.s);
      return Value::undefined(fmt::format("{} indices must be integers or slices, not {}", type_name(obj), type_name(key)));
    }
    case Kind::String: {
      if (key.is_int_like()) {
        auto cps = decode_utf8(obj.s);
        int64_t i = key.i;
        if (normalize_index(i, cps.size())) return Value::str(encode_utf8(cps, static_cast<size_t>(i), static_cast<size_t>(i) + 1));
        return Value::undefined(fmt::format("str object has no element {}", key.i));
      }
      if (key.kind == Kind::String) return get_attr(obj, key.s);
      return Value::undefined("string indices must be integers");
    }
    case Kind::Namespace:
      if (key.kind == Kind::String) return get_attr(obj, key.s);
      return Value::undefined("'Namespace' object is not subscriptable");
    default: return Value::undefined(fmt::format("'{}' object is not subscriptable", type_name(obj)));
  }
}

Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  if (obj.is_undefined()) fail_undefined(obj);
  auto opt_int = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_none() || v.is_undefined()) return std::nullopt;
    if (!v.is_int_like()) MAGIX_FAIL("slice {} must be an integer or None, not {}", what, type_name(v));
    return v.i;
  };
  auto st = opt_int(step, "step").value_or(1);
  if (st == 0) MAGIX_FAIL("slice step cannot be zero");
  std::vector<char32_t> cps;
  size_t n;
  if (obj.kind == Kind::String) {
    cps = decode_utf8(obj.s);
    n = cps.size();
  } else if (obj.is_sequence()) {
    n = obj.items().size();
  } else {
    MAGIX_FAIL("'{}' object is not subscriptable", type_name(obj));
  }
  auto len = static_cast<int64_t>(n);
  auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
    if (!v) return dflt;
    int64_t x = *v;
    if (x < 0) x += len;
    if (st > 0) return std::clamp<int64_t>(x, 0, len);
    return std::clamp<int64_t>(x, -1, len - 1);
  };
  int64_t b = clamp(opt_int(start, "start"), st > 0 ? 0 : len - 1);
  int64_t e = clamp(opt_int(stop, "stop"), st > 0 ? len : -1);
  std::vector<size_t> idx;
  for (int64_t k = b; st > 0 ? k < e : k > e; k += st) idx.push_back(static_cast<size_t>(k));
  if (obj.kind == Kind::String) {
    std::string out;
    for (size_t k : idx) append_utf8(out, cps[k]);
    return Value::str(std::move(out));
  }
  std::vector<Value> out;
  for (size_t k : idx) out.push_back(obj.items()[k]);
  return obj.kind == Kind::Tuple ? Value::make_tuple(std::move(out)) : Value::make_list(std::move(out));
}

std::vector<Value> iterate(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return {};
    case Kind::List:
    case Kind::Tuple: return v.items();
    case Kind::Dict: {
      std::vector<Value> keys;
      for (const auto& [k, x] : v.dict->entries) keys.push_back(k);
      return keys;
    }
    case Kind::String: {
      std::vector<Value> out;
      for (char32_t c : decode_utf8(v.s)) {
        std::string s;
        append_utf8(s, c);
        out.push_back(Value::str(std::move(s)));
      }
      return out;
    }
    default: MAGIX_FAIL("'{}' object is not iterable", type_name(v));
  }
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind) {
    case Kind::Undefined: return false;
    case Kind::String:
      if (item.kind != Kind::String) {
        MAGIX_FAIL("'in <string>' requires string as left operand, not {}", type_name(item));
      }
      return container.s.find(item.s) != std::string::npos;
    case Kind::List:
    case Kind::Tuple:
      return std::any_of(container.items().begin(), container.items().end(),
                         [&](const Value& x) { return equals(x, item); });
    case Kind::Dict: return container.dict->find(item) != nullptr;
    default: MAGIX_FAIL("argument of type '{}' is not iterable", type_name(container));
  }
}

Value negate(const Value& v) {
  if (v.is_undefined()) fail_undefined(v);
  if (v.is_int_like()) {
    if (v.i == std::numeric_limits<int64_t>::min()) MAGIX_FAIL("integer overflow");
    return Value::integer(-v.i);
  }
  if (v.kind == Kind::Float) return Value::real(-v.f);
  MAGIX_FAIL("bad operand type for unary -: '{}'", type_name(v));
}

namespace {

Value repeat(const Value& seq, int64_t times) {
  if (seq.kind == Kind::String) {
    std::string out;
    for (int64_t k = 0; k < times; ++k) out += seq.s;
    return Value::str(std::move(out));
  }
  std::vector<Value> out;
  for (int64_t k = 0; k < times; ++k) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return seq.kind == Kind::Tuple ? Value::make_tuple(std::move(out)) : Value::make_list(std::move(out));
}

}  // namespace

Value binary_op(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  auto unsupported = [&]() -> Value {
    MAGIX_FAIL("unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a), type_name(b));
  };
  bool ints = a.is_int_like() && b.is_int_like();
  bool nums = a.is_number() && b.is_number();
  int64_t r = 0;
  if (op == "+") {
    if (ints) {
      if (__builtin_add_overflow(a.i, b.i, &r)) MAGIX_FAIL("integer overflow");
      return Value::integer(r);
    }
    if (nums) return Value::real(a.as_double() + b.as_double());
    if (a.kind == Kind::String && b.kind == Kind::String) return Value::str(a.s + b.s);
    if (a.kind == Kind::String) MAGIX_FAIL("can only concatenate str (not \"{}\") to str", type_name(b));
    if (a.is_sequence() && a.kind == b.kind) {
      std::vector<Value> out = a.items();
      out.insert(out.end(), b.items().begin(), b.items().end());
      return a.kind == Kind::Tuple ? Value::make_tuple(std::move(out)) : Value::make_list(std::move(out));
    }
    if (a.is_sequence()) MAGIX_FAIL("can only concatenate {} (not \"{}\") to {}", type_name(a), type_name(b), type_name(a));
    return unsupported();
  }
  if (op == "-") {
    if (ints) {
      if (__builtin_sub_overflow(a.i, b.i, &r)) MAGIX_FAIL("integer overflow");
      return Value::integer(r);
    }
    if (nums) return Value::real(a.as_double() - b.as_double());
    return unsupported();
  }
  if (op == "*") {
    if (ints) {
      if (__builtin_mul_overflow(a.i, b.i, &r)) MAGIX_FAIL("integer overflow");
      return Value::integer(r);
    }
    if (nums) return Value::real(a.as_double() * b.as_double());
    if ((a.kind == Kind::String || a.is_sequence()) && b.is_int_like()) return repeat(a, b.i);
    if ((b.kind == Kind::String || b.is_sequence()) && a.is_int_like()) return repeat(b, a.i);
    MAGIX_FAIL("can't multiply sequence by non-int of type '{}'", type_name(b));
  }
  if (!nums) {
    if (op == "%" && a.kind == Kind::String) MAGIX_FAIL("printf-style '%' formatting is not supported");
    return unsupported();
  }
  if (op == "/") {
    if (b.as_double() == 0) MAGIX_FAIL("division by zero");
    return Value::real(a.as_double() / b.as_double());
  }
  if (op == "//" || op == "%") {
    if (ints) {
      if (b.i == 0) MAGIX_FAIL("integer division or modulo by zero");
      int64_t q = a.i / b.i, m = a.i % b.i;
      if (m != 0 && ((m < 0) != (b.i < 0))) {
        --q;
        m += b.i;
      }
      return Value::integer(op == "//" ? q : m);
    }
    double x = a.as_double(), y = b.as_double();
    if (y == 0) MAGIX_FAIL("float floor division by zero");
    double m = std::fmod(x, y);
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    if (op == "%") return Value::real(m == 0 ? std::copysign(0.0, y) : m);
    return Value::real(std::floor((x - m) / y + 0.5) == (x - m) / y ? (x - m) / y : std::floor(x / y));
  }
  if (op == "**") {
    if (ints && b.i >= 0) {
      int64_t result = 1, base = a.i;
      if (base == 0 || base == 1) return Value::integer(b.i == 0 ? 1 : base);
      if (base == -1) return Value::integer(b.i % 2 ? -1 : 1);
      for (int64_t e = b.i; e > 0; --e) {
        if (__builtin_mul_overflow(result, base, &result)) MAGIX_FAIL("integer overflow");
      }
      return Value::integer(result);
    }
    return Value::real(std::pow(a.as_double(), b.as_double()));
  }
  return unsupported();
}

}  // namespace magix::jinja
