// Values of the Jinja interpreter, with Python's semantics: what jinja2 sees when transformers
// renders a chat template (JSON data, Undefined, namespaces, callables).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace magix::jinja {

struct Value;
struct Dict;
struct Args;

enum class Kind {
  Undefined,
  None,
  Bool,
  Int,
  Float,
  String,
  List,
  Tuple,
  Dict,
  Namespace,
  Callable
};

// A callable: a builtin, a macro or a bound method. Receives its evaluated arguments.
struct Function {
  std::string name;
  std::function<Value(const Args&)> call;
};

// A Python-like value. Lists, tuples and dicts are immutable once built (the sandbox forbids
// mutating them); a namespace is the one mutable object and is shared by reference.
struct Value {
  Kind kind = Kind::Undefined;
  int64_t i = 0;  // Bool (0/1) and Int
  double f = 0;
  std::string s;  // String (UTF-8); for Undefined: the hint naming what was missing
  std::shared_ptr<const std::vector<Value>> list;  // List, Tuple
  std::shared_ptr<Dict> dict;                      // Dict (never mutated once built), Namespace
  std::shared_ptr<const Function> fn;              // Callable

  Value() = default;
  Value(const Value&) = default;
  Value(Value&&) noexcept = default;
  Value& operator=(const Value&) = default;
  Value& operator=(Value&&) noexcept = default;
  // Frees nested lists and dicts with a loop instead of recursion, so that no nesting depth
  // overflows the stack.
  ~Value();

  static Value undefined(std::string hint = {});
  static Value none();
  static Value boolean(bool b);
  static Value integer(int64_t v);
  static Value real(double v);
  static Value str(std::string v);
  static Value make_list(std::vector<Value> items);
  static Value make_tuple(std::vector<Value> items);
  static Value make_dict(Dict d);
  static Value make_namespace(Dict d);
  static Value function(std::string name, std::function<Value(const Args&)> call);

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_int_like() const { return kind == Kind::Int || kind == Kind::Bool; }
  bool is_number() const { return is_int_like() || kind == Kind::Float; }
  bool is_sequence() const { return kind == Kind::List || kind == Kind::Tuple; }
  bool is_mapping() const { return kind == Kind::Dict; }
  double as_double() const { return kind == Kind::Float ? f : static_cast<double>(i); }
  const std::vector<Value>& items() const { return *list; }
};

// An insertion-ordered mapping (Python dict). Keys are values (strings in practice).
struct Dict {
  std::vector<std::pair<Value, Value>> entries;
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(Value key, Value value);  // replaces in place or appends
};

// Call arguments: positional, then keyword in call order.
struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  const Value* kwarg(std::string_view name) const;
};

// Python's bool(): empty strings and containers, 0, None and Undefined are false.
bool truthy(const Value& v);
// Python's ==, with jinja2's Undefined (equal only to Undefined).
bool equals(const Value& a, const Value& b);
// Python's <, for numbers, strings and sequences; throws a message otherwise.
bool less_than(const Value& a, const Value& b);
// str(v) as jinja2 prints it: Python's str(), "" for Undefined.
std::string to_str(const Value& v);
// Python's repr().
std::string repr(const Value& v);
// Python's repr() of a float: shortest round-trip digits, "1e+16", "inf", "nan".
std::string float_repr(double x);
std::string type_name(const Value& v);  // Python's type name: "str", "int", "dict", ...

// json.dumps(v, ensure_ascii=False, indent, separators, sort_keys) as transformers' tojson.
// indent: an empty string and negative indents mean no indent is given (compact).
struct JsonOptions {
  bool has_indent = false;
  std::string indent;  // the indent unit when has_indent
  std::string item_separator = ", ", key_separator = ": ";
  bool sort_keys = false;
};
std::string to_json(const Value& v, const JsonOptions& options);

// Conversion from the JSON context: objects keep their key order, numbers keep int vs float.
// Deeper than kMaxJsonDepth levels is an error (the JSON readers of magix refuse such files).
constexpr int kMaxJsonDepth = 512;
Value from_json(const nlohmann::ordered_json& j);

// Code points of a UTF-8 string (invalid bytes are taken one by one as U+FFFD-like units of
// their byte value, so that lengths and slices never throw).
std::vector<char32_t> decode_utf8(std::string_view s);
std::string encode_utf8(const std::vector<char32_t>& cps, size_t begin, size_t end);
void append_utf8(std::string& out, char32_t c);
size_t utf8_length(std::string_view s);
// Python's str.isspace() for one code point.
bool is_py_space(char32_t c);

}  // namespace magix::jinja
