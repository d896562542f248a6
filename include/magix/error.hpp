// Errors: library code throws magix::Error; only the CLI decides to exit.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace magix {

// An error the user can act on (bad input, missing file, unsupported config) or a failed
// external call. what() is the message for the user; where() is the source location.
class Error : public std::runtime_error {
 public:
  Error(std::string message, std::string where)
      : std::runtime_error(std::move(message)), where_(std::move(where)) {}
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

[[noreturn]] inline void throw_error(const char* file, int line, std::string message) {
  throw Error(std::move(message), fmt::format("{}:{}", file, line));
}

}  // namespace magix

// MAGIX_CHECK(cond, "format {}", args...): throws magix::Error with the formatted message.
#define MAGIX_CHECK(cond, ...)                                                         \
  do {                                                                                 \
    if (!(cond)) ::magix::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__)); \
  } while (0)

#define MAGIX_FAIL(...) ::magix::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))
