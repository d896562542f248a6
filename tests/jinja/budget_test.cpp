// The render budget: hostile templates (from downloaded tokenizer files) end in a magix::Error
// naming the template's file and the limit, never in gigabytes of memory or a crash.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "magix/chat_template.hpp"

namespace {

using nlohmann::ordered_json;

// The error of rendering `source` (named "dir/tokenizer_config.json"), or "" if it rendered.
std::string render_error(const std::string& source,
                         const magix::ChatTemplateOptions& options = {}) {
  try {
    magix::ChatTemplate("x", "dir/tokenizer_config.json");  // (a valid template)
    magix::ChatTemplate(source, "dir/tokenizer_config.json")
        .render(ordered_json::object(), options);
  } catch (const magix::Error& e) {
    return e.what();
  }
  return "";
}

// Runs `fn` in a child process whose address space is capped `cap_mb` above the current size,
// so that a regression fails the test instead of exhausting the machine. True: `fn` returned
// true within the cap.
template <class Fn>
bool within_memory(long cap_mb, Fn fn) {
  long pages = 0;
  std::ifstream("/proc/self/statm") >> pages;
  pid_t pid = fork();
  if (pid == 0) {
    rlimit lim{};
    lim.rlim_cur = lim.rlim_max =
        static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGESIZE)) +
        static_cast<rlim_t>(cap_mb) * (1 << 20);
    setrlimit(RLIMIT_AS, &lim);
    bool ok = false;
    try {
      ok = fn();
    } catch (...) {
    }
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST(JinjaBudget, NestedLoopsStopAtTheIterationBudget) {
  // 10^7 iterations in all, each loop within jinja2's range limit.
  std::string nested =
      "{% for i in range(100000) %}{% for j in range(100) %}{% endfor %}{% endfor %}";
  EXPECT_TRUE(within_memory(512, [&] {
    std::string e = render_error(nested);
    return e ==
           "chat template (dir/tokenizer_config.json): rendering exceeded the budget of 1000000 "
           "loop iterations";
  }));
}

TEST(JinjaBudget, EmptyIterationsKeepNoMemory) {
  // 900000 iterations that produce nothing: memory must not grow with them (it grew ~4 KB each).
  std::string nested =
      "{% for i in range(9000) %}{% for j in range(100) %}{% endfor %}{% endfor %}ok";
  EXPECT_TRUE(within_memory(
      256, [&] { return magix::ChatTemplate(nested).render(ordered_json::object()) == "ok"; }));
}

TEST(JinjaBudget, SizesAreCheckedBeforeAllocating) {
  EXPECT_TRUE(within_memory(512, [] {
    std::string e = render_error("{{ 'x' * 10**9 }}");
    return e.find("dir/tokenizer_config.json") != std::string::npos &&
           e.find("for one value (a string of 1000000000)") != std::string::npos;
  }));
  EXPECT_TRUE(within_memory(1024, [] {
    // doubling a string carried by a namespace stops at the 64 MiB limit of one value
    std::string e = render_error(
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s|length }}");
    return e.find("a string of 134217728") != std::string::npos;
  }));
  for (const char* t :
       {"{{ [1, 2] * 10**9 }}", "{{ ['a', 'b']|batch(10**9, fill_with=0)|list }}",
        "{{ 'ab'|center(10**10) }}", "{{ 'a\nb'|indent(10**10) }}",
        "{{ 'abcdefgh'.replace('', 'x' * 10**7) }}", "{{ ('x' * 10**7)|replace('x', 'yyyyyyy') }}",
        "{{ ', '.join(['x' * 10**7] * 10) }}", "{{ [('x' * 10**7)] * 10 }}",
        "{{ (['x' * 10**7] * 10)|tojson }}", "{{ '%999999999s' % 'a' }}"}) {
    EXPECT_TRUE(within_memory(1024, [&] {
      std::string e = render_error(t);
      return e.find("exceeded the limit") != std::string::npos ||
             e.find("width or precision too big") != std::string::npos;
    })) << t;
  }
}

TEST(JinjaBudget, TotalWorkIsBounded) {
  // each string is small, their total is not: the time of a render is bounded too
  std::string e = render_error(
      "{% for i in range(100000) %}{% for j in range(9) %}{% set x = 'y' * 10**6 %}"
      "{% endfor %}{% endfor %}");
  EXPECT_NE(e.find("bytes or items for all strings and lists built"), std::string::npos) << e;
}

TEST(JinjaBudget, OutputAndLimitsAreConfigurable) {
  magix::ChatTemplateOptions o;
  o.limits.max_output_bytes = 100;
  EXPECT_NE(render_error("{% for i in range(200) %}x{% endfor %}", o).find("100 bytes of output"),
            std::string::npos);
  o = {};
  o.limits.max_loop_iterations = 10;
  EXPECT_EQ(render_error("{% for i in range(10) %}{% endfor %}", o), "");
  EXPECT_NE(render_error("{% for i in range(11) %}{% endfor %}", o).find("10 loop iterations"),
            std::string::npos);
}

TEST(JinjaBudget, DeepValuesAreAnErrorNotACrash) {
  // a namespace carries a list nested 900000 deep: printing it is an error, freeing it (at the
  // end of the render) must not recurse
  std::string chain =
      "{% set ns = namespace(x=none) %}{% for i in range(100000) %}{% for j in range(9) %}"
      "{% set ns.x = [ns.x] %}{% endfor %}{% endfor %}";
  EXPECT_EQ(magix::ChatTemplate(chain + "ok").render(ordered_json::object()), "ok");
  EXPECT_NE(render_error(chain + "{{ ns.x }}").find("nested deeper than 512"), std::string::npos);
  // a namespace holding itself: printing it is an error, and nothing is leaked
  EXPECT_NE(
      render_error("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}").find("nested deeper"),
      std::string::npos);
}

TEST(JinjaBudget, DeepContextIsAnError) {
  // a record field nested 30000 deep (the JSON readers refuse it; the API refuses it too)
  ordered_json deep = ordered_json::array();
  for (int k = 0; k < 30000; ++k) deep = ordered_json::array({std::move(deep)});
  ordered_json ctx = {{"messages", deep}};
  magix::ChatTemplate t("{{ messages }}");
  try {
    t.render(ctx);
    FAIL() << "rendered";
  } catch (const magix::Error& e) {
    EXPECT_NE(std::string(e.what()).find("nested deeper than 512 levels"), std::string::npos);
  }
}

TEST(JinjaBudget, SyntaxErrorsNameTheTemplateFile) {
  try {
    magix::ChatTemplate("{% for x in %}", "tok/tokenizer_config.json");
    FAIL() << "parsed";
  } catch (const magix::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("chat template (tok/tokenizer_config.json): ", 0), 0u)
        << e.what();
  }
}

}  // namespace
