#include "magix/json_parse.hpp"

#include <fstream>

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

std::string read_text_file_bounded(const std::filesystem::path& path, int64_t max_bytes,
                                   std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  MAGIX_CHECK(in.good(), "cannot open {} '{}'", what, path.string());
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);  // fails for a pipe: read below
  MAGIX_CHECK(ec || size <= static_cast<uintmax_t>(max_bytes),
              "{} '{}' is {} bytes, more than the {} a real one needs", what, path.string(), size,
              max_bytes);
  std::string text;
  char chunk[1 << 16];
  while (in.read(chunk, sizeof chunk) || in.gcount() > 0) {
    text.append(chunk, static_cast<size_t>(in.gcount()));
    MAGIX_CHECK(std::ssize(text) <= max_bytes,
                "{} '{}' holds more than the {} bytes a real one needs", what, path.string(),
                max_bytes);
  }
  MAGIX_CHECK(!in.bad(), "cannot read {} '{}'", what, path.string());
  return text;
}

nlohmann::json parse_json(std::string_view text, const std::string& source) {
  return parse_limited<nlohmann::json>(text, source);
}

nlohmann::ordered_json parse_ordered_json(std::string_view text, const std::string& source) {
  return parse_limited<nlohmann::ordered_json>(text, source);
}

}  // namespace magix

namespace magix {

namespace {

template <class Json>
std::string found_impl(const Json& v) {
  // A scalar is shown (cut short) so the message says which value was wrong.
  auto shown = [&](const char* type) {
    std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (s.size() > 40) {
      size_t cut = 37;
      while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // UTF-8
      s = s.substr(0, cut) + "...";
    }
    return fmt::format("{} {}", type, s);
  };
  switch (v.type()) {
    case nlohmann::json::value_t::string:
      return shown("string");
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return shown("integer");
    case nlohmann::json::value_t::number_float:
      return shown("number");
    case nlohmann::json::value_t::boolean:
      return shown("boolean");
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::object:
      return "object";
    case nlohmann::json::value_t::array:
      return "list";
    default:
      return "binary";
  }
}

}  // namespace

std::string json_found(const nlohmann::json& v) {
  return found_impl(v);
}
std::string json_found(const nlohmann::ordered_json& v) {
  return found_impl(v);
}

namespace json_detail {

void fail_type(const std::string& what, const std::string& expected, const std::string& found) {
  MAGIX_FAIL("{} must be {}, found {}", what, expected, found);
}

void fail_range(const std::string& what, const std::string& found, int64_t lo, uint64_t hi) {
  MAGIX_FAIL("{} must be an integer from {} to {}, found {}", what, lo, hi, found);
}

}  // namespace json_detail

}  // namespace magix
