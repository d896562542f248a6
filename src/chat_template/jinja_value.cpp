#include "chat_template/jinja_value.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "chat_template/jinja_budget.hpp"
#include "magix/error.hpp"

namespace magix::jinja {

namespace {

// While a Value is freeing its children (see ~Value), the values to free next.
thread_local std::vector<Value>* t_release_queue = nullptr;

}  // namespace

Value::~Value() {
  if (!list && !dict) return;
  bool last = (list && list.use_count() == 1) || (dict && dict.use_count() == 1);
  if (!last) return;  // the members' own destructors just drop a reference
  if (t_release_queue) {
    t_release_queue->push_back(std::move(*this));  // freed by the loop below, not recursively
    return;
  }
  std::vector<Value> queue;
  t_release_queue = &queue;
  list.reset();  // children that are last references land in `queue`
  dict.reset();
  while (!queue.empty()) {
    Value v = std::move(queue.back());
    queue.pop_back();
    v.list.reset();
    v.dict.reset();
  }
  t_release_queue = nullptr;
}

Value Value::undefined(std::string hint) {
  Value v;
  v.kind = Kind::Undefined;
  v.s = std::move(hint);
  return v;
}
Value Value::none() {
  Value v;
  v.kind = Kind::None;
  return v;
}
Value Value::boolean(bool b) {
  Value v;
  v.kind = Kind::Bool;
  v.i = b ? 1 : 0;
  return v;
}
Value Value::integer(int64_t x) {
  Value v;
  v.kind = Kind::Int;
  v.i = x;
  return v;
}
Value Value::real(double x) {
  Value v;
  v.kind = Kind::Float;
  v.f = x;
  return v;
}
Value Value::str(std::string x) {
  Value v;
  v.kind = Kind::String;
  v.s = std::move(x);
  return v;
}
Value Value::make_list(std::vector<Value> items) {
  Value v;
  v.kind = Kind::List;
  v.list = std::make_shared<std::vector<Value>>(std::move(items));
  return v;
}
Value Value::make_tuple(std::vector<Value> items) {
  Value v = make_list(std::move(items));
  v.kind = Kind::Tuple;
  return v;
}
Value Value::make_dict(Dict d) {
  Value v;
  v.kind = Kind::Dict;
  v.dict = std::make_shared<Dict>(std::move(d));
  return v;
}
Value Value::make_namespace(Dict d) {
  Value v = make_dict(std::move(d));
  v.kind = Kind::Namespace;
  return v;
}
Value Value::function(std::string name, std::function<Value(const Args&)> call) {
  Value v;
  v.kind = Kind::Callable;
  v.fn = std::make_shared<const Function>(Function{std::move(name), std::move(call)});
  return v;
}

const Value* Dict::find(const Value& key) const {
  for (const auto& [k, v] : entries) {
    if (equals(k, key)) return &v;
  }
  return nullptr;
}
const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k.kind == Kind::String && k.s == key) return &v;
  }
  return nullptr;
}
void Dict::set(Value key, Value value) {
  for (auto& [k, v] : entries) {
    if (equals(k, key)) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(std::move(key), std::move(value));
}

const Value* Args::kwarg(std::string_view name) const {
  for (const auto& [k, v] : kw) {
    if (k == name) return &v;
  }
  return nullptr;
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None:
      return false;
    case Kind::Bool:
    case Kind::Int:
      return v.i != 0;
    case Kind::Float:
      return v.f != 0.0;
    case Kind::String:
      return !v.s.empty();
    case Kind::List:
    case Kind::Tuple:
      return !v.list->empty();
    case Kind::Dict:
      return !v.dict->entries.empty();
    case Kind::Namespace:
    case Kind::Callable:
      return true;
  }
  return false;
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_int_like() && b.is_int_like()) return a.i == b.i;
    return a.as_double() == b.as_double();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::Undefined:
    case Kind::None:
      return true;
    case Kind::String:
      return a.s == b.s;
    case Kind::List:
    case Kind::Tuple: {
      if (a.list->size() != b.list->size()) return false;
      ValueDepthGuard guard;
      for (size_t k = 0; k < a.list->size(); ++k) {
        if (!equals((*a.list)[k], (*b.list)[k])) return false;
      }
      return true;
    }
    case Kind::Dict: {
      if (a.dict->entries.size() != b.dict->entries.size()) return false;
      ValueDepthGuard guard;
      for (const auto& [k, v] : a.dict->entries) {
        const Value* other = b.dict->find(k);
        if (!other || !equals(v, *other)) return false;
      }
      return true;
    }
    case Kind::Namespace:
      return a.dict == b.dict;
    case Kind::Callable:
      return a.fn == b.fn;
    default:
      return false;
  }
}

bool less_than(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_int_like() && b.is_int_like()) return a.i < b.i;
    return a.as_double() < b.as_double();
  }
  if (a.kind == Kind::String && b.kind == Kind::String)
    return a.s < b.s;  // UTF-8 keeps code point order
  if (a.is_sequence() && a.kind == b.kind) {
    const auto &x = *a.list, &y = *b.list;
    ValueDepthGuard guard;
    for (size_t k = 0; k < std::min(x.size(), y.size()); ++k) {
      if (!equals(x[k], y[k])) return less_than(x[k], y[k]);
    }
    return x.size() < y.size();
  }
  MAGIX_FAIL("'<' not supported between instances of '{}' and '{}'", type_name(a), type_name(b));
}

std::string type_name(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
      return "Undefined";
    case Kind::None:
      return "NoneType";
    case Kind::Bool:
      return "bool";
    case Kind::Int:
      return "int";
    case Kind::Float:
      return "float";
    case Kind::String:
      return "str";
    case Kind::List:
      return "list";
    case Kind::Tuple:
      return "tuple";
    case Kind::Dict:
      return "dict";
    case Kind::Namespace:
      return "Namespace";
    case Kind::Callable:
      return "function";
  }
  return "object";
}

std::string float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // "-d.ddde+XX"
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  int exp = std::stoi(sci.substr(e + 1));
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  std::string out;
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else if (static_cast<size_t>(exp) + 1 >= digits.size()) {
      out = digits + std::string(static_cast<size_t>(exp) + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, static_cast<size_t>(exp) + 1) + "." +
            digits.substr(static_cast<size_t>(exp) + 1);
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) {
      out += '.';
      out += digits.substr(1);
    }
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += eb;
  }
  return neg ? "-" + out : out;
}

namespace {

// Code points Python's str.isprintable() rejects, among those chat data may contain
// (control and format characters, separators other than ' ', private use, surrogates).
bool is_py_unprintable(char32_t c) {
  if (c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad) return true;
  if (c == 0x1680 || c == 0x180e || (c >= 0x2000 && c <= 0x200f)) return true;
  if ((c >= 0x2028 && c <= 0x202f) || (c >= 0x205f && c <= 0x206f) || c == 0x3000) return true;
  if (c == 0xfeff || (c >= 0xfff9 && c <= 0xfffb) || (c >= 0xd800 && c <= 0xf8ff)) return true;
  if ((c >= 0xe0000 && c <= 0xe007f) || c >= 0xf0000) return true;
  return false;
}

std::string repr_string(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : decode_utf8(s)) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == static_cast<char32_t>(quote)) {
      out += '\\';
      out += quote;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (is_py_unprintable(c)) {
      char b[16];
      if (c < 0x100) {
        std::snprintf(b, sizeof b, "\\x%02x", static_cast<unsigned>(c));
      } else if (c < 0x10000) {
        std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned>(c));
      } else {
        std::snprintf(b, sizeof b, "\\U%08x", static_cast<unsigned>(c));
      }
      out += b;
    } else {
      append_utf8(out, c);
    }
  }
  out += quote;
  return out;
}

std::string join_repr(const std::vector<Value>& items) {
  ValueDepthGuard guard;
  std::string out;
  for (size_t k = 0; k < items.size(); ++k) {
    std::string item = repr(items[k]);
    budget_check_length(out.size() + item.size() + 2, "string");
    if (k) out += ", ";
    out += item;
  }
  return out;
}

std::string dict_repr(const Dict& d) {
  ValueDepthGuard guard;
  std::string out = "{";
  for (size_t k = 0; k < d.entries.size(); ++k) {
    std::string item = repr(d.entries[k].first) + ": " + repr(d.entries[k].second);
    budget_check_length(out.size() + item.size() + 2, "string");
    if (k) out += ", ";
    out += item;
  }
  return out + "}";
}

}  // namespace

std::string repr(const Value& v) {
  switch (v.kind) {
    case Kind::String:
      return repr_string(v.s);
    case Kind::Undefined:
      return "Undefined";
    default:
      return to_str(v);
  }
}

std::string to_str(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
      return "";
    case Kind::None:
      return "None";
    case Kind::Bool:
      return v.i ? "True" : "False";
    case Kind::Int:
      return std::to_string(v.i);
    case Kind::Float:
      return float_repr(v.f);
    case Kind::String:
      return v.s;
    case Kind::List: {
      std::string out(1, '[');
      out += join_repr(*v.list);
      out += ']';
      return out;
    }
    case Kind::Tuple: {
      std::string out(1, '(');
      out += join_repr(*v.list);
      out += v.list->size() == 1 ? ",)" : ")";
      return out;
    }
    case Kind::Dict:
      return dict_repr(*v.dict);
    case Kind::Namespace:
      return "<Namespace " + dict_repr(*v.dict) + ">";
    case Kind::Callable:
      return "<function " + v.fn->name + ">";
  }
  return "";
}

namespace {

void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", c);
          out += b;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

std::string json_key(const Value& k) {
  switch (k.kind) {
    case Kind::String:
      return k.s;
    case Kind::Bool:
      return k.i ? "true" : "false";
    case Kind::None:
      return "null";
    case Kind::Int:
      return std::to_string(k.i);
    case Kind::Float:
      return float_repr(k.f);
    default:
      MAGIX_FAIL("keys must be str, int, float, bool or None, not {}", type_name(k));
  }
}

void json_value(std::string& out, const Value& v, const JsonOptions& o, int level) {
  ValueDepthGuard guard;
  budget_check_length(out.size(), "string");
  auto newline = [&](int lvl) {
    if (!o.has_indent) return;
    budget_check_length(out.size() + 1 + static_cast<uint64_t>(lvl) * o.indent.size(), "string");
    out += '\n';
    for (int k = 0; k < lvl; ++k) out += o.indent;
  };
  switch (v.kind) {
    case Kind::None:
      out += "null";
      return;
    case Kind::Bool:
      out += v.i ? "true" : "false";
      return;
    case Kind::Int:
      out += std::to_string(v.i);
      return;
    case Kind::Float:
      if (std::isnan(v.f)) {
        out += "NaN";
      } else if (std::isinf(v.f)) {
        out += v.f > 0 ? "Infinity" : "-Infinity";
      } else {
        out += float_repr(v.f);
      }
      return;
    case Kind::String:
      json_string(out, v.s);
      return;
    case Kind::List:
    case Kind::Tuple: {
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += o.item_separator;
        newline(level + 1);
        json_value(out, (*v.list)[k], o, level + 1);
      }
      newline(level);
      out += ']';
      return;
    }
    case Kind::Dict: {
      if (v.dict->entries.empty()) {
        out += "{}";
        return;
      }
      std::vector<std::pair<std::string, const Value*>> entries;
      for (const auto& [k, x] : v.dict->entries) entries.emplace_back(json_key(k), &x);
      if (o.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
      }
      out += '{';
      for (size_t k = 0; k < entries.size(); ++k) {
        if (k) out += o.item_separator;
        newline(level + 1);
        json_string(out, entries[k].first);
        out += o.key_separator;
        json_value(out, *entries[k].second, o, level + 1);
      }
      newline(level);
      out += '}';
      return;
    }
    default:
      MAGIX_FAIL("Object of type {} is not JSON serializable", type_name(v));
  }
}

}  // namespace

std::string to_json(const Value& v, const JsonOptions& options) {
  std::string out;
  json_value(out, v, options, 0);
  budget_check_size(out.size(), "string");
  return out;
}

namespace {

Value from_json_at(const nlohmann::ordered_json& j, int depth);

}  // namespace

Value from_json(const nlohmann::ordered_json& j) {
  return from_json_at(j, 0);
}

namespace {

Value from_json_at(const nlohmann::ordered_json& j, int depth) {
  if (depth > kMaxJsonDepth)
    MAGIX_FAIL("the template context is nested deeper than {} levels", kMaxJsonDepth);
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::none();
    case nlohmann::ordered_json::value_t::boolean:
      return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      auto u = j.get<uint64_t>();
      if (u <= static_cast<uint64_t>(INT64_MAX)) return Value::integer(static_cast<int64_t>(u));
      return Value::real(static_cast<double>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Value::real(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value::str(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& x : j) items.push_back(from_json_at(x, depth + 1));
      return Value::make_list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;
      d.entries.reserve(j.size());
      for (const auto& [k, x] : j.items())
        d.entries.emplace_back(Value::str(k), from_json_at(x, depth + 1));
      return Value::make_dict(std::move(d));
    }
    default:
      MAGIX_FAIL("unsupported JSON value in the template context");
  }
}

}  // namespace

std::vector<char32_t> decode_utf8(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  size_t k = 0;
  while (k < s.size()) {
    auto c = static_cast<unsigned char>(s[k]);
    int n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    if (n < 0 || k + static_cast<size_t>(n) >= s.size() + (n == 0 ? 1 : 0)) {
      out.push_back(c);  // invalid lead byte or truncated sequence: one unit per byte
      ++k;
      continue;
    }
    char32_t cp = n == 0 ? c : n == 1 ? (c & 0x1f) : n == 2 ? (c & 0x0f) : (c & 0x07);
    bool ok = true;
    for (int m = 1; m <= n; ++m) {
      auto cc = static_cast<unsigned char>(s[k + static_cast<size_t>(m)]);
      if ((cc >> 6) != 2) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (!ok) {
      out.push_back(c);
      ++k;
      continue;
    }
    out.push_back(cp);
    k += static_cast<size_t>(n) + 1;
  }
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xc0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xe0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  }
}

std::string encode_utf8(const std::vector<char32_t>& cps, size_t begin, size_t end) {
  std::string out;
  for (size_t k = begin; k < end; ++k) append_utf8(out, cps[k]);
  return out;
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  bool ascii = true;
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return s.size();
  n = decode_utf8(s).size();
  return n;
}

bool is_py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
         c == 0x205f || c == 0x3000;
}

}  // namespace magix::jinja
