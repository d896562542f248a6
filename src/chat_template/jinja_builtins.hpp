// What the evaluator calls on values: attribute and item access (jinja2's sandboxed getattr /
// getitem, with Python's str, dict and list methods), operators, iteration, filters and tests.
// Errors are magix::Error with a message only; the evaluator adds the template position.
#pragma once

#include <string>
#include <vector>

#include "chat_template/jinja_value.hpp"

namespace magix::jinja {

// jinja2's UndefinedError message for using an undefined value.
[[noreturn]] void fail_undefined(const Value& v);

// obj.name: Python attribute first (methods of str/dict/list), then the item.
Value get_attr(const Value& obj, const std::string& name);
// obj[key]: the item first, then (for a string key) the attribute.
Value get_item(const Value& obj, const Value& key);
// obj[start:stop:step]; absent parts are None.
Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step);

// The values a for loop (or list()) sees: items of a sequence, keys of a dict, characters of a
// string; Undefined iterates as empty.
std::vector<Value> iterate(const Value& v);

// Python's binary operators + - * / // % ** and unary -; `in` as Python's contains.
Value binary_op(const std::string& op, const Value& a, const Value& b);
Value negate(const Value& v);
bool contains(const Value& container, const Value& item);

// s.name for a string s: a bound method (jinja_methods.cpp), or Undefined for unknown names.
Value string_method(const Value& self, const std::string& name);

// Python's printf-style `fmt % values` (a tuple: several arguments; a dict: %(name)s keys).
std::string py_percent_format(const std::string& fmt, const Value& values);

// Python's str methods used by templates (split, strip, startswith, ...), for filters too.
std::string py_strip(const std::string& s, const Value& chars, bool left, bool right);
std::string py_upper(const std::string& s);
std::string py_lower(const std::string& s);
std::string py_title(const std::string& s);
std::string py_capitalize(const std::string& s);
std::string py_replace(const std::string& s, const std::string& old, const std::string& repl,
                       int64_t count);

// Filters and tests by jinja2's names. has_* are used by the parser: jinja2 rejects an unknown
// filter or test when compiling, even in a branch that never runs.
bool has_filter(const std::string& name);
bool has_test(const std::string& name);
// Filters and tests that take callables (map, select, ...) use `call_filter` / `call_test`
// recursively; everything they need is in the arguments.
Value call_filter(const std::string& name, const Value& v, const Args& args);
bool call_test(const std::string& name, const Value& v, const Args& args);

// Argument binding for builtins: positional `index` or keyword `name`, else `fallback`.
Value arg_or(const Args& args, size_t index, const char* name, const Value& fallback);

}  // namespace magix::jinja
