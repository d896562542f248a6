// Reading training/prompt records from .jsonl, .json and .txt files (docs/data.md).
#include <fstream>
#include <sstream>

#include "magix/dataset.hpp"
#include "magix/error.hpp"
#include "magix/json_parse.hpp"

namespace magix {
namespace {

// Collects records; a bad record either throws "source:line: why" or is counted and skipped.
class RecordSink {
 public:
  RecordSink(const std::string& source, const ReadOptions& options, ReadStats* stats)
      : source_(source), options_(options), stats_(stats) {}

  void bad(int64_t line, const std::string& why) {
    std::string message = fmt::format("{}:{}: {}", source_, line, why);
    if (!options_.skip_bad_records) {
      MAGIX_FAIL("{} (fix the record, or pass --skip_bad_records to skip and count such records)",
                 message);
    }
    if (stats_) {
      stats_->skipped += 1;
      if (stats_->skipped_errors.size() < ReadStats::kMaxReported) {
        stats_->skipped_errors.push_back(std::move(message));
      }
    }
  }
  void blank() {
    if (stats_) stats_->blank_lines += 1;
  }
  // A parsed JSON element: must be an object holding the field.
  void add_json(int64_t line, nlohmann::ordered_json value) {
    if (!value.is_object()) {
      bad(line, fmt::format("expected a JSON object, got {}", value.type_name()));
      return;
    }
    auto it = value.find(options_.field);
    if (it == value.end()) {
      bad(line, fmt::format("field '{}' is missing", options_.field));
      return;
    }
    if (auto why = check_record_value(*it, options_.field, options_.allow_messages)) {
      bad(line, *why);
      return;
    }
    Record record;
    record.line = line;
    if (it->is_string()) {
      record.text = std::move(it->get_ref<std::string&>());  // no copy of a long text
    } else {
      record.is_messages = true;
      record.messages = std::move(*it);
    }
    push(std::move(record));
  }
  void add_text(int64_t line, std::string text) {
    if (auto at = find_invalid_utf8(text)) {
      bad(line, fmt::format("invalid UTF-8 at byte {} of the line", *at));
      return;
    }
    Record record;
    record.line = line;
    record.text = std::move(text);
    push(std::move(record));
  }
  std::vector<Record> take() { return std::move(records_); }

 private:
  void push(Record record) {
    records_.push_back(std::move(record));
    if (stats_) stats_->records += 1;
  }
  const std::string& source_;
  const ReadOptions& options_;
  ReadStats* stats_;
  std::vector<Record> records_;
};

bool is_blank(std::string_view s) {
  return s.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

// Calls fn(line_number, line) for each '\n'-separated line (1-based, without the '\n').
template <class Fn>
void for_each_line(std::string_view content, Fn fn) {
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < content.size()) {
    size_t end = content.find('\n', pos);
    if (end == std::string_view::npos) end = content.size();
    fn(++line_no, content.substr(pos, end - pos));
    pos = end + 1;
  }
}

void parse_jsonl(std::string_view content, RecordSink& sink) {
  for_each_line(content, [&](int64_t line_no, std::string_view line) {
    if (is_blank(line)) {
      sink.blank();
      return;
    }
    if (auto at = find_invalid_utf8(line)) {
      sink.bad(line_no, fmt::format("invalid UTF-8 at byte {} of the line", *at));
      return;
    }
    nlohmann::ordered_json value;
    try {
      value = parse_ordered_json(line, "record");  // nesting limited (kMaxJsonDepth)
    } catch (const Error& e) {
      sink.bad(line_no, e.what() + std::string_view("record: ").size());
      return;
    }
    sink.add_json(line_no, std::move(value));
  });
}

void parse_txt(std::string_view content, RecordSink& sink) {
  for_each_line(content, [&](int64_t line_no, std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {
      sink.blank();
      return;
    }
    sink.add_text(line_no, std::string(line));
  });
}

// A .json file: one top-level array. The elements are delimited by a scan that tracks strings
// and nesting (so that each can be parsed, and reported, on its own with its starting line);
// a broken array structure is an error for the whole file.
void parse_json_array(std::string_view content, const std::string& source, RecordSink& sink) {
  size_t pos = 0;
  int64_t line = 1;
  auto skip_ws = [&] {
    while (pos < content.size() && (content[pos] == ' ' || content[pos] == '\t' ||
                                    content[pos] == '\r' || content[pos] == '\n')) {
      if (content[pos] == '\n') line += 1;
      ++pos;
    }
  };
  skip_ws();
  MAGIX_CHECK(pos < content.size() && content[pos] == '[',
              "{}:{}: a .json data file must hold one JSON array of objects (use .jsonl for one "
              "object per line)",
              source, line);
  ++pos;
  skip_ws();
  if (pos < content.size() && content[pos] == ']') {
    ++pos;
  } else {
    while (true) {
      skip_ws();
      MAGIX_CHECK(pos < content.size(), "{}:{}: unexpected end of file inside the JSON array",
                  source, line);
      const size_t begin = pos;
      const int64_t begin_line = line;
      int depth = 0;
      bool in_string = false;
      // Scan to the ',' or ']' that ends this element at depth 0.
      while (pos < content.size()) {
        char c = content[pos];
        if (c == '\n') line += 1;
        if (in_string) {
          if (c == '\\') {
            ++pos;  // the escaped character (never a newline in valid JSON)
            if (pos < content.size() && content[pos] == '\n') line += 1;
          } else if (c == '"') {
            in_string = false;
          }
        } else if (c == '"') {
          in_string = true;
        } else if (c == '[' || c == '{') {
          ++depth;
        } else if (c == ']' || c == '}') {
          if (depth == 0) break;
          --depth;
        } else if (c == ',' && depth == 0) {
          break;
        }
        ++pos;
      }
      MAGIX_CHECK(pos < content.size(),
                  "{}:{}: unexpected end of file inside the JSON array (element starting at line "
                  "{} is not closed)",
                  source, line, begin_line);
      std::string_view element = content.substr(begin, pos - begin);
      if (is_blank(element)) {
        sink.bad(begin_line, "empty array element (a trailing comma?)");
      } else if (auto at = find_invalid_utf8(element)) {
        sink.bad(begin_line, fmt::format("invalid UTF-8 at byte {} of the element", *at));
      } else {
        nlohmann::ordered_json value;
        bool parsed = false;
        try {
          value = parse_ordered_json(element, "record");
          parsed = true;
        } catch (const Error& e) {
          sink.bad(begin_line, e.what() + std::string_view("record: ").size());
        }
        if (parsed) sink.add_json(begin_line, std::move(value));
      }
      const char delimiter = content[pos];
      ++pos;
      if (delimiter == ']') break;
      MAGIX_CHECK(delimiter == ',', "{}:{}: expected ',' or ']' in the JSON array, got '{}'",
                  source, line, delimiter);
    }
  }
  skip_ws();
  MAGIX_CHECK(pos == content.size(), "{}:{}: unexpected content after the JSON array", source,
              line);
}

std::string read_whole_file(const std::filesystem::path& path) {
  std::error_code ec;
  MAGIX_CHECK(std::filesystem::is_regular_file(path, ec),
              "data file '{}' does not exist or is "
              "not a regular file",
              path.string());
  std::ifstream in(path, std::ios::binary);
  MAGIX_CHECK(in.good(), "cannot open data file '{}'", path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  MAGIX_CHECK(!in.bad(), "error reading data file '{}'", path.string());
  return std::move(buffer).str();
}

}  // namespace

std::optional<size_t> find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are invalid.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
      return i;
    }
    i += len;
  }
  return std::nullopt;
}

std::optional<std::string> check_record_value(const nlohmann::ordered_json& value,
                                              const std::string& field, bool allow_messages) {
  if (value.is_string()) return std::nullopt;
  if (!allow_messages) {
    return fmt::format("field '{}' must be a string, got {}", field, value.type_name());
  }
  if (!value.is_array()) {
    return fmt::format("field '{}' must be a string or a list of messages, got {}", field,
                       value.type_name());
  }
  if (value.empty()) return fmt::format("field '{}' is an empty list of messages", field);
  for (size_t i = 0; i < value.size(); ++i) {
    const auto& m = value[i];
    if (!m.is_object()) {
      return fmt::format("message {} of '{}' must be an object with role and content, got {}", i,
                         field, m.type_name());
    }
    for (const char* key : {"role", "content"}) {
      auto it = m.find(key);
      if (it == m.end()) return fmt::format("message {} of '{}' has no '{}'", i, field, key);
      if (!it->is_string()) {
        return fmt::format("message {} of '{}': '{}' must be a string, got {}", i, field, key,
                           it->type_name());
      }
    }
  }
  return std::nullopt;
}

DataFormat data_format_from_path(const std::filesystem::path& path) {
  const std::string ext = path.extension().string();
  if (ext == ".jsonl") return DataFormat::kJsonl;
  if (ext == ".json") return DataFormat::kJson;
  if (ext == ".txt") return DataFormat::kTxt;
  MAGIX_FAIL("data file '{}': unsupported extension '{}' (supported: .jsonl, .json, .txt)",
             path.string(), ext);
}

std::vector<Record> parse_records(std::string_view content, DataFormat format,
                                  const std::string& source, const ReadOptions& options,
                                  ReadStats* stats) {
  RecordSink sink(source, options, stats);
  if (content.substr(0, 3) == "\xEF\xBB\xBF") content.remove_prefix(3);  // UTF-8 byte order mark
  switch (format) {
    case DataFormat::kJsonl:
      parse_jsonl(content, sink);
      break;
    case DataFormat::kJson:
      parse_json_array(content, source, sink);
      break;
    case DataFormat::kTxt:
      parse_txt(content, sink);
      break;
  }
  return sink.take();
}

std::vector<Record> read_records(const std::filesystem::path& path, const ReadOptions& options,
                                 ReadStats* stats) {
  const DataFormat format = data_format_from_path(path);
  const std::string content = read_whole_file(path);
  return parse_records(content, format, path.string(), options, stats);
}

std::vector<std::string> read_prompts(const std::filesystem::path& path,
                                      const std::string& data_field, bool skip_bad_records,
                                      ReadStats* stats) {
  ReadOptions read;
  read.field = data_field;
  read.allow_messages = false;
  read.skip_bad_records = skip_bad_records;
  std::vector<Record> records = read_records(path, read, stats);
  std::vector<std::string> prompts;
  prompts.reserve(records.size());
  for (Record& r : records) prompts.push_back(std::move(r.text));
  return prompts;
}

}  // namespace magix
