// JSON parsing with a nesting limit, for files that come from outside (tokenizer files, data
// records): nlohmann's parser is iterative, but copying, dumping and converting a value recurse,
// so a value nested deeper than kMaxJsonDepth is refused while it is parsed.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace magix {

constexpr int kMaxJsonDepth = 512;  // arrays and objects inside each other

// Parses `text`; throws magix::Error "SOURCE: invalid JSON: ..." or "SOURCE: JSON nested deeper
// than 512 levels". `source` names the file (and line) in messages.
nlohmann::json parse_json(std::string_view text, const std::string& source);
nlohmann::ordered_json parse_ordered_json(std::string_view text, const std::string& source);

}  // namespace magix
