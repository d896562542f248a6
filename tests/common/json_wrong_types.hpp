// Feeding a reader of an untrusted JSON file fields of the wrong type: each must give a
// magix::Error naming the field, never an escaping nlohmann exception (type_error,
// out_of_range...) or a crash.
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "magix/error.hpp"

namespace magix::test {

using nlohmann::json;

// Values of another type than `v`: a string for a number, a number for a string, an object for
// a list, a list for an object, a boolean, and null (unless `null_ok`: an optional field, where
// null means "not set"). A fraction stands in for an integer; an integer is a valid number.
inline std::vector<json> wrong_type_values(const json& v, bool null_ok) {
  std::vector<json> out;
  if (!v.is_string()) out.push_back("x");
  if (!v.is_number()) out.push_back(7);
  if (v.is_number_integer()) out.push_back(2.5);
  if (!v.is_boolean()) out.push_back(true);
  if (!v.is_object()) out.push_back(json{{"k", 1}});
  if (!v.is_array()) out.push_back(json::array({1}));
  if (!null_ok && !v.is_null()) out.push_back(nullptr);
  return out;
}

// What a reader did with a JSON value: nullopt when it accepted it, else magix::Error's message.
// Any other exception fails the test (with `context` and the exception's text).
inline std::optional<std::string> read_outcome(const std::function<void(const json&)>& read,
                                               const json& j, const std::string& context) {
  try {
    read(j);
    return std::nullopt;
  } catch (const Error& e) {
    return std::string(e.what());
  } catch (const nlohmann::json::exception& e) {
    ADD_FAILURE() << context << ": a nlohmann exception escaped: " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << context << ": not a magix::Error: " << e.what();
  }
  return std::string();
}

// A field of a table of wrong types: a JSON pointer into the valid document, the text the error
// must hold (default: the last key, quoted: "r"), and whether null means "not set".
struct JsonField {
  std::string pointer;
  bool optional = false;
  std::string name = {};
  std::vector<json> wrong = {};  // default: wrong_type_values of the valid value
};

// For each field and each wrong value: `read` of the valid document with that field replaced must
// throw magix::Error naming the field. Null in an optional field must not be an error about it.
inline void expect_wrong_types_named(const json& valid, const std::vector<JsonField>& fields,
                                     const std::function<void(const json&)>& read) {
  ASSERT_EQ(read_outcome(read, valid, "the valid document"), std::nullopt);
  for (const JsonField& f : fields) {
    const json::json_pointer ptr(f.pointer);
    ASSERT_TRUE(valid.contains(ptr)) << f.pointer;
    const std::string name = f.name.empty() ? "\"" + ptr.back() + "\"" : f.name;
    const std::vector<json> wrong =
        f.wrong.empty() ? wrong_type_values(valid.at(ptr), f.optional) : f.wrong;
    for (const json& w : wrong) {
      json edited = valid;
      edited[ptr] = w;
      const std::string context = f.pointer + " = " + w.dump();
      const auto outcome = read_outcome(read, edited, context);
      ASSERT_TRUE(outcome.has_value()) << context << ": accepted";
      EXPECT_NE(outcome->find(name), std::string::npos) << context << ": " << *outcome;
    }
    if (f.optional) {
      json edited = valid;
      edited[ptr] = nullptr;
      const auto outcome = read_outcome(read, edited, f.pointer + " = null");
      if (outcome) {
        EXPECT_EQ(outcome->find(name + " must be"), std::string::npos)
            << f.pointer << " = null: " << *outcome;
      }
    }
  }
}

// Every value in `j` (objects and lists included) by JSON pointer, but only the first
// `max_elements` elements of a list and entries of an object with more than `max_entries`
// (vocabularies).
inline void json_paths(const json& j, const json::json_pointer& at, std::vector<std::string>& out,
                       size_t max_elements = 2, size_t max_entries = 64) {
  if (j.is_object()) {
    size_t n = 0;
    for (const auto& [k, v] : j.items()) {
      if (n++ >= max_entries) break;
      out.push_back((at / k).to_string());
      json_paths(v, at / k, out, max_elements, max_entries);
    }
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size() && i < max_elements; ++i) {
      out.push_back((at / i).to_string());
      json_paths(j[i], at / i, out, max_elements, max_entries);
    }
  }
}

// Every field of `valid`, replaced in turn by values of each other type (null included), and
// the top level replaced by a non-object: `read` either accepts the document or throws
// magix::Error, never anything else. Returns how many edited documents were read.
inline size_t expect_only_magix_errors(const json& valid,
                                       const std::function<void(const json&)>& read) {
  std::vector<std::string> paths;
  json_paths(valid, json::json_pointer(), paths);
  size_t n = 0;
  for (const std::string& p : paths) {
    const json::json_pointer ptr(p);
    for (const json& w : wrong_type_values(valid.at(ptr), false)) {
      json edited = valid;
      edited[ptr] = w;
      (void)read_outcome(read, edited, p + " = " + w.dump());
      ++n;
    }
  }
  for (const json& top : {json::array(), json(3), json("x"), json(nullptr)}) {
    const auto outcome = read_outcome(read, top, "top level " + top.dump());
    EXPECT_TRUE(outcome.has_value()) << "top level " << top.dump() << " accepted";
    ++n;
  }
  return n;
}

}  // namespace magix::test
