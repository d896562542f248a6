#include "tokenizer/tokenizer_regex.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "magix/error.hpp"
#include "tokenizer/unicode.hpp"

namespace magix::text {
namespace {

// Oniguruma's (and Rust regex's) \s is Unicode White_Space, which also holds U+0085 (NEL);
// PCRE2's UCP \s does not. Oniguruma's \w is Alphabetic, M, Nd, Pc and Join_Control; PCRE2's is
// L, N and '_'. Rewrites \s and \w to Oniguruma's meaning (\S and \W likewise, outside classes).
constexpr const char* kSpace = "\\s\\x{85}";
constexpr const char* kWord = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200c}\\x{200d}";

std::string to_oniguruma_classes(const std::string& p) {
  std::string out;
  int class_depth = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char n = p[i + 1];
      if (n == 's') {
        out += class_depth > 0 ? std::string(kSpace) : fmt::format("[{}]", kSpace);
      } else if (n == 'S' && class_depth == 0) {
        out += fmt::format("[^{}]", kSpace);
      } else if (n == 'w') {
        out += class_depth > 0 ? std::string(kWord) : fmt::format("[{}]", kWord);
      } else if (n == 'W' && class_depth == 0) {
        out += fmt::format("[^{}]", kWord);
      } else {
        out += c;
        out += n;
      }
      ++i;
      continue;
    }
    if (c == '[') {
      ++class_depth;
      out += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == ']' && class_depth > 0) --class_depth;
    out += c;
  }
  return out;
}

}  // namespace

Regex::Regex(const std::string& pattern, const std::string& context) {
  const std::string p = to_oniguruma_classes(pattern);
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    MAGIX_FAIL("{}: cannot compile regex '{}': {} at offset {}", context, pattern,
               reinterpret_cast<const char*>(msg), err_offset);
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is absent
  code_ =
      std::shared_ptr<void>(code, [](void* c) { pcre2_code_free(static_cast<pcre2_code*>(c)); });
}

namespace {

// The match context for long runs: PCRE2's default match limit (10^7 backtracking steps) stops
// patterns like `\s*[\r\n]+|\s+(?!\S)` on megabytes of whitespace, where Oniguruma (HF
// tokenizers) has no limit. A single match's steps are linear in the run for tokenizer
// patterns, so the limit is lifted, and the JIT gets a stack that can grow to 64 MiB.
class LongRunContext {
 public:
  LongRunContext()
      : ctx_(pcre2_match_context_create(nullptr), pcre2_match_context_free),
        stack_(pcre2_jit_stack_create(32 * 1024, 64 << 20, nullptr), pcre2_jit_stack_free) {
    MAGIX_CHECK(ctx_ && stack_, "regex: out of memory");
    pcre2_set_match_limit(ctx_.get(), UINT32_MAX);
    pcre2_set_depth_limit(ctx_.get(), UINT32_MAX);
    pcre2_set_heap_limit(ctx_.get(), 4u << 20);  // KiB: 4 GiB for the interpreter's backtracking
    pcre2_jit_stack_assign(ctx_.get(), nullptr, stack_.get());
  }
  pcre2_match_context* get() const { return ctx_.get(); }

 private:
  std::unique_ptr<pcre2_match_context, void (*)(pcre2_match_context*)> ctx_;
  std::unique_ptr<pcre2_jit_stack, void (*)(pcre2_jit_stack*)> stack_;
};

}  // namespace

void Regex::find_all(std::string_view s, std::vector<Range>& out) const {
  find_each(s, [&](size_t b, size_t e) { out.emplace_back(b, e); });
}

void Regex::find_each(std::string_view s, const MatchFn& fn) const {
  auto* code = static_cast<pcre2_code*>(code_.get());
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(
      pcre2_match_data_create_from_pattern(code, nullptr), pcre2_match_data_free);
  MAGIX_CHECK(md != nullptr, "regex: out of memory");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  std::unique_ptr<LongRunContext> long_run;  // made on the first match that needs it
  size_t start = 0;
  while (start <= s.size()) {
    int rc = pcre2_match(code, subject, s.size(), start, PCRE2_NO_UTF_CHECK, md.get(),
                         long_run ? long_run->get() : nullptr);
    if (!long_run && (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
                      rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_HEAPLIMIT)) {
      long_run = std::make_unique<LongRunContext>();
      rc = pcre2_match(code, subject, s.size(), start, PCRE2_NO_UTF_CHECK, md.get(),
                       long_run->get());
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    MAGIX_CHECK(rc >= 0, "regex: match failed with PCRE2 error {}", rc);
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t b = ov[0], e = ov[1];
    if (e > b) {
      fn(b, e);
      start = e;
    } else {  // empty match: move on by one character
      if (b >= s.size()) break;
      start = b + utf8_len(static_cast<unsigned char>(s[b]));
    }
  }
}

Pattern Pattern::literal(std::string s) {
  Pattern p;
  p.literal_ = std::move(s);
  return p;
}

Pattern Pattern::regex(const std::string& pattern, const std::string& context) {
  Pattern p;
  p.regex_ = std::make_shared<const Regex>(pattern, context);
  return p;
}

void Pattern::find_all(std::string_view s, std::vector<Range>& out) const {
  find_each(s, [&](size_t b, size_t e) { out.emplace_back(b, e); });
}

void Pattern::find_each(std::string_view s, const MatchFn& fn) const {
  if (regex_) {
    regex_->find_each(s, fn);
    return;
  }
  if (literal_.empty()) return;
  for (size_t pos = s.find(literal_); pos != std::string_view::npos; pos = s.find(literal_, pos)) {
    fn(pos, pos + literal_.size());
    pos += literal_.size();
  }
}

}  // namespace magix::text
