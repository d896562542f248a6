// Attribute/item access, Python operators and str/dict/list methods for the Jinja interpreter.
#include <algorithm>
#include <cmath>
#include <limits>

#include "chat_template/jinja_budget.hpp"
#include "chat_template/jinja_builtins.hpp"
#include "magix/error.hpp"

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
  if (name == "copy")
    return Value::function("dict.copy",
                           [self](const Args&) { return Value::make_dict(*self.dict); });
  if (name == "update" || name == "pop" || name == "popitem" || name == "setdefault" ||
      name == "clear") {
    return Value::undefined(
        fmt::format("access to attribute '{}' of 'dict' object is unsafe.", name));
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
  if (name == "append" || name == "extend" || name == "insert" || name == "pop" ||
      name == "remove" || name == "sort" || name == "reverse" || name == "clear") {
    return Value::undefined(
        fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, type_name(self)));
  }
  return Value::undefined(fmt::format("'{} object' has no attribute '{}'", type_name(self), name));
}

}  // namespace

Value get_attr(const Value& obj, const std::string& name) {
  switch (obj.kind) {
    case Kind::Undefined:
      fail_undefined(obj);
    case Kind::String:
      return string_method(obj, name);
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
    case Kind::Tuple:
      return list_method(obj, name);
    default:
      return Value::undefined(
          fmt::format("'{} object' has no attribute '{}'", type_name(obj), name));
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
    case Kind::Undefined:
      fail_undefined(obj);
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
      return Value::undefined(fmt::format("{} indices must be integers or slices, not {}",
                                          type_name(obj), type_name(key)));
    }
    case Kind::String: {
      if (key.is_int_like()) {
        auto cps = decode_utf8(obj.s);
        int64_t i = key.i;
        if (normalize_index(i, cps.size()))
          return Value::str(encode_utf8(cps, static_cast<size_t>(i), static_cast<size_t>(i) + 1));
        return Value::undefined(fmt::format("str object has no element {}", key.i));
      }
      if (key.kind == Kind::String) return get_attr(obj, key.s);
      return Value::undefined("string indices must be integers");
    }
    case Kind::Namespace:
      if (key.kind == Kind::String) return get_attr(obj, key.s);
      return Value::undefined("'Namespace' object is not subscriptable");
    default:
      return Value::undefined(fmt::format("'{}' object is not subscriptable", type_name(obj)));
  }
}

Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  if (obj.is_undefined()) fail_undefined(obj);
  auto opt_int = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_none() || v.is_undefined()) return std::nullopt;
    if (!v.is_int_like())
      MAGIX_FAIL("slice {} must be an integer or None, not {}", what, type_name(v));
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
  return obj.kind == Kind::Tuple ? Value::make_tuple(std::move(out))
                                 : Value::make_list(std::move(out));
}

std::vector<Value> iterate(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
      return {};
    case Kind::List:
    case Kind::Tuple:
      return v.items();
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
    default:
      MAGIX_FAIL("'{}' object is not iterable", type_name(v));
  }
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind) {
    case Kind::Undefined:
      return false;
    case Kind::String:
      if (item.kind != Kind::String) {
        MAGIX_FAIL("'in <string>' requires string as left operand, not {}", type_name(item));
      }
      return container.s.find(item.s) != std::string::npos;
    case Kind::List:
    case Kind::Tuple:
      return std::any_of(container.items().begin(), container.items().end(),
                         [&](const Value& x) { return equals(x, item); });
    case Kind::Dict:
      return container.dict->find(item) != nullptr;
    default:
      MAGIX_FAIL("argument of type '{}' is not iterable", type_name(container));
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
  uint64_t unit = seq.kind == Kind::String ? seq.s.size() : seq.items().size();
  if (times > 0 && unit > 0) {
    uint64_t n = 0;
    if (__builtin_mul_overflow(unit, static_cast<uint64_t>(times), &n)) n = UINT64_MAX;
    budget_check_size(n, seq.kind == Kind::String ? "string" : "list");
  }
  if (seq.kind == Kind::String) {
    std::string out;
    for (int64_t k = 0; k < times; ++k) out += seq.s;
    return Value::str(std::move(out));
  }
  std::vector<Value> out;
  for (int64_t k = 0; k < times; ++k) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return seq.kind == Kind::Tuple ? Value::make_tuple(std::move(out))
                                 : Value::make_list(std::move(out));
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
    if (a.kind == Kind::String && b.kind == Kind::String) {
      budget_check_size(a.s.size() + b.s.size(), "string");
      return Value::str(a.s + b.s);
    }
    if (a.kind == Kind::String)
      MAGIX_FAIL("can only concatenate str (not \"{}\") to str", type_name(b));
    if (a.is_sequence() && a.kind == b.kind) {
      budget_check_size(a.items().size() + b.items().size(), "list");
      std::vector<Value> out = a.items();
      out.insert(out.end(), b.items().begin(), b.items().end());
      return a.kind == Kind::Tuple ? Value::make_tuple(std::move(out))
                                   : Value::make_list(std::move(out));
    }
    if (a.is_sequence())
      MAGIX_FAIL("can only concatenate {} (not \"{}\") to {}", type_name(a), type_name(b),
                 type_name(a));
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
    if (op == "%" && a.kind == Kind::String) return Value::str(py_percent_format(a.s, b));
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
    return Value::real(std::floor((x - m) / y + 0.5) == (x - m) / y ? (x - m) / y
                                                                    : std::floor(x / y));
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
