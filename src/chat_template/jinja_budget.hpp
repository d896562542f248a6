// The resource budget of one render. Chat templates come from downloaded tokenizer files, so
// they are untrusted programs: every render runs under limits on loop iterations, output size,
// the size of each string and list it builds (checked before the memory is allocated), the
// total size of everything it builds (a bound on time) and nesting depth.
#pragma once

#include <cstdint>
#include <string>

#include "magix/chat_template.hpp"
#include "magix/error.hpp"

namespace magix::jinja {

using RenderLimits = ChatTemplateLimits;  // (public: magix/chat_template.hpp)

// The budget of the render running on this thread. The Evaluator installs one (BudgetScope) for
// the length of a render; the value functions (operators, filters, methods) are free functions
// that reach it through budget_check_size, so that they need not all take it as an argument.
class RenderBudget {
 public:
  RenderBudget(const RenderLimits& limits, std::string origin)
      : limits_(limits), origin_(std::move(origin)) {}

  const RenderLimits& limits() const { return limits_; }
  void count_iteration();
  void check_output(uint64_t bytes);
  // A string of `n` bytes or a list of `n` items is about to be built.
  void check_size(uint64_t n, const char* what);
  void check_length(uint64_t n, const char* what) const;
  [[noreturn]] void fail(const std::string& what) const;

 private:
  RenderLimits limits_;
  std::string origin_;  // names the template in errors ("path/tokenizer_config.json")
  uint64_t iterations_ = 0, total_ = 0;
};

// Installs `budget` as this thread's for its lifetime (restores the previous one after).
class BudgetScope {
 public:
  explicit BudgetScope(RenderBudget& budget);
  ~BudgetScope();
  BudgetScope(const BudgetScope&) = delete;
  BudgetScope& operator=(const BudgetScope&) = delete;

 private:
  RenderBudget* previous_;
};

// Checks a string of `n` bytes (or list of `n` items) about to be built against this thread's
// render budget, and adds it to the total built; nothing outside a render. Call before
// allocating.
void budget_check_size(uint64_t n, const char* what);
// The same check without adding to the total: for a value built piece by piece, checked as it
// grows and passed to budget_check_size once complete.
void budget_check_length(uint64_t n, const char* what);
// Counts one level of a recursive walk over a value (printing, comparing, tojson): a value
// nested deeper than RenderLimits::max_depth is an error, not a stack overflow. (Values from
// JSON are limited by the JSON readers; a template nests values through namespaces.)
class ValueDepthGuard {
 public:
  ValueDepthGuard();
  ~ValueDepthGuard();
  ValueDepthGuard(const ValueDepthGuard&) = delete;
  ValueDepthGuard& operator=(const ValueDepthGuard&) = delete;
};

// Thrown when a limit is exceeded; the message names the template and the limit. The evaluator
// passes it through without adding a position.
struct BudgetExceeded : Error {
  using Error::Error;
};

}  // namespace magix::jinja
