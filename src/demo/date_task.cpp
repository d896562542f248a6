// The pretrained-model demo's task: dates in words -> ISO 8601 (include/magix/demo_lora.hpp).
#include <fmt/format.h>

#include <chrono>
#include <numeric>

#include "magix/demo_lora.hpp"
#include "magix/error.hpp"
#include "splitmix_stream.hpp"

namespace magix {
namespace {

namespace chr = std::chrono;

constexpr const char* kMonths[] = {"January", "February", "March",     "April",
                                   "May",     "June",     "July",      "August",
                                   "September", "October", "November", "December"};

constexpr const char* kInstruction = "Write this date in ISO 8601 form (YYYY-MM-DD): ";

chr::year_month_day checked_date(int year, int month, int day) {
  MAGIX_CHECK(year >= 1 && year <= 9999, "the date task's years lie in [1, 9999], got {}", year);
  const chr::year_month_day d{chr::year{year}, chr::month{static_cast<unsigned>(month)},
                              chr::day{static_cast<unsigned>(day)}};
  MAGIX_CHECK(month >= 1 && month <= 12 && day >= 1 && d.ok(), "{:04}-{:02}-{:02} is not a date",
              year, month, day);
  return d;
}

}  // namespace

std::string date_in_words(int year, int month, int day, int style) {
  checked_date(year, month, day);
  MAGIX_CHECK(style == 0 || style == 1, "a date style is 0 or 1, got {}", style);
  const char* name = kMonths[month - 1];
  return style == 0 ? fmt::format("{} {}, {}", name, day, year)
                    : fmt::format("{} {} {}", day, name, year);
}

DateProblem make_date_problem(int year, int month, int day, int style) {
  DateProblem p;
  p.year = year;
  p.month = month;
  p.day = day;
  p.style = style;
  p.prompt = kInstruction + date_in_words(year, month, day, style);
  p.answer = fmt::format("{:04}-{:02}-{:02}", year, month, day);
  return p;
}

bool date_answer_correct(std::string_view generated, const DateProblem& problem) {
  constexpr std::string_view kSpace = " \t\r\n";
  const size_t begin = generated.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return false;
  const size_t end = generated.find_last_not_of(kSpace);
  return generated.substr(begin, end - begin + 1) == problem.answer;
}

DateData make_date_data(const DateTask& task) {
  MAGIX_CHECK(task.train_examples > 0 && task.test_examples > 0,
              "the date task needs at least one training and one test example (got {} and {})",
              task.train_examples, task.test_examples);
  MAGIX_CHECK(task.first_year >= 1 && task.last_year <= 9999 && task.first_year <= task.last_year,
              "the date task's years must satisfy 1 <= first ({}) <= last ({}) <= 9999",
              task.first_year, task.last_year);
  const chr::sys_days first = chr::year_month_day{chr::year{task.first_year}, chr::January, chr::day{1}};
  const chr::sys_days last = chr::year_month_day{chr::year{task.last_year}, chr::December, chr::day{31}};
  const auto days = static_cast<uint64_t>((last - first).count() + 1);
  const auto wanted = static_cast<uint64_t>(task.train_examples + task.test_examples);
  MAGIX_CHECK(wanted <= days, "{} training + {} test dates exceed the {} days of {}-{}",
              task.train_examples, task.test_examples, days, task.first_year, task.last_year);
  // Partial Fisher-Yates over the day numbers: distinct dates, test ones drawn first.
  detail::SplitMix64 rng(task.seed);
  std::vector<uint32_t> all(days);
  std::iota(all.begin(), all.end(), 0u);
  DateData data;
  for (uint64_t i = 0; i < wanted; ++i) {
    std::swap(all[i], all[i + rng.below(days - i)]);
    const int style = static_cast<int>(rng.below(2));
    const chr::year_month_day d{first + chr::days{all[i]}};
    auto& dst = i < static_cast<uint64_t>(task.test_examples) ? data.test : data.train;
    dst.push_back(make_date_problem(static_cast<int>(d.year()),
                                    static_cast<int>(static_cast<unsigned>(d.month())),
                                    static_cast<int>(static_cast<unsigned>(d.day())), style));
  }
  return data;
}

nlohmann::ordered_json date_train_record(const DateProblem& p) {
  return {{"messages",
           {{{"role", "user"}, {"content", p.prompt}},
            {{"role", "assistant"}, {"content", p.answer}}}}};
}

nlohmann::ordered_json date_test_record(const DateProblem& p) {
  return {{"prompt", p.prompt}, {"answer", p.answer}};
}

}  // namespace magix
