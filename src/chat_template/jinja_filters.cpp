// jinja2's builtin filters and tests (filters.py, tests.py) over our values, plus transformers'
// tojson. Filters that jinja2 returns as generators (map, select, reverse of a list, ...) return
// lists here: identical once joined, listed or iterated; only printing them directly differs.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "chat_template/jinja_budget.hpp"
#include "chat_template/jinja_builtins.hpp"
#include "magix/error.hpp"

namespace magix::jinja {

namespace {

const Value kNone = Value::none();
const Value kFalse = Value::boolean(false);

const std::set<std::string>& filter_names() {
  static const std::set<std::string> names = {
      "abs",    "attr",       "batch",       "capitalize", "center",   "count",
      "d",      "default",    "dictsort",    "e",          "escape",   "filesizeformat",
      "first",  "float",      "forceescape", "format",     "groupby",  "indent",
      "int",    "items",      "join",        "last",       "length",   "list",
      "lower",  "map",        "max",         "min",        "pprint",   "random",
      "reject", "rejectattr", "replace",     "reverse",    "round",    "safe",
      "select", "selectattr", "slice",       "sort",       "string",   "striptags",
      "sum",    "title",      "tojson",      "trim",       "truncate", "unique",
      "upper",  "urlencode",  "urlize",      "wordcount",  "wordwrap", "xmlattr"};
  return names;
}

const std::set<std::string>& test_names() {
  static const std::set<std::string> names = {
      "odd",    "even",     "divisibleby", "defined",     "undefined", "filter",   "test",
      "none",   "boolean",  "false",       "true",        "integer",   "float",    "lower",
      "upper",  "string",   "mapping",     "number",      "sequence",  "iterable", "callable",
      "sameas", "escaped",  "in",          "==",          "eq",        "equalto",  "!=",
      "ne",     ">",        "gt",          "greaterthan", ">=",        "ge",       "<",
      "lt",     "lessthan", "<=",          "le"};
  return names;
}

int64_t py_len(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
      return 0;
    case Kind::String:
      return static_cast<int64_t>(utf8_length(v.s));
    case Kind::List:
    case Kind::Tuple:
      return static_cast<int64_t>(v.items().size());
    case Kind::Dict:
      return static_cast<int64_t>(v.dict->entries.size());
    default:
      MAGIX_FAIL("object of type '{}' has no len()", type_name(v));
  }
}

// jinja2's make_attrgetter: "a.b.0" looks up each part with getitem (integers as indices).
Value attr_path(const Value& item, const Value& attribute) {
  if (attribute.is_int_like()) return get_item(item, attribute);
  std::string path = to_str(attribute);
  Value cur = item;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    cur = get_item(cur, digits ? Value::integer(std::stoll(part)) : Value::str(part));
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

// The key a sort/unique/min/max compares: lowercased strings unless case_sensitive.
Value sort_key(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.kind == Kind::String) return Value::str(py_lower(v.s));
  return v;
}

Value select_like(const Value& seq, const Args& args, bool by_attr, bool keep_if) {
  // select(test, *args) / selectattr(attr, test, *args); no test: truthiness
  size_t k = 0;
  Value attribute;
  if (by_attr) {
    if (args.pos.empty()) MAGIX_FAIL("missing parameter for attribute name");
    attribute = args.pos[k++];
  }
  std::string test;
  Args test_args;
  if (k < args.pos.size()) {
    test = to_str(args.pos[k++]);
    test_args.pos.assign(args.pos.begin() + static_cast<long>(k), args.pos.end());
    test_args.kw = args.kw;
  }
  std::vector<Value> out;
  for (const Value& item : iterate(seq)) {
    Value x = by_attr ? attr_path(item, attribute) : item;
    bool ok = test.empty() ? truthy(x) : call_test(test, x, test_args);
    if (ok == keep_if) out.push_back(item);
  }
  return Value::make_list(std::move(out));
}

Value map_filter(const Value& seq, const Args& args) {
  std::vector<Value> out;
  if (const Value* attribute = args.kwarg("attribute")) {
    const Value* dflt = args.kwarg("default");
    for (const Value& item : iterate(seq)) {
      Value x = attr_path(item, *attribute);
      out.push_back(x.is_undefined() && dflt ? *dflt : x);
    }
    return Value::make_list(std::move(out));
  }
  if (args.pos.empty()) MAGIX_FAIL("map requires a filter argument");
  std::string name = to_str(args.pos[0]);
  Args rest;
  rest.pos.assign(args.pos.begin() + 1, args.pos.end());
  rest.kw = args.kw;
  for (const Value& item : iterate(seq)) out.push_back(call_filter(name, item, rest));
  return Value::make_list(std::move(out));
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::vector<std::string> splitlines(const std::string& s) {
  std::vector<std::string> lines;
  auto cps = decode_utf8(s);
  size_t start = 0;
  for (size_t k = 0; k < cps.size(); ++k) {
    char32_t c = cps[k];
    bool brk = c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || (c >= 0x1c && c <= 0x1e) ||
               c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) continue;
    lines.push_back(encode_utf8(cps, start, k));
    if (c == '\r' && k + 1 < cps.size() && cps[k + 1] == '\n') ++k;
    start = k + 1;
  }
  if (start < cps.size()) lines.push_back(encode_utf8(cps, start, cps.size()));
  return lines;
}

Value indent_filter(const Value& v, const Args& args) {
  Value width = arg_or(args, 0, "width", Value::integer(4));
  bool first = truthy(arg_or(args, 1, "first", kFalse));
  bool blank = truthy(arg_or(args, 2, "blank", kFalse));
  if (width.kind != Kind::String) budget_check_size(std::max<int64_t>(0, width.i), "string");
  std::string ind = width.kind == Kind::String
                        ? width.s
                        : std::string(static_cast<size_t>(std::max<int64_t>(0, width.i)), ' ');
  auto lines = splitlines(to_str(v) + "\n");
  budget_check_size(lines.size() * ind.size(), "string");
  std::string rv;
  if (blank) {
    for (size_t k = 0; k < lines.size(); ++k) rv += (k ? "\n" + ind : "") + lines[k];
  } else {
    rv = lines.empty() ? "" : lines[0];
    if (lines.size() > 1) {
      rv += "\n";
      for (size_t k = 1; k < lines.size(); ++k)
        rv += (k > 1 ? "\n" : "") + (lines[k].empty() ? "" : ind) + lines[k];
    }
  }
  return Value::str(first ? ind + rv : rv);
}

Value round_filter(const Value& v, const Args& args) {
  int64_t precision = arg_or(args, 0, "precision", Value::integer(0)).i;
  std::string method = to_str(arg_or(args, 1, "method", Value::str("common")));
  if (method != "common" && method != "ceil" && method != "floor") {
    MAGIX_FAIL("method must be 'common', 'ceil' or 'floor'");
  }
  if (method == "common" && v.is_int_like()) return Value::integer(v.i);
  double x = v.as_double();
  if (!v.is_number()) MAGIX_FAIL("type {} doesn't define __round__ method", type_name(v));
  if (method == "common") {
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(std::clamp<int64_t>(precision, 0, 300)),
                  x);
    return Value::real(std::strtod(buf, nullptr));
  }
  double scale = std::pow(10.0, static_cast<double>(precision));
  double r = method == "ceil" ? std::ceil(x * scale) : std::floor(x * scale);
  return Value::real(r / scale);
}

Value int_filter(const Value& v, const Args& args) {
  Value dflt = arg_or(args, 0, "default", Value::integer(0));
  int base = static_cast<int>(arg_or(args, 1, "base", Value::integer(10)).i);
  if (v.is_int_like()) return Value::integer(v.i);
  if (v.kind == Kind::Float)
    return std::isfinite(v.f) ? Value::integer(static_cast<int64_t>(v.f)) : dflt;
  if (v.kind == Kind::String) {
    std::string s = py_strip(v.s, kNone, true, true);
    s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
    char* end = nullptr;
    errno = 0;
    long long r = std::strtoll(s.c_str(), &end, base);
    if (!s.empty() && end && *end == 0 && errno == 0) return Value::integer(r);
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end && *end == 0 && std::isfinite(d))
      return Value::integer(static_cast<int64_t>(d));
  }
  return dflt;
}

Value float_filter(const Value& v, const Args& args) {
  Value dflt = arg_or(args, 0, "default", Value::real(0.0));
  if (v.is_number()) return Value::real(v.as_double());
  if (v.kind == Kind::String) {
    std::string s = py_strip(v.s, kNone, true, true);
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end && *end == 0) return Value::real(d);
  }
  return dflt;
}

Value tojson_filter(const Value& v, const Args& args) {
  JsonOptions o;
  bool ensure_ascii = truthy(arg_or(args, 0, "ensure_ascii", kFalse));
  Value indent = arg_or(args, 1, "indent", kNone);
  if (!indent.is_none()) {
    o.has_indent = true;
    if (indent.kind != Kind::String) budget_check_size(std::max<int64_t>(0, indent.i), "string");
    o.indent = indent.kind == Kind::String
                   ? indent.s
                   : std::string(static_cast<size_t>(std::max<int64_t>(0, indent.i)), ' ');
    o.item_separator = ",";
  }
  Value seps = arg_or(args, 2, "separators", kNone);
  if (seps.is_sequence() && seps.items().size() == 2) {
    o.item_separator = to_str(seps.items()[0]);
    o.key_separator = to_str(seps.items()[1]);
  }
  o.sort_keys = truthy(arg_or(args, 3, "sort_keys", kFalse));
  std::string out = to_json(v, o);
  if (!ensure_ascii) return Value::str(out);
  std::string ascii;
  for (char32_t c : decode_utf8(out)) {
    if (c < 0x80) {
      ascii += static_cast<char>(c);
      continue;
    }
    auto unit = [&](unsigned u) {
      char b[16];
      std::snprintf(b, sizeof b, "\\u%04x", u & 0xffffu);
      ascii += b;
    };
    if (c >= 0x10000) {
      unit(0xd800 + ((c - 0x10000) >> 10));
      unit(0xdc00 + ((c - 0x10000) & 0x3ff));
    } else {
      unit(static_cast<unsigned>(c));
    }
  }
  return Value::str(ascii);
}

Value sorted_values(std::vector<Value> items, const Args& args, size_t first_arg) {
  bool reverse = truthy(arg_or(args, first_arg, "reverse", kFalse));
  bool case_sensitive = truthy(arg_or(args, first_arg + 1, "case_sensitive", kFalse));
  Value attribute = arg_or(args, first_arg + 2, "attribute", kNone);
  auto key = [&](const Value& x) {
    return sort_key(attribute.is_none() ? x : attr_path(x, attribute), case_sensitive);
  };
  std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
    return reverse ? less_than(key(b), key(a)) : less_than(key(a), key(b));
  });
  return Value::make_list(std::move(items));
}

}  // namespace

bool has_filter(const std::string& name) {
  return filter_names().count(name) > 0;
}
bool has_test(const std::string& name) {
  return test_names().count(name) > 0;
}

Value call_filter(const std::string& name, const Value& v, const Args& args) {
  const Value& a0 = args.pos.empty() ? kNone : args.pos[0];
  if (name == "default" || name == "d") {
    Value dflt = arg_or(args, 0, "default_value", Value::str(""));
    bool boolean = truthy(arg_or(args, 1, "boolean", kFalse));
    return v.is_undefined() || (boolean && !truthy(v)) ? dflt : v;
  }
  if (name == "length" || name == "count") return Value::integer(py_len(v));
  if (name == "string") return Value::str(to_str(v));
  if (name == "safe") return v;
  if (name == "escape" || name == "e" || name == "forceescape")
    return Value::str(html_escape(to_str(v)));
  if (name == "trim")
    return Value::str(py_strip(to_str(v), arg_or(args, 0, "chars", kNone), true, true));
  if (name == "upper") return Value::str(py_upper(to_str(v)));
  if (name == "lower") return Value::str(py_lower(to_str(v)));
  if (name == "capitalize") return Value::str(py_capitalize(to_str(v)));
  if (name == "title") {
    // jinja2: words begin after runs of [-\s({[<]; each word is capitalized
    std::string s = to_str(v), out;
    auto cps = decode_utf8(s);
    bool start = true;
    for (char32_t c : cps) {
      bool sep = c == '-' || is_py_space(c) || c == '(' || c == '{' || c == '[' || c == '<';
      std::string one;
      append_utf8(one, c);
      out += sep ? one : (start ? py_upper(one) : py_lower(one));
      start = sep;
    }
    return Value::str(out);
  }
  if (name == "replace") {
    if (args.pos.size() < 2) MAGIX_FAIL("replace needs old and new");
    Value count = arg_or(args, 2, "count", kNone);
    return Value::str(py_replace(to_str(v), to_str(args.pos[0]), to_str(args.pos[1]),
                                 count.is_none() ? -1 : count.i));
  }
  if (name == "join") {
    std::string sep = to_str(arg_or(args, 0, "d", Value::str("")));
    Value attribute = arg_or(args, 1, "attribute", kNone);
    std::string out;
    bool first = true;
    for (const Value& x : iterate(v)) {
      std::string item = to_str(attribute.is_none() ? x : attr_path(x, attribute));
      budget_check_length(out.size() + (first ? 0 : sep.size()) + item.size(), "string");
      if (!first) out += sep;
      first = false;
      out += item;
    }
    budget_check_size(out.size(), "string");
    return Value::str(out);
  }
  if (name == "list") return Value::make_list(iterate(v));
  if (name == "first") {
    auto items = iterate(v);
    return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
  }
  if (name == "last") {
    auto items = iterate(v);
    return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
  }
  if (name == "reverse") {
    if (v.kind == Kind::String) return get_slice(v, kNone, kNone, Value::integer(-1));
    auto items = iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::make_list(std::move(items));
  }
  if (name == "int") return int_filter(v, args);
  if (name == "float") return float_filter(v, args);
  if (name == "abs") {
    if (v.is_int_like()) return Value::integer(v.i < 0 ? -v.i : v.i);
    if (v.kind == Kind::Float) return Value::real(std::fabs(v.f));
    MAGIX_FAIL("bad operand type for abs(): '{}'", type_name(v));
  }
  if (name == "round") return round_filter(v, args);
  if (name == "items") {
    if (v.is_undefined()) return Value::make_list({});
    if (v.kind != Kind::Dict) MAGIX_FAIL("Can only get item pairs from a mapping.");
    std::vector<Value> out;
    for (const auto& [k, x] : v.dict->entries) out.push_back(Value::make_tuple({k, x}));
    return Value::make_list(std::move(out));
  }
  if (name == "dictsort") {
    if (v.kind != Kind::Dict) MAGIX_FAIL("dictsort requires a mapping");
    bool case_sensitive = truthy(arg_or(args, 0, "case_sensitive", kFalse));
    std::string by = to_str(arg_or(args, 1, "by", Value::str("key")));
    bool reverse = truthy(arg_or(args, 2, "reverse", kFalse));
    size_t pos = by == "key" ? 0 : by == "value" ? 1 : 2;
    if (pos == 2) MAGIX_FAIL("You can only sort by either \"key\" or \"value\"");
    std::vector<Value> out;
    for (const auto& [k, x] : v.dict->entries) out.push_back(Value::make_tuple({k, x}));
    std::stable_sort(out.begin(), out.end(), [&](const Value& a, const Value& b) {
      Value ka = sort_key(a.items()[pos], case_sensitive),
            kb = sort_key(b.items()[pos], case_sensitive);
      return reverse ? less_than(kb, ka) : less_than(ka, kb);
    });
    return Value::make_list(std::move(out));
  }
  if (name == "sort") return sorted_values(iterate(v), args, 0);
  if (name == "unique" || name == "min" || name == "max") {
    bool case_sensitive = truthy(arg_or(args, 0, "case_sensitive", kFalse));
    Value attribute = arg_or(args, 1, "attribute", kNone);
    auto key = [&](const Value& x) {
      return sort_key(attribute.is_none() ? x : attr_path(x, attribute), case_sensitive);
    };
    auto items = iterate(v);
    if (name == "unique") {
      std::vector<Value> out, seen;
      for (const Value& x : items) {
        Value kx = key(x);
        if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, kx); })) {
          seen.push_back(kx);
          out.push_back(x);
        }
      }
      return Value::make_list(std::move(out));
    }
    if (items.empty())
      return Value::undefined(fmt::format("No aggregated item, sequence was empty."));
    Value best = items[0];
    for (const Value& x : items) {
      bool better = name == "min" ? less_than(key(x), key(best)) : less_than(key(best), key(x));
      if (better) best = x;
    }
    return best;
  }
  if (name == "sum") {
    Value attribute = arg_or(args, 0, "attribute", kNone);
    Value total = arg_or(args, 1, "start", Value::integer(0));
    for (const Value& x : iterate(v))
      total = binary_op("+", total, attribute.is_none() ? x : attr_path(x, attribute));
    return total;
  }
  if (name == "map") return map_filter(v, args);
  if (name == "select") return select_like(v, args, false, true);
  if (name == "reject") return select_like(v, args, false, false);
  if (name == "selectattr") return select_like(v, args, true, true);
  if (name == "rejectattr") return select_like(v, args, true, false);
  if (name == "attr") return get_attr(v, to_str(a0));
  if (name == "tojson") return tojson_filter(v, args);
  if (name == "format") {
    if (!args.pos.empty() && !args.kw.empty())
      MAGIX_FAIL("can't handle positional and keyword arguments at the same time");
    if (!args.kw.empty()) {
      Dict d;
      for (const auto& [k, x] : args.kw) d.set(Value::str(k), x);
      return Value::str(py_percent_format(to_str(v), Value::make_dict(std::move(d))));
    }
    return Value::str(py_percent_format(to_str(v), Value::make_tuple(args.pos)));
  }
  if (name == "indent") return indent_filter(v, args);
  if (name == "center") {
    int64_t width = arg_or(args, 0, "width", Value::integer(80)).i;
    std::string s = to_str(v);
    int64_t len = static_cast<int64_t>(utf8_length(s));
    if (width <= len) return Value::str(s);
    budget_check_size(static_cast<uint64_t>(width) + s.size(), "string");
    int64_t marg = width - len, left = marg / 2 + (marg & width & 1);
    return Value::str(std::string(static_cast<size_t>(left), ' ') + s +
                      std::string(static_cast<size_t>(marg - left), ' '));
  }
  if (name == "wordcount") {
    int64_t n = 0;
    bool in_word = false;
    for (char32_t c : decode_utf8(to_str(v))) {
      bool w = (c < 0x80 && (std::isalnum(static_cast<int>(c)) || c == '_')) ||
               (c >= 0x80 && !is_py_space(c));
      if (w && !in_word) ++n;
      in_word = w;
    }
    return Value::integer(n);
  }
  if (name == "truncate") {
    std::string s = to_str(v);
    int64_t length = arg_or(args, 0, "length", Value::integer(255)).i;
    bool killwords = truthy(arg_or(args, 1, "killwords", kFalse));
    std::string end = to_str(arg_or(args, 2, "end", Value::str("...")));
    Value lw = arg_or(args, 3, "leeway", kNone);
    int64_t leeway = lw.is_none() ? 5 : lw.i;
    auto cps = decode_utf8(s);
    if (static_cast<int64_t>(cps.size()) <= length + leeway) return Value::str(s);
    size_t cut =
        static_cast<size_t>(std::max<int64_t>(0, length - static_cast<int64_t>(utf8_length(end))));
    std::string head = encode_utf8(cps, 0, std::min(cut, cps.size()));
    if (killwords) return Value::str(head + end);
    size_t sp = head.rfind(' ');
    return Value::str((sp == std::string::npos ? head : head.substr(0, sp)) + end);
  }
  if (name == "batch") {
    int64_t n = a0.i;
    if (n <= 0) MAGIX_FAIL("batch size must be positive");
    Value fill = arg_or(args, 1, "fill_with", kNone);
    std::vector<Value> out, cur;
    for (const Value& x : iterate(v)) {
      cur.push_back(x);
      if (static_cast<int64_t>(cur.size()) == n) {
        out.push_back(Value::make_list(std::move(cur)));
        cur.clear();
      }
    }
    if (!cur.empty()) {
      if (!fill.is_none()) {
        budget_check_size(static_cast<uint64_t>(n), "list");
        while (static_cast<int64_t>(cur.size()) < n) cur.push_back(fill);
      }
      out.push_back(Value::make_list(std::move(cur)));
    }
    return Value::make_list(std::move(out));
  }
  MAGIX_FAIL("the filter '{}' is not supported", name);
}

bool call_test(const std::string& name, const Value& v, const Args& args) {
  const Value& a0 = args.pos.empty() ? Value::undefined() : args.pos[0];
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.kind == Kind::Bool;
  if (name == "false") return v.kind == Kind::Bool && !v.i;
  if (name == "true") return v.kind == Kind::Bool && v.i;
  if (name == "integer") return v.kind == Kind::Int;
  if (name == "float") return v.kind == Kind::Float;
  if (name == "number") return v.is_number();
  if (name == "string") return v.kind == Kind::String;
  if (name == "mapping") return v.kind == Kind::Dict;
  if (name == "iterable") {
    return v.kind == Kind::String || v.is_sequence() || v.kind == Kind::Dict || v.is_undefined();
  }
  if (name == "sequence") {
    return v.kind == Kind::String || v.is_sequence() || v.kind == Kind::Dict || v.is_undefined();
  }
  if (name == "callable") return v.kind == Kind::Callable;
  if (name == "escaped") return false;
  if (name == "odd" || name == "even") {
    Value m = binary_op("%", v, Value::integer(2));
    return name == "odd" ? equals(m, Value::integer(1)) : equals(m, Value::integer(0));
  }
  if (name == "divisibleby") return equals(binary_op("%", v, a0), Value::integer(0));
  if (name == "lower" || name == "upper") {
    std::string s = to_str(v);
    std::string mapped = name == "lower" ? py_lower(s) : py_upper(s);
    return mapped == s && (name == "lower" ? py_upper(s) : py_lower(s)) != s;
  }
  if (name == "in") return contains(a0, v);
  if (name == "==" || name == "eq" || name == "equalto") return equals(v, a0);
  if (name == "!=" || name == "ne") return !equals(v, a0);
  if (name == ">" || name == "gt" || name == "greaterthan") return less_than(a0, v);
  if (name == ">=" || name == "ge") return !less_than(v, a0);
  if (name == "<" || name == "lt" || name == "lessthan") return less_than(v, a0);
  if (name == "<=" || name == "le") return !less_than(a0, v);
  if (name == "sameas") {
    if (v.kind != a0.kind) return false;
    if (v.is_sequence()) return v.list == a0.list;
    if (v.kind == Kind::Dict || v.kind == Kind::Namespace) return v.dict == a0.dict;
    return equals(v, a0);
  }
  if (name == "filter") return v.kind == Kind::String && has_filter(v.s);
  if (name == "test") return v.kind == Kind::String && has_test(v.s);
  MAGIX_FAIL("the test '{}' is not supported", name);
}

}  // namespace magix::jinja
