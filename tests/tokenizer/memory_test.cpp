// Memory of encoding one long text: a constant factor of the text, not of its words. Encoding
// kept per-byte alignment (16 bytes per byte) and every pre-tokenized word at once, 80 times the
// text; now words are encoded as they are cut. Checked in a child process whose address space is
// limited (RLIMIT_AS), so a regression fails the test instead of exhausting the machine.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <new>
#include <string>
#include <vector>

#include "tokenizer_test_util.hpp"

namespace magix::test {
namespace {

// 20 MB of words, digits, punctuation and non-ASCII text, with spaces and newlines.
std::string long_text() {
  const char* const words[] = {"the",   "model", "tokenizer", "Hello", "naïve", "東京",
                               "🙂",  "isn't", "3.14159",   "2026",  "über",  "(a+b)",
                               "loss=", "x_y",   "Привет",    "!!",    "data",  "world"};
  const char* const seps[] = {" ", " ", " ", ", ", ". ", "\n"};
  std::string s;
  s.reserve(20'100'000);
  uint32_t state = 12345;
  while (s.size() < 20'000'000) {
    state = state * 1664525u + 1013904223u;
    s += words[(state >> 8) % std::size(words)];
    s += seps[(state >> 20) % std::size(seps)];
  }
  return s;
}

size_t address_space_bytes() {
  size_t pages = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%zu", &pages) != 1) pages = 0;
    std::fclose(f);
  }
  return pages * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

// Exit status of a child that encodes `text` with at most `budget` bytes of address space more
// than it starts with: 0 encoded, 2 out of memory, 3 another error, 4 no ids.
int encode_in_child(const Tokenizer& tok, const std::string& text, size_t budget) {
  const pid_t pid = fork();
  if (pid == 0) {
    const rlim_t limit = address_space_bytes() + budget;
    const rlimit rl{limit, limit};
    if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(5);
    try {
      const std::vector<int32_t> ids = tok.encode(text);
      _exit(ids.size() > text.size() / 10 ? 0 : 4);
    } catch (const std::bad_alloc&) {
      _exit(2);
    } catch (...) {
      _exit(3);
    }
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(TokenizerMemory, LongTextEncodesInAFewTimesItsSize) {
  const std::string text = long_text();
  // Byte-level BPE with the GPT-2 split (Llama-3 / Qwen style) and Metaspace (SentencePiece
  // style); 20 MB of text must encode within 200 MB more address space.
  for (const char* name : {"trained_bytelevel", "trained_metaspace"}) {
    const Tokenizer tok = Tokenizer::load((fixtures_dir() / name).string());
    EXPECT_EQ(encode_in_child(tok, text, 200u << 20), 0)
        << name << " (2: out of memory under the limit)";
  }
}

}  // namespace
}  // namespace magix::test
