// Reading training/prompt records from .jsonl, .json and .txt files, plain or gzip-compressed
// (docs/data.md); the sink that every format's reader fills.
#include <zlib.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "magix/dataset.hpp"
#include "magix/error.hpp"
#include "magix/json_parse.hpp"
#include "record_readers.hpp"

namespace magix {
namespace data {

RecordSink::RecordSink(std::string source, const ReadOptions& options, ReadStats* stats, bool rows)
    : source_(std::move(source)), options_(options), stats_(stats), rows_(rows) {}

std::string RecordSink::where(int64_t line) const {
  return rows_ ? fmt::format("{} row {}", source_, line) : fmt::format("{}:{}", source_, line);
}

void RecordSink::bad(int64_t line, const std::string& why) {
  std::string message = fmt::format("{}: {}", where(line), why);
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

void RecordSink::blank() {
  if (stats_) stats_->blank_lines += 1;
}

void RecordSink::add_json(int64_t line, nlohmann::ordered_json value) {
  if (!value.is_object()) {
    bad(line, fmt::format("expected a JSON object, got {}", value.type_name()));
    return;
  }
  auto it = value.find(options_.field);
  if (it == value.end()) {
    bad(line, fmt::format("field '{}' is missing", options_.field));
    return;
  }
  add_value(line, std::move(*it));
}

void RecordSink::add_value(int64_t line, nlohmann::ordered_json value) {
  if (auto why = check_record_value(value, options_.field, options_.allow_messages)) {
    bad(line, *why);
    return;
  }
  Record record;
  record.line = line;
  if (value.is_string()) {
    record.text = std::move(value.get_ref<std::string&>());  // no copy of a long text
  } else {
    record.is_messages = true;
    record.messages = std::move(value);
  }
  push(std::move(record));
}

void RecordSink::add_text(int64_t line, std::string text) {
  if (auto at = find_invalid_utf8(text)) {
    bad(line, fmt::format("invalid UTF-8 at byte {} of the line", *at));
    return;
  }
  Record record;
  record.line = line;
  record.text = std::move(text);
  push(std::move(record));
}

bool RecordSink::pop(Record& record) {
  if (pending_.empty()) return false;
  record = std::move(pending_.front());
  pending_.pop_front();
  return true;
}

std::vector<Record> RecordSink::take() {
  std::vector<Record> out(std::make_move_iterator(pending_.begin()),
                          std::make_move_iterator(pending_.end()));
  pending_.clear();
  return out;
}

void RecordSink::push(Record record) {
  pending_.push_back(std::move(record));
  if (stats_) stats_->records += 1;
}

bool SinkReader::next(Record& record) {
  while (sink_.empty()) {
    if (!fill()) return false;
  }
  return sink_.pop(record);
}

namespace {

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

void jsonl_line(RecordSink& sink, int64_t line_no, std::string_view line) {
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
}

void txt_line(RecordSink& sink, int64_t line_no, std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) {
    sink.blank();
    return;
  }
  sink.add_text(line_no, std::string(line));
}

void parse_jsonl(std::string_view content, RecordSink& sink) {
  for_each_line(content, [&](int64_t n, std::string_view line) { jsonl_line(sink, n, line); });
}

void parse_txt(std::string_view content, RecordSink& sink) {
  for_each_line(content, [&](int64_t n, std::string_view line) { txt_line(sink, n, line); });
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

// A file's bytes in chunks, inflated when `gzip` (gzip or zlib headers, concatenated gzip
// members too, as `zcat` reads them).
class ByteStream {
 public:
  ByteStream(const std::filesystem::path& path, bool gzip) : path_(path), gzip_(gzip) {
    std::error_code ec;
    MAGIX_CHECK(std::filesystem::is_regular_file(path, ec),
                "data file '{}' does not exist or is not a regular file", path.string());
    file_ = std::fopen(path.c_str(), "rb");
    MAGIX_CHECK(file_ != nullptr, "cannot open data file '{}'", path.string());
    if (gzip_) {
      MAGIX_CHECK(inflateInit2(&z_, 15 + 32) == Z_OK, "{}: cannot start zlib", path.string());
      z_ready_ = true;
    }
  }
  ~ByteStream() {
    if (z_ready_) inflateEnd(&z_);
    if (file_) std::fclose(file_);
  }
  ByteStream(const ByteStream&) = delete;
  ByteStream& operator=(const ByteStream&) = delete;

  // Appends up to about kChunk bytes to `out`; false at the end of the data.
  bool read(std::string& out) {
    if (!gzip_) {
      const size_t old = out.size();
      out.resize(old + kChunk);
      const size_t n = std::fread(out.data() + old, 1, kChunk, file_);
      out.resize(old + n);
      MAGIX_CHECK(!std::ferror(file_), "error reading data file '{}'", path_.string());
      return n > 0;
    }
    while (true) {
      if (z_.avail_in == 0 && !eof_) {
        const size_t n = std::fread(in_.data(), 1, in_.size(), file_);
        MAGIX_CHECK(!std::ferror(file_), "error reading data file '{}'", path_.string());
        eof_ = n < in_.size();
        z_.next_in = reinterpret_cast<Bytef*>(in_.data());
        z_.avail_in = static_cast<uInt>(n);
      }
      if (z_.avail_in == 0 && eof_) {
        MAGIX_CHECK(member_done_, "{}: the compressed data is truncated (no end of stream)",
                    path_.string());
        return false;
      }
      if (member_done_) {  // another gzip member follows
        MAGIX_CHECK(inflateReset(&z_) == Z_OK, "{}: zlib reset failed", path_.string());
        member_done_ = false;
      }
      const size_t old = out.size();
      out.resize(old + kChunk);
      z_.next_out = reinterpret_cast<Bytef*>(out.data() + old);
      z_.avail_out = static_cast<uInt>(kChunk);
      const int rc = inflate(&z_, Z_NO_FLUSH);
      out.resize(old + kChunk - z_.avail_out);
      MAGIX_CHECK(rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR,
                  "{}: corrupt compressed data ({})", path_.string(), z_.msg ? z_.msg : zError(rc));
      if (rc == Z_STREAM_END) member_done_ = true;
      if (out.size() > old) return true;
    }
  }

 private:
  static constexpr size_t kChunk = size_t{1} << 20;
  std::filesystem::path path_;
  bool gzip_;
  std::FILE* file_ = nullptr;
  z_stream z_{};
  bool z_ready_ = false;
  bool eof_ = false;
  bool member_done_ = false;
  std::array<char, 1 << 16> in_{};
};

// JSON lines or text lines from a ByteStream, a chunk at a time; a .json file is JSON lines when
// its first character is '{' (datasets' to_json), else one array read whole.
class TextRecordReader : public SinkReader {
 public:
  TextRecordReader(const std::filesystem::path& path, TextFormat format, bool gzip,
                   const ReadOptions& options, ReadStats* stats)
      : SinkReader(path.string(), options, stats, false), bytes_(path, gzip), format_(format) {}

 protected:
  bool fill() override {
    if (done_) return false;
    if (!started_) start();
    if (done_) return true;  // a .json array was parsed whole
    // Every complete line in the buffer goes to the sink; the last, partial one waits.
    while (sink_.empty()) {
      const size_t nl = buffer_.find('\n', scan_from_);
      if (nl == std::string::npos) {
        if (skipping_ || buffer_.size() - consumed_ > static_cast<size_t>(kMaxRecordBytes)) {
          // A line longer than any record may be: dropped while it lasts, reported at its end.
          skipping_ = true;
          buffer_.clear();
          consumed_ = scan_from_ = 0;
        } else if (consumed_ > 0) {
          buffer_.erase(0, consumed_);
          consumed_ = 0;
          scan_from_ = buffer_.size();
        } else {
          scan_from_ = buffer_.size();
        }
        if (!bytes_.read(buffer_)) {
          done_ = true;
          if (skipping_) {
            too_long(++line_no_);
          } else if (consumed_ < buffer_.size()) {
            line(std::string_view(buffer_).substr(consumed_));
          }
          buffer_.clear();
          return !sink_.empty();
        }
        continue;
      }
      if (skipping_) {
        too_long(++line_no_);
        skipping_ = false;
      } else {
        line(std::string_view(buffer_).substr(consumed_, nl - consumed_));
      }
      consumed_ = nl + 1;
      scan_from_ = consumed_;
    }
    return true;
  }

 private:
  void start() {
    started_ = true;
    // The byte order mark, and for .json the first character, decide how to read.
    while (buffer_.size() < 3 && bytes_.read(buffer_)) {
    }
    if (buffer_.compare(0, 3, "\xEF\xBB\xBF") == 0) consumed_ = scan_from_ = 3;
    if (format_ != TextFormat::kJson) return;
    size_t first = std::string::npos;
    while ((first = buffer_.find_first_not_of(" \t\r\n", consumed_)) == std::string::npos &&
           buffer_.size() < static_cast<size_t>(kMaxRecordBytes) && bytes_.read(buffer_)) {
    }
    if (first != std::string::npos && buffer_[first] == '{') {
      format_ = TextFormat::kJsonl;
      return;
    }
    while (bytes_.read(buffer_)) {
    }
    parse_json_array(std::string_view(buffer_).substr(consumed_), sink_.source(), sink_);
    buffer_.clear();
    buffer_.shrink_to_fit();
    done_ = true;
  }
  void line(std::string_view text) {
    ++line_no_;
    if (text.size() > static_cast<size_t>(kMaxRecordBytes)) {
      too_long(line_no_);
    } else if (format_ == TextFormat::kTxt) {
      txt_line(sink_, line_no_, text);
    } else {
      jsonl_line(sink_, line_no_, text);
    }
  }
  void too_long(int64_t line_no) {
    sink_.bad(line_no, fmt::format("the line is longer than {} bytes", kMaxRecordBytes));
  }

  ByteStream bytes_;
  TextFormat format_;
  std::string buffer_;
  size_t consumed_ = 0;   // bytes of buffer_ already handed out as lines
  size_t scan_from_ = 0;  // where the search for the next '\n' resumes
  int64_t line_no_ = 0;
  bool started_ = false;
  bool skipping_ = false;
  bool done_ = false;
};

}  // namespace

std::unique_ptr<RecordReader> open_text_records(const std::filesystem::path& path,
                                                TextFormat format, bool gzip,
                                                const ReadOptions& options, ReadStats* stats) {
  return std::make_unique<TextRecordReader>(path, format, gzip, options, stats);
}

}  // namespace data

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
  data::RecordSink sink(source, options, stats);
  if (content.substr(0, 3) == "\xEF\xBB\xBF") content.remove_prefix(3);  // UTF-8 byte order mark
  switch (format) {
    case DataFormat::kJsonl:
      data::parse_jsonl(content, sink);
      break;
    case DataFormat::kJson:
      data::parse_json_array(content, source, sink);
      break;
    case DataFormat::kTxt:
      data::parse_txt(content, sink);
      break;
  }
  return sink.take();
}

}  // namespace magix
