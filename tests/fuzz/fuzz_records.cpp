// libFuzzer target over reading data records (.jsonl, .json, .txt) and what the data loader
// does with a record's field. See docs/formats.md for how to build and run it. The first byte
// of an input picks the format (bits 0-1), the field ("text" or "messages", bit 2), whether
// messages are allowed (bit 3) and whether bad records are skipped (bit 4); the rest is the
// file's content, written to a temporary file and read with read_records. For every record:
//   - lines are increasing (.json: non-decreasing) and within the file, texts are valid UTF-8,
//     messages pass check_record_value;
//   - messages are rendered as for training, with a small template and with the built-in format,
//     and their train_on=assistant spans lie inside the rendered text, in order.
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include "magix/chat_template.hpp"
#include "magix/dataset.hpp"
#include "magix/error.hpp"

namespace {

std::string g_tmp_dir;  // one temporary folder per fuzzing process

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "fuzz_records invariant violated: %s\n", what);
  __builtin_trap();
}

void check_messages(const nlohmann::ordered_json& messages) {
  static const magix::TokenizerConfig plain;  // no template: the built-in format
  static const magix::TokenizerConfig chatml = [] {
    magix::TokenizerConfig c;
    c.chat_templates["default"] =
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    c.eos_token = "<|im_end|>";
    return c;
  }();
  (void)messages.dump();
  for (const magix::TokenizerConfig* config : {&plain, &chatml}) {
    std::string rendered;
    try {
      rendered = magix::apply_chat_template(*config, messages, false);
    } catch (const magix::Error&) {
      continue;
    }
    try {
      size_t last = 0;
      for (const auto& [b, e] : magix::assistant_spans(*config, messages, rendered)) {
        if (b < last || b > e || e > rendered.size()) die("assistant span out of order or range");
        last = e;
      }
    } catch (const magix::Error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/fuzz_records_XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return 1;
  g_tmp_dir = tmpl;
  std::atexit([] {
    for (const char* ext : {".jsonl", ".json", ".txt"}) {
      ::unlink((g_tmp_dir + "/data" + ext).c_str());
    }
    ::rmdir(g_tmp_dir.c_str());
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t flags = data[0];
  static const char* const kExt[] = {".jsonl", ".json", ".txt", ".jsonl"};
  const std::string path = g_tmp_dir + "/data" + kExt[flags & 3];
  const std::string content(reinterpret_cast<const char*>(data) + 1, size - 1);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out) return 0;
  }
  magix::ReadOptions options;
  options.field = (flags & 4) ? "messages" : "text";
  options.allow_messages = (flags & 8) == 0;
  options.skip_bad_records = (flags & 16) != 0;
  magix::ReadStats stats;
  std::vector<magix::Record> records;
  try {
    records = magix::read_records(path, options, &stats);
  } catch (const magix::Error&) {
    return 0;
  }
  if (stats.records != static_cast<int64_t>(records.size())) die("stats.records");
  const int64_t lines = std::count(content.begin(), content.end(), '\n') + 1;
  int64_t last_line = 0;
  for (const magix::Record& r : records) {
    // .json: several elements may start on one line; .jsonl, .txt: one record per line
    const bool same_line_ok = (flags & 3) == 1;
    if (r.line < last_line || (r.line == last_line && !same_line_ok) || r.line > lines) {
      die("record line out of order or range");
    }
    last_line = r.line;
    if (!r.is_messages) {
      if (magix::find_invalid_utf8(r.text)) die("record text is invalid UTF-8");
      continue;
    }
    if (!options.allow_messages) die("messages where only text is allowed");
    if (magix::check_record_value(r.messages, options.field, true)) die("bad messages accepted");
    check_messages(r.messages);
  }
  return 0;
}
