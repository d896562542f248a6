// JSON from outside (config.json, tokenizer files, adapter configs, checkpoint state, data
// records): parsing with a nesting limit, and typed reads of fields that throw magix::Error
// naming the file, the key, the expected and the found type, never nlohmann's type_error.
//
// nlohmann's parser is iterative, but copying, dumping and converting a value recurse, so a value
// nested deeper than kMaxJsonDepth is refused while it is parsed.
#pragma once

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "magix/error.hpp"

namespace magix {

constexpr int kMaxJsonDepth = 512;  // arrays and objects inside each other

// Reads a file from outside (a hub folder, a user's path) whole, refusing one larger than
// `max_bytes` before reading it ("WHAT 'PATH' is N bytes, more than the MAX a real one needs"),
// and a pipe or growing file once it passes the bound ("WHAT 'PATH' holds more than the MAX bytes
// a real one needs"); "cannot open WHAT 'PATH'". Each caller states its bound beside the sizes
// real files have.
std::string read_text_file_bounded(const std::filesystem::path& path, int64_t max_bytes,
                                   std::string_view what);

// Parses `text`; throws magix::Error "SOURCE: invalid JSON: ..." or "SOURCE: JSON nested deeper
// than 512 levels". `source` names the file (and line) in messages.
nlohmann::json parse_json(std::string_view text, const std::string& source);
nlohmann::ordered_json parse_ordered_json(std::string_view text, const std::string& source);

// ---- Typed reads ----------------------------------------------------------------------------
//
// `where` names the file and, inside it, the object read ("tokenizer.json: model"); a field is
// then named `where: "key"` and an element `where: "key"[3]`. Messages read
//   adapter_config.json: "r" must be an integer, found string "8"
// T is std::string, bool, an integer type (a JSON integer in T's range; 4096.0 is not one),
// double or float (any JSON number), the JSON type itself (any value), or std::vector of these.
// A required field that is absent is `"key" is missing`; null is a wrong type. An optional field
// that is absent or null takes its default (null means "not set" in Hugging Face files).

// The JSON type of `v` in words: "string", "integer", "number", "boolean", "null", "object",
// "list" (with a short rendering of a scalar: `string "8"`, `number 0.5`).
std::string json_found(const nlohmann::json& v);
std::string json_found(const nlohmann::ordered_json& v);

namespace json_detail {

template <class T>
struct IsVector : std::false_type {};
template <class U>
struct IsVector<std::vector<U>> : std::true_type {
  using Element = U;
};

template <class T>
constexpr bool kIsInteger = std::is_integral_v<T> && !std::is_same_v<T, bool>;

// "a string", "an integer", ... for T.
template <class T>
std::string expected_name() {
  if constexpr (std::is_same_v<T, std::string>) {
    return "a string";
  } else if constexpr (std::is_same_v<T, bool>) {
    return "true or false";
  } else if constexpr (kIsInteger<T>) {
    return "an integer";
  } else if constexpr (std::is_floating_point_v<T>) {
    return "a number";
  } else if constexpr (IsVector<T>::value) {
    using U = typename IsVector<T>::Element;
    if constexpr (std::is_same_v<U, bool>) return "a list of true/false values";
    std::string inner = expected_name<U>();
    return "a list of " + inner.substr(inner.find(' ') + 1) + "s";
  } else {
    return "a JSON value";
  }
}

[[noreturn]] void fail_type(const std::string& what, const std::string& expected,
                            const std::string& found);
[[noreturn]] void fail_range(const std::string& what, const std::string& found, int64_t lo,
                             uint64_t hi);

// v as T; `what()` builds the value's name only when there is an error to report.
template <class T, class Json, class What>
T convert(const Json& v, const What& what) {
  if constexpr (std::is_same_v<T, Json>) {
    return v;
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) fail_type(what(), expected_name<T>(), json_found(v));
    return v.template get_ref<const std::string&>();
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) fail_type(what(), expected_name<T>(), json_found(v));
    return v.template get<bool>();
  } else if constexpr (kIsInteger<T>) {
    if (!v.is_number_integer()) fail_type(what(), expected_name<T>(), json_found(v));
    constexpr auto lo = static_cast<int64_t>(std::numeric_limits<T>::min());
    constexpr auto hi = static_cast<uint64_t>(std::numeric_limits<T>::max());
    if (v.is_number_unsigned()) {
      const auto u = v.template get<uint64_t>();
      if (u > hi) fail_range(what(), json_found(v), lo, hi);
      return static_cast<T>(u);
    }
    const auto i = v.template get<int64_t>();
    if (i < lo || (i > 0 && static_cast<uint64_t>(i) > hi))
      fail_range(what(), json_found(v), lo, hi);
    return static_cast<T>(i);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) fail_type(what(), expected_name<T>(), json_found(v));
    return v.template get<T>();
  } else if constexpr (IsVector<T>::value) {
    using U = typename IsVector<T>::Element;
    if (!v.is_array()) fail_type(what(), expected_name<T>(), json_found(v));
    T out;
    out.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      out.push_back(convert<U>(v[i], [&] { return fmt::format("{}[{}]", what(), i); }));
    }
    return out;
  } else {
    static_assert(sizeof(T) == 0, "json_as: unsupported type");
  }
}

template <class Json>
void check_object(const Json& obj, std::string_view where) {
  if (!obj.is_object()) fail_type(std::string(where), "an object", json_found(obj));
}

}  // namespace json_detail

// `v` as T; `what` names the value in messages (`tokenizer.json: "merges"[3]`).
template <class T, class Json>
T json_as(const Json& v, std::string_view what) {
  return json_detail::convert<T>(v, [&] { return std::string(what); });
}

// `v` itself after checking that it is an object (or an array); `what` names it ("config.json"
// for a whole file, `tokenizer.json: "model"` for a field).
template <class Json>
const Json& json_expect_object(const Json& v, std::string_view what) {
  json_detail::check_object(v, what);
  return v;
}
template <class Json>
const Json& json_expect_array(const Json& v, std::string_view what) {
  if (!v.is_array()) json_detail::fail_type(std::string(what), "a list", json_found(v));
  return v;
}

// The field `key` of object `obj` when present and not null, else nullptr.
template <class Json>
const Json* json_find(const Json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

// A required field: `where: "key" is missing` when absent, a type error when it is not a T.
template <class T, class Json>
T json_get(const Json& obj, std::string_view key, std::string_view where) {
  json_detail::check_object(obj, where);
  auto it = obj.find(key);
  if (it == obj.end()) MAGIX_FAIL("{}: \"{}\" is missing", where, key);
  return json_detail::convert<T>(*it, [&] { return fmt::format("{}: \"{}\"", where, key); });
}

// An optional field: `fallback` when absent or null, a type error when it is not a T.
template <class T, class Json>
T json_value(const Json& obj, std::string_view key, const std::type_identity_t<T>& fallback,
             std::string_view where) {
  json_detail::check_object(obj, where);
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  return json_detail::convert<T>(*it, [&] { return fmt::format("{}: \"{}\"", where, key); });
}

// A required field that must be an object (or a list); returned by reference, not copied.
template <class Json>
const Json& json_object_at(const Json& obj, std::string_view key, std::string_view where) {
  json_detail::check_object(obj, where);
  auto it = obj.find(key);
  if (it == obj.end()) MAGIX_FAIL("{}: \"{}\" is missing", where, key);
  if (!it->is_object()) {
    json_detail::fail_type(fmt::format("{}: \"{}\"", where, key), "an object", json_found(*it));
  }
  return *it;
}
template <class Json>
const Json& json_array_at(const Json& obj, std::string_view key, std::string_view where) {
  json_detail::check_object(obj, where);
  auto it = obj.find(key);
  if (it == obj.end()) MAGIX_FAIL("{}: \"{}\" is missing", where, key);
  if (!it->is_array()) {
    json_detail::fail_type(fmt::format("{}: \"{}\"", where, key), "a list", json_found(*it));
  }
  return *it;
}

// `where: "key"`, the name of a field in messages, and `where: "key"[i]` of an element.
inline std::string json_key_name(std::string_view where, std::string_view key) {
  return fmt::format("{}: \"{}\"", where, key);
}

}  // namespace magix
