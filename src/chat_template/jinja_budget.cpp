#include "chat_template/jinja_budget.hpp"

#include <fmt/format.h>

namespace magix::jinja {

namespace {

thread_local RenderBudget* t_budget = nullptr;  // the render running on this thread
thread_local int t_value_depth = 0;             // levels of ValueDepthGuard on this thread

}  // namespace

void RenderBudget::fail(const std::string& what) const {
  throw BudgetExceeded(fmt::format("chat template{}: rendering exceeded {}",
                                   origin_.empty() ? std::string() : " (" + origin_ + ")", what),
                       "jinja budget");
}

void RenderBudget::count_iteration() {
  if (++iterations_ > limits_.max_loop_iterations)
    fail(fmt::format("the budget of {} loop iterations", limits_.max_loop_iterations));
}

void RenderBudget::check_output(uint64_t bytes) {
  if (bytes > limits_.max_output_bytes)
    fail(fmt::format("the budget of {} bytes of output", limits_.max_output_bytes));
}

void RenderBudget::check_length(uint64_t n, const char* what) const {
  if (n > limits_.max_value_size)
    fail(fmt::format("the limit of {} bytes or items for one value (a {} of {})",
                     limits_.max_value_size, what, n));
}

void RenderBudget::check_size(uint64_t n, const char* what) {
  check_length(n, what);
  total_ += n;
  if (total_ > limits_.max_total_size)
    fail(fmt::format("the budget of {} bytes or items for all strings and lists built",
                     limits_.max_total_size));
}

BudgetScope::BudgetScope(RenderBudget& budget) : previous_(t_budget) {
  t_budget = &budget;
}

BudgetScope::~BudgetScope() {
  t_budget = previous_;
}

void budget_check_size(uint64_t n, const char* what) {
  if (t_budget) t_budget->check_size(n, what);
}

void budget_check_length(uint64_t n, const char* what) {
  if (t_budget) t_budget->check_length(n, what);
}

ValueDepthGuard::ValueDepthGuard() {
  int limit = t_budget ? t_budget->limits().max_depth : RenderLimits{}.max_depth;
  if (++t_value_depth > limit) {
    --t_value_depth;
    MAGIX_FAIL("a value is nested deeper than {} levels", limit);
  }
}

ValueDepthGuard::~ValueDepthGuard() {
  --t_value_depth;
}

}  // namespace magix::jinja
