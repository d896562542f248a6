// The readers behind open_records (docs/data.md): one per file format, and the sink that turns a
// file's values into Records with the bad-record rules shared by every format.
#pragma once

#include <deque>
#include <filesystem>
#include <memory>
#include <string>

#include "magix/dataset.hpp"

namespace magix::data {

// Collects records; a bad record either throws "where: why" or is counted and skipped.
// `rows`: locations are "file row N" (columnar files) instead of "file:N" (text files).
class RecordSink {
 public:
  RecordSink(std::string source, const ReadOptions& options, ReadStats* stats, bool rows = false);

  void bad(int64_t line, const std::string& why);
  void blank();
  // A parsed JSON element of a text file: must be an object holding the field.
  void add_json(int64_t line, nlohmann::ordered_json value);
  // The field's value itself (a row of a parquet/arrow column).
  void add_value(int64_t line, nlohmann::ordered_json value);
  // A line of a .txt file.
  void add_text(int64_t line, std::string text);

  // The oldest record not yet taken; false when none is pending.
  bool pop(Record& record);
  bool empty() const { return pending_.empty(); }
  std::vector<Record> take();
  std::string where(int64_t line) const;
  const std::string& source() const { return source_; }
  const ReadOptions& options() const { return options_; }

 private:
  void push(Record record);
  std::string source_;
  const ReadOptions& options_;
  ReadStats* stats_;
  bool rows_;
  std::deque<Record> pending_;
};

// A RecordReader that drains a RecordSink refilled by fill() (false: the source is exhausted).
class SinkReader : public RecordReader {
 public:
  SinkReader(std::string source, const ReadOptions& options, ReadStats* stats, bool rows)
      : sink_(std::move(source), options, stats, rows) {}
  bool next(Record& record) override;
  std::string where(const Record& record) const override { return sink_.where(record.line); }

 protected:
  virtual bool fill() = 0;
  RecordSink sink_;
};

// .jsonl / .json / .txt, each optionally gzip- or zlib-compressed (`gzip`). JSON lines and text
// stream in chunks; a .json array is read whole (it is one JSON value).
enum class TextFormat { kJsonl, kJson, kTxt };
std::unique_ptr<RecordReader> open_text_records(const std::filesystem::path& path,
                                                TextFormat format, bool gzip,
                                                const ReadOptions& options, ReadStats* stats);

// A parquet file, a batch of rows at a time, only the field's column read.
std::unique_ptr<RecordReader> open_parquet_records(const std::filesystem::path& path,
                                                   const ReadOptions& options, ReadStats* stats);

// An Arrow IPC stream (what datasets' save_to_disk writes) or IPC file, a record batch at a time.
std::unique_ptr<RecordReader> open_arrow_records(const std::filesystem::path& path,
                                                 const ReadOptions& options, ReadStats* stats);

}  // namespace magix::data
