#include "magix/json_parse.hpp"

#include "magix/error.hpp"

namespace magix {

namespace {

// The parser's message without nlohmann's "[json.exception.parse_error.101] " prefix.
std::string json_reason(const nlohmann::json::exception& e) {
  std::string what = e.what();
  auto close = what.find("] ");
  if (what.rfind("[json.exception", 0) == 0 && close != std::string::npos)
    what = what.substr(close + 2);
  return what;
}

struct TooDeep {};

template <class Json>
Json parse_limited(std::string_view text, const std::string& source) {
  // The callback sees each value with its depth before the parser descends into it.
  typename Json::parser_callback_t limit = [](int depth, nlohmann::json::parse_event_t event,
                                              Json&) {
    if ((event == nlohmann::json::parse_event_t::object_start ||
         event == nlohmann::json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth)
      throw TooDeep{};
    return true;
  };
  try {
    return Json::parse(text, limit);
  } catch (const TooDeep&) {
    MAGIX_FAIL("{}: JSON nested deeper than {} levels", source, kMaxJsonDepth);
  } catch (const nlohmann::json::exception& e) {
    MAGIX_FAIL("{}: invalid JSON: {}", source, json_reason(e));
  }
}

}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& source) {
  return parse_limited<nlohmann::json>(text, source);
}

nlohmann::ordered_json parse_ordered_json(std::string_view text, const std::string& source) {
  return parse_limited<nlohmann::ordered_json>(text, source);
}

}  // namespace magix
