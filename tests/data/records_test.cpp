// Reading records from .jsonl / .json / .txt: contents, line numbers, bad records.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>

#include "magix/dataset.hpp"
#include "magix/error.hpp"

namespace magix {
namespace {

const std::filesystem::path kDir = std::filesystem::path(MAGIX_FIXTURES_DIR) / "data";

// The message of the magix::Error thrown by f (fails the test when none is thrown).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no magix::Error thrown";
  return "";
}

std::vector<Record> parse(std::string_view content, DataFormat format, ReadOptions options = {},
                          ReadStats* stats = nullptr) {
  return parse_records(content, format, "mem.data", options, stats);
}

TEST(Records, JsonlTextWithLinesAndBlankLine) {
  ReadStats stats;
  auto records = read_records(kDir / "text.jsonl", ReadOptions{}, &stats);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].text, "Hello world.");
  EXPECT_EQ(records[0].line, 1);
  EXPECT_EQ(records[1].text, "Second line with unicode: h\xC3\xA9llo \xE2\x9C\x93");
  EXPECT_EQ(records[1].line, 2);
  EXPECT_EQ(records[2].text, "Third, after a blank line.");
  EXPECT_EQ(records[2].line, 4);
  EXPECT_FALSE(records[2].is_messages);
  EXPECT_EQ(stats.records, 3);
  EXPECT_EQ(stats.blank_lines, 1);
  EXPECT_EQ(stats.skipped, 0);
}

TEST(Records, JsonArrayElementsStartLines) {
  auto records = read_records(kDir / "text.json", ReadOptions{});
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].text, "first");
  EXPECT_EQ(records[0].line, 2);
  EXPECT_EQ(records[1].text, "second,\n with an escaped newline and a ] bracket");
  EXPECT_EQ(records[1].line, 3);
  EXPECT_EQ(records[2].text, "third");
  EXPECT_EQ(records[2].line, 7);
}

TEST(Records, TxtStripsCrLfAndSkipsEmptyLines) {
  ReadStats stats;
  auto records = read_records(kDir / "text.txt", ReadOptions{}, &stats);
  ASSERT_EQ(records.size(), 4u);
  EXPECT_EQ(records[0].text, "line one");
  EXPECT_EQ(records[1].text, "line two");
  EXPECT_EQ(records[2].text, "line four");
  EXPECT_EQ(records[2].line, 4);
  EXPECT_EQ(records[3].text, "line five");  // no final newline
  EXPECT_EQ(records[3].line, 5);
  EXPECT_EQ(stats.blank_lines, 1);
  // A line of spaces is a record in TXT (only empty lines are skipped); a lone "\r" is empty.
  auto spaces = parse("  \n\r\nx\n", DataFormat::kTxt);
  ASSERT_EQ(spaces.size(), 2u);
  EXPECT_EQ(spaces[0].text, "  ");
  EXPECT_EQ(spaces[1].text, "x");
  EXPECT_EQ(spaces[1].line, 3);
}

TEST(Records, ByteOrderMarkIsIgnored) {
  auto records = parse("\xEF\xBB\xBF{\"text\": \"a\"}\n", DataFormat::kJsonl);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].text, "a");
}

TEST(Records, MessagesField) {
  ReadOptions options;
  options.field = "messages";
  auto records = read_records(kDir / "chat.jsonl", options);
  ASSERT_EQ(records.size(), 2u);
  ASSERT_TRUE(records[1].is_messages);
  ASSERT_EQ(records[1].messages.size(), 5u);
  EXPECT_EQ(records[1].messages[2]["role"], "assistant");
  EXPECT_EQ(records[1].messages[2]["content"], "Hello!");
}

struct BadCase {
  const char* content;
  DataFormat format;
  int line;
  const char* reason;  // a fragment of the message
};

TEST(Records, EachBadRecordNamesFileAndLine) {
  const BadCase cases[] = {
      {"{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n", DataFormat::kJsonl, 2, "invalid JSON"},
      {"{\"text\": \"ok\"}\n\n{\"other\": 1}\n", DataFormat::kJsonl, 3, "field 'text' is missing"},
      {"{\"text\": 42}\n", DataFormat::kJsonl, 1,
       "must be a string or a list of messages, got number"},
      {"{\"text\": \"a\xC3(b\"}\n", DataFormat::kJsonl, 1, "invalid UTF-8 at byte 11"},
      {"ok\nbad \xED\xA0\x80 surrogate\n", DataFormat::kTxt, 2, "invalid UTF-8 at byte 4"},
      {"ok\n\xC0\xAF overlong\n", DataFormat::kTxt, 2, "invalid UTF-8 at byte 0"},
      {"{\"text\": []}\n", DataFormat::kJsonl, 1, "empty list of messages"},
      {"{\"text\": [{\"content\": \"x\"}]}\n", DataFormat::kJsonl, 1,
       "message 0 of 'text' has no 'role'"},
      {"{\"text\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\"}]}\n",
       DataFormat::kJsonl, 1, "message 1 of 'text' has no 'content'"},
      {"{\"text\": [{\"role\": \"user\", \"content\": null}]}\n", DataFormat::kJsonl, 1,
       "'content' must be a string, got null"},
      {"{\"text\": [\"hi\"]}\n", DataFormat::kJsonl, 1, "must be an object with role and content"},
      {"[1, 2]\n", DataFormat::kJsonl, 1, "expected a JSON object, got array"},
      // Each JSON type where a string or a list belongs; a number where a row belongs.
      {"{\"text\": {\"k\": 1}}\n", DataFormat::kJsonl, 1, "list of messages, got object"},
      {"{\"text\": true}\n", DataFormat::kJsonl, 1, "list of messages, got boolean"},
      {"{\"text\": null}\n", DataFormat::kJsonl, 1, "list of messages, got null"},
      {"{\"text\": [{\"role\": 3, \"content\": \"a\"}]}\n", DataFormat::kJsonl, 1,
       "'role' must be a string, got number"},
      {"{\"text\": [{\"role\": \"user\", \"content\": [\"a\"]}]}\n", DataFormat::kJsonl, 1,
       "'content' must be a string, got array"},
      {"3\n", DataFormat::kJsonl, 1, "expected a JSON object, got number"},
      {"[\n {\"text\": \"a\"},\n {\"text\": 1}\n]", DataFormat::kJson, 3, "got number"},
      {"[\n {\"text\": \"a\"},\n {\"text\" \"b\"}\n]", DataFormat::kJson, 3, "invalid JSON"},
      {"[\n {\"text\": \"a\"},\n\n]", DataFormat::kJson, 4, "empty array element"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.content);
    const std::string message = error_of([&] { parse(c.content, c.format); });
    EXPECT_NE(message.find("mem.data:" + std::to_string(c.line) + ": "), std::string::npos)
        << message;
    EXPECT_NE(message.find(c.reason), std::string::npos) << message;
    EXPECT_NE(message.find("--skip_bad_records"), std::string::npos) << message;
    // Skipping: the bad record is counted and reported, the others are kept.
    ReadOptions skip;
    skip.skip_bad_records = true;
    ReadStats stats;
    const auto records = parse(c.content, c.format, skip, &stats);
    EXPECT_EQ(stats.skipped, 1);
    ASSERT_EQ(stats.skipped_errors.size(), 1u);
    EXPECT_NE(stats.skipped_errors[0].find("mem.data:" + std::to_string(c.line) + ": "),
              std::string::npos);
    EXPECT_EQ(static_cast<int64_t>(records.size()), stats.records);
  }
}

TEST(Records, BadFileSkippedAndCounted) {
  const std::string path = (kDir / "bad.jsonl").string();
  const std::string message = error_of([&] { read_records(kDir / "bad.jsonl", ReadOptions{}); });
  EXPECT_NE(message.find(path + ":2: invalid JSON"), std::string::npos) << message;

  ReadOptions skip;
  skip.skip_bad_records = true;
  ReadStats stats;
  auto records = read_records(kDir / "bad.jsonl", skip, &stats);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].text, "good one");
  EXPECT_EQ(records[0].line, 1);
  EXPECT_EQ(records[1].text, "good two");
  EXPECT_EQ(records[1].line, 10);
  EXPECT_EQ(stats.skipped, 9);
  EXPECT_EQ(stats.records, 2);
  ASSERT_EQ(stats.skipped_errors.size(), 9u);
  const int bad_lines[] = {2, 3, 4, 5, 6, 7, 8, 9, 11};
  for (size_t i = 0; i < 9; ++i) {
    EXPECT_EQ(stats.skipped_errors[i].rfind(path + ":" + std::to_string(bad_lines[i]) + ": ", 0),
              0u)
        << stats.skipped_errors[i];
  }
}

TEST(Records, ReportsAtMostTenSkippedMessages) {
  std::string content;
  for (int i = 0; i < 25; ++i) content += "{\"x\": 1}\n";
  ReadOptions skip;
  skip.skip_bad_records = true;
  ReadStats stats;
  EXPECT_TRUE(parse(content, DataFormat::kJsonl, skip, &stats).empty());
  EXPECT_EQ(stats.skipped, 25);
  EXPECT_EQ(stats.skipped_errors.size(), ReadStats::kMaxReported);
}

TEST(Records, JsonStructureErrorsAreFileErrors) {
  EXPECT_NE(error_of([] {
              parse("{\"text\": \"a\"}", DataFormat::kJson);
            }).find("mem.data:1: a .json data file must hold one JSON array"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse("[\n{\"text\": \"a\"},\n{\"text\": \"b\"}\n", DataFormat::kJson);
            }).find("unexpected end of file"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse("[{\"text\": \"a\"}]\n]", DataFormat::kJson);
            }).find("mem.data:2: unexpected content after the JSON array"),
            std::string::npos);
  // Structure errors are not per-record: skipping does not hide them.
  ReadOptions skip;
  skip.skip_bad_records = true;
  EXPECT_THROW(parse("[{\"text\": \"a\"}", DataFormat::kJson, skip), Error);
  EXPECT_TRUE(parse("  [ ]  ", DataFormat::kJson).empty());
}

TEST(Records, FileErrors) {
  EXPECT_NE(
      error_of([] { read_records(kDir / "missing.jsonl", ReadOptions{}); }).find("missing.jsonl"),
      std::string::npos);
  EXPECT_NE(
      error_of([] { data_format_from_path("data.csv"); }).find("unsupported extension '.csv'"),
      std::string::npos);
  EXPECT_EQ(data_format_from_path("a/b.jsonl"), DataFormat::kJsonl);
  EXPECT_EQ(data_format_from_path("b.json"), DataFormat::kJson);
  EXPECT_EQ(data_format_from_path("b.txt"), DataFormat::kTxt);
}

TEST(Records, Utf8Validation) {
  EXPECT_FALSE(find_invalid_utf8("plain ascii").has_value());
  EXPECT_FALSE(find_invalid_utf8("h\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x98\x80").has_value());
  EXPECT_EQ(find_invalid_utf8("ab\x80"), 2u);                // lone continuation byte
  EXPECT_EQ(find_invalid_utf8("a\xE2\x9C"), 1u);             // truncated sequence
  EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);      // past U+10FFFF
  EXPECT_EQ(find_invalid_utf8("x\xE0\x80\x80"), 1u);         // overlong
  EXPECT_EQ(find_invalid_utf8("\xF8\x88\x80\x80\x80"), 0u);  // 5-byte form
}

// Damaged files never crash the reader: every outcome is records or a magix::Error.
TEST(Records, MutatedFilesGiveRecordsOrErrors) {
  const std::string seeds[] = {
      "[\n {\"text\": \"a\\\"b\"},\n {\"text\": [{\"role\": \"user\", \"content\": \"c\"}]}\n]\n",
      "{\"text\": \"x\"}\n{\"text\": [{\"role\": \"user\", \"content\": \"y\"}]}\n",
      "one\r\ntwo\n\nthree"};
  const DataFormat formats[] = {DataFormat::kJson, DataFormat::kJsonl, DataFormat::kTxt};
  std::mt19937 gen(1234);
  const char alphabet[] = "[]{}\",:\\ \n\rax\x80\xC3";
  for (int iter = 0; iter < 3000; ++iter) {
    const int k = iter % 3;
    std::string content = seeds[k];
    const int edits = 1 + static_cast<int>(gen() % 4);
    for (int e = 0; e < edits && !content.empty(); ++e) {
      const size_t at = gen() % content.size();
      const char c = alphabet[gen() % (sizeof(alphabet) - 1)];
      switch (gen() % 3) {
        case 0:
          content[at] = c;
          break;
        case 1:
          content.insert(content.begin() + static_cast<std::ptrdiff_t>(at), c);
          break;
        default:
          content.erase(at, 1);
      }
    }
    for (bool skip : {false, true}) {
      ReadOptions options;
      options.skip_bad_records = skip;
      ReadStats stats;
      try {
        const auto records = parse(content, formats[k], options, &stats);
        for (const auto& r : records) {
          EXPECT_FALSE(find_invalid_utf8(r.text).has_value());
          EXPECT_GE(r.line, 1);
        }
      } catch (const Error&) {
      }
    }
  }
}

TEST(Prompts, TxtAndJsonl) {
  const std::vector<std::string> expected = {"What is the capital of France?",
                                             "Write a haiku about the sea."};
  EXPECT_EQ(read_prompts(kDir / "prompts.txt"), expected);
  EXPECT_EQ(read_prompts(kDir / "prompts.jsonl"), expected);
  // A list of messages is not a prompt.
  const std::string message = error_of([] { read_prompts(kDir / "chat.jsonl", "messages"); });
  EXPECT_NE(message.find("chat.jsonl:1: field 'messages' must be a string, got array"),
            std::string::npos)
      << message;
}

}  // namespace
}  // namespace magix

namespace magix {
namespace {

// A record field nested a million levels deep (copying it recursed until the stack overflowed).
TEST(Records, DeepNestingIsABadRecordNotACrash) {
  const std::string deep = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  for (DataFormat format : {DataFormat::kJsonl, DataFormat::kJson}) {
    std::string content = "{\"text\": \"ok\"}\n{\"text\": " + deep + "}\n";
    if (format == DataFormat::kJson) content = "[{\"text\": \"ok\"},\n{\"text\": " + deep + "}]";
    ReadOptions read;
    try {
      parse_records(content, format, "deep.jsonl", read, nullptr);
      FAIL() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("deep.jsonl:2: JSON nested deeper than 512 levels"),
                std::string::npos)
          << e.what();
    }
  }
  // 512 levels are accepted
  ReadOptions read;
  const std::string ok =
      "{\"text\": \"a\", \"x\": " + std::string(511, '[') + std::string(511, ']') + "}\n";
  EXPECT_EQ(parse_records(ok, DataFormat::kJsonl, "ok.jsonl", read, nullptr).size(), 1u);
}

}  // namespace
}  // namespace magix
