// The message of the magix::Error a callable throws, or "" when it throws none.
#pragma once

#include <string>

#include "magix/error.hpp"

namespace magix::test {

template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace magix::test
