// Evaluates a parsed template against a context, as jinja2 renders it.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "chat_template/jinja_ast.hpp"
#include "chat_template/jinja_budget.hpp"

namespace magix::jinja {

// Thrown by raise_exception(message): the message is the template's text verbatim.
struct RaisedByTemplate {
  std::string message;
};

struct RenderOptions {
  std::function<std::chrono::system_clock::time_point()> now;  // empty: the system clock
  RenderLimits limits;
  std::string origin;  // names the template in budget errors (the file it came from)
};

// Renders `t` with the variables of `context` (a Dict). Throws magix::Error "... at line L,
// column C: ..." for evaluation errors and RaisedByTemplate for raise_exception.
std::string render_template(const Template& t, const Value& context, const RenderOptions& options);

}  // namespace magix::jinja
