// The pretrained-model demo's task (include/magix/demo_lora.hpp): dates in words, their ISO
// answers, the answer check, and the train / held-out split. The calendar itself is checked
// against Python's datetime by tests/scripts/demo_smollm2.sh.
#include <gtest/gtest.h>

#include <set>
#include <tuple>

#include "magix/demo_lora.hpp"
#include "magix/error.hpp"

namespace magix {
namespace {

using Date = std::tuple<int, int, int>;

Date date_of(const DateProblem& p) { return {p.year, p.month, p.day}; }

TEST(DateTask, ProblemWordsAndAnswer) {
  const DateProblem a = make_date_problem(2021, 3, 5, 0);
  EXPECT_EQ(a.prompt, "Write this date in ISO 8601 form (YYYY-MM-DD): March 5, 2021");
  EXPECT_EQ(a.answer, "2021-03-05");
  const DateProblem b = make_date_problem(1994, 12, 8, 1);
  EXPECT_EQ(b.prompt, "Write this date in ISO 8601 form (YYYY-MM-DD): 8 December 1994");
  EXPECT_EQ(b.answer, "1994-12-08");
  EXPECT_EQ(date_in_words(2000, 2, 29, 0), "February 29, 2000");
  EXPECT_EQ(make_date_problem(7, 1, 1, 1).answer, "0007-01-01");
}

TEST(DateTask, RefusesDatesThatDoNotExist) {
  EXPECT_THROW(make_date_problem(2021, 2, 29, 0), Error);  // not a leap year
  EXPECT_THROW(make_date_problem(1900, 2, 29, 0), Error);  // century, not a leap year
  EXPECT_NO_THROW(make_date_problem(2020, 2, 29, 0));
  EXPECT_THROW(make_date_problem(2021, 4, 31, 0), Error);
  EXPECT_THROW(make_date_problem(2021, 13, 1, 0), Error);
  EXPECT_THROW(make_date_problem(2021, 0, 1, 0), Error);
  EXPECT_THROW(make_date_problem(2021, 1, 0, 0), Error);
  EXPECT_THROW(make_date_problem(0, 1, 1, 0), Error);
  EXPECT_THROW(make_date_problem(2021, 1, 1, 2), Error);
}

TEST(DateTask, AnswerCheckIsExactUpToSurroundingSpace) {
  const DateProblem p = make_date_problem(2021, 3, 5, 0);
  EXPECT_TRUE(date_answer_correct("2021-03-05", p));
  EXPECT_TRUE(date_answer_correct("  2021-03-05\n", p));
  EXPECT_FALSE(date_answer_correct("2021-03-05.", p));
  EXPECT_FALSE(date_answer_correct("2021-3-5", p));
  EXPECT_FALSE(date_answer_correct("2021-05-03", p));
  EXPECT_FALSE(date_answer_correct("The date is 2021-03-05", p));
  EXPECT_FALSE(date_answer_correct("2021-03-05\n\nThis date is a Friday.", p));
  EXPECT_FALSE(date_answer_correct("", p));
  EXPECT_FALSE(date_answer_correct(" \n", p));
}

TEST(DateTask, DataIsDeterministicDistinctAndHeldOut) {
  DateTask task;  // the demo's defaults: 400 train, 50 test, 1950-2049
  const DateData d = make_date_data(task);
  ASSERT_EQ(d.train.size(), 400u);
  ASSERT_EQ(d.test.size(), 50u);
  std::set<Date> train, test;
  int styles[2] = {0, 0};
  for (const DateProblem& p : d.train) {
    train.insert(date_of(p));
    ++styles[p.style];
  }
  for (const DateProblem& p : d.test) test.insert(date_of(p));
  EXPECT_EQ(train.size(), d.train.size()) << "training dates repeat";
  EXPECT_EQ(test.size(), d.test.size()) << "held-out dates repeat";
  for (const Date& t : test) EXPECT_EQ(train.count(t), 0u) << "a held-out date is trained on";
  for (const auto* v : {&d.train, &d.test}) {
    for (const DateProblem& p : *v) {
      EXPECT_GE(p.year, 1950);
      EXPECT_LE(p.year, 2049);
      EXPECT_EQ(p.prompt, make_date_problem(p.year, p.month, p.day, p.style).prompt);
    }
  }
  EXPECT_GT(styles[0], 100);  // both wordings, about half each
  EXPECT_GT(styles[1], 100);

  const DateData again = make_date_data(task);
  for (size_t i = 0; i < d.train.size(); ++i) EXPECT_EQ(d.train[i].prompt, again.train[i].prompt);
  for (size_t i = 0; i < d.test.size(); ++i) EXPECT_EQ(d.test[i].prompt, again.test[i].prompt);
  task.seed = 43;
  const DateData other = make_date_data(task);
  int same = 0;
  for (size_t i = 0; i < d.test.size(); ++i) same += d.test[i].prompt == other.test[i].prompt;
  EXPECT_LT(same, 3) << "another seed gives (nearly) the same held-out dates";
}

TEST(DateTask, MoreHeldOutKeepsTheSameTestPrefixAndStaysDisjoint) {
  // The held-out dates are drawn first: a run with more training dates has the same test set.
  DateTask small, large;
  large.train_examples = 2000;
  const DateData a = make_date_data(small), b = make_date_data(large);
  for (size_t i = 0; i < a.test.size(); ++i) EXPECT_EQ(a.test[i].prompt, b.test[i].prompt);
}

TEST(DateTask, EveryDayOfARangeOnceAndNoMore) {
  DateTask leap;
  leap.first_year = leap.last_year = 2020;
  leap.train_examples = 300;
  leap.test_examples = 66;  // 366 days in 2020
  const DateData d = make_date_data(leap);
  std::set<Date> all;
  for (const auto* v : {&d.train, &d.test}) {
    for (const DateProblem& p : *v) all.insert(date_of(p));
  }
  EXPECT_EQ(all.size(), 366u);
  EXPECT_EQ(all.count({2020, 2, 29}), 1u);
  leap.train_examples = 301;
  EXPECT_THROW(make_date_data(leap), Error);
  DateTask bad;
  bad.test_examples = 0;
  EXPECT_THROW(make_date_data(bad), Error);
  bad = DateTask{};
  bad.first_year = 2030;
  bad.last_year = 2020;
  EXPECT_THROW(make_date_data(bad), Error);
}

}  // namespace
}  // namespace magix
