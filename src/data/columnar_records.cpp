// Records from parquet files and Arrow IPC files (datasets' save_to_disk) through the Apache
// Arrow C++ library (docs/data.md): only the field's column is read, a batch of rows at a time;
// each row's value becomes the JSON value the same record has in a .jsonl file.
#include "magix/error.hpp"
#include "magix/json_parse.hpp"
#include "record_readers.hpp"

#if MAGIX_HAVE_ARROW
#include <arrow/api.h>
#include <arrow/io/file.h>
#include <arrow/ipc/reader.h>
#include <parquet/arrow/reader.h>
#include <parquet/exception.h>
#include <parquet/file_reader.h>
#endif

namespace magix {

#if MAGIX_HAVE_ARROW

bool has_arrow_support() {
  return true;
}

namespace data {
namespace {

using OrderedJson = nlohmann::ordered_json;

// Rows per batch read from a parquet row group (IPC files keep the batches they were written in:
// datasets writes 1,000 rows per batch).
constexpr int64_t kParquetBatchRows = 1024;
// Bytes read at a time from a parquet column chunk (buffered stream: a column chunk is never read
// whole into memory).
constexpr int64_t kParquetBufferBytes = int64_t{1} << 20;

// A row value past the size bound (kMaxRecordBytes): reported as a bad record.
struct RowTooLarge {};

// Row `i` of `array` as JSON: strings, numbers, booleans, null, lists and structs (field order
// kept). `budget` is what the row may still take in bytes.
OrderedJson to_json(const arrow::Array& array, int64_t i, int depth, int64_t& budget) {
  MAGIX_CHECK(depth <= kMaxJsonDepth, "the value is nested deeper than {} levels", kMaxJsonDepth);
  if (array.IsNull(i)) return nullptr;
  budget -= 8;
  if (budget < 0) throw RowTooLarge{};
  switch (array.type_id()) {
    case arrow::Type::STRING:
    case arrow::Type::LARGE_STRING:
    case arrow::Type::STRING_VIEW: {
      std::string_view v;
      if (array.type_id() == arrow::Type::STRING) {
        v = static_cast<const arrow::StringArray&>(array).GetView(i);
      } else if (array.type_id() == arrow::Type::LARGE_STRING) {
        v = static_cast<const arrow::LargeStringArray&>(array).GetView(i);
      } else {
        v = static_cast<const arrow::StringViewArray&>(array).GetView(i);
      }
      budget -= static_cast<int64_t>(v.size());
      if (budget < 0) throw RowTooLarge{};
      return std::string(v);
    }
    case arrow::Type::BOOL:
      return static_cast<const arrow::BooleanArray&>(array).Value(i);
    case arrow::Type::INT8:
      return static_cast<const arrow::Int8Array&>(array).Value(i);
    case arrow::Type::INT16:
      return static_cast<const arrow::Int16Array&>(array).Value(i);
    case arrow::Type::INT32:
      return static_cast<const arrow::Int32Array&>(array).Value(i);
    case arrow::Type::INT64:
      return static_cast<const arrow::Int64Array&>(array).Value(i);
    case arrow::Type::UINT8:
      return static_cast<const arrow::UInt8Array&>(array).Value(i);
    case arrow::Type::UINT16:
      return static_cast<const arrow::UInt16Array&>(array).Value(i);
    case arrow::Type::UINT32:
      return static_cast<const arrow::UInt32Array&>(array).Value(i);
    case arrow::Type::UINT64:
      return static_cast<const arrow::UInt64Array&>(array).Value(i);
    case arrow::Type::FLOAT:
      return static_cast<double>(static_cast<const arrow::FloatArray&>(array).Value(i));
    case arrow::Type::DOUBLE:
      return static_cast<const arrow::DoubleArray&>(array).Value(i);
    case arrow::Type::LIST:
    case arrow::Type::LARGE_LIST:
    case arrow::Type::FIXED_SIZE_LIST: {
      int64_t begin = 0, length = 0;
      std::shared_ptr<arrow::Array> values;
      if (array.type_id() == arrow::Type::LIST) {
        const auto& l = static_cast<const arrow::ListArray&>(array);
        begin = l.value_offset(i), length = l.value_length(i), values = l.values();
      } else if (array.type_id() == arrow::Type::LARGE_LIST) {
        const auto& l = static_cast<const arrow::LargeListArray&>(array);
        begin = l.value_offset(i), length = l.value_length(i), values = l.values();
      } else {
        const auto& l = static_cast<const arrow::FixedSizeListArray&>(array);
        begin = l.value_offset(i), length = l.value_length(i), values = l.values();
      }
      OrderedJson out = OrderedJson::array();
      for (int64_t k = 0; k < length; ++k) {
        out.push_back(to_json(*values, begin + k, depth + 1, budget));
      }
      return out;
    }
    case arrow::Type::STRUCT: {
      const auto& s = static_cast<const arrow::StructArray&>(array);
      const auto& type = static_cast<const arrow::StructType&>(*s.type());
      OrderedJson out = OrderedJson::object();
      for (int f = 0; f < type.num_fields(); ++f) {
        out[type.field(f)->name()] = to_json(*s.field(f), i, depth + 1, budget);
      }
      return out;
    }
    default:
      MAGIX_FAIL(
          "values of type {} are not supported (strings, numbers, booleans, lists and "
          "structs are)",
          array.type()->ToString());
  }
}

// The batches of one file: a parquet reader or an IPC reader behind one interface.
class ColumnarRecordReader : public SinkReader {
 public:
  ColumnarRecordReader(const std::filesystem::path& path, const ReadOptions& options,
                       ReadStats* stats)
      : SinkReader(path.string(), options, stats, true), path_(path) {}

 protected:
  // The next batch (only the field's column), or nullptr at the end.
  virtual std::shared_ptr<arrow::RecordBatch> next_batch() = 0;

  bool fill() override {
    std::shared_ptr<arrow::RecordBatch> batch = next_batch();
    if (!batch) return false;
    // Untrusted input: offsets, lengths and UTF-8 of every buffer checked before any value is read.
    check(batch->ValidateFull(), "invalid data");
    std::shared_ptr<arrow::Array> column = batch->GetColumnByName(sink_.options().field);
    MAGIX_CHECK(column != nullptr, "{}: the batch lacks the column '{}'", path_.string(),
                sink_.options().field);
    for (int64_t i = 0; i < column->length(); ++i) {
      const int64_t row = ++rows_;
      OrderedJson value;
      int64_t budget = kMaxRecordBytes;
      try {
        value = to_json(*column, i, 0, budget);
      } catch (const RowTooLarge&) {
        sink_.bad(row, fmt::format("the value of '{}' is larger than {} bytes",
                                   sink_.options().field, kMaxRecordBytes));
        continue;
      } catch (const Error& e) {
        MAGIX_FAIL("{}: column '{}': {}", sink_.where(row), sink_.options().field, e.what());
      }
      sink_.add_value(row, std::move(value));
    }
    return true;
  }

  // The column's index in `schema`; a missing column is an error for the whole file.
  int field_index(const arrow::Schema& schema) const {
    const int index = schema.GetFieldIndex(sink_.options().field);
    if (index < 0) {
      std::vector<std::string> names;
      for (const auto& f : schema.fields()) names.push_back(f->name());
      MAGIX_FAIL(
          "{}: no column '{}' (columns: {}); choose the field with --train_data_field / "
          "--data_field",
          path_.string(), sink_.options().field, fmt::join(names, ", "));
    }
    return index;
  }

  void check(const arrow::Status& status, std::string_view what) const {
    MAGIX_CHECK(status.ok(), "{}: {}: {}", path_.string(), what, status.ToString());
  }

  std::filesystem::path path_;
  int64_t rows_ = 0;  // rows of this file handed to the sink
};

class ParquetRecordReader : public ColumnarRecordReader {
 public:
  ParquetRecordReader(const std::filesystem::path& path, const ReadOptions& options,
                      ReadStats* stats)
      : ColumnarRecordReader(path, options, stats) {
    try {
      open();
    } catch (const parquet::ParquetException& e) {
      MAGIX_FAIL("{}: not a readable parquet file: {}", path_.string(), e.what());
    }
  }

 protected:
  std::shared_ptr<arrow::RecordBatch> next_batch() override {
    std::shared_ptr<arrow::RecordBatch> batch;
    try {
      check(batches_->ReadNext(&batch), "cannot read a row group");
    } catch (const parquet::ParquetException& e) {
      MAGIX_FAIL("{}: cannot read a row group: {}", path_.string(), e.what());
    }
    return batch;
  }

 private:
  void open() {
    std::error_code ec;
    MAGIX_CHECK(std::filesystem::is_regular_file(path_, ec),
                "data file '{}' does not exist or is not a regular file", path_.string());
    parquet::ReaderProperties props;
    props.enable_buffered_stream();
    props.set_buffer_size(kParquetBufferBytes);
    parquet::ArrowReaderProperties arrow_props;
    arrow_props.set_batch_size(kParquetBatchRows);
    arrow_props.set_use_threads(false);
    arrow_props.set_pre_buffer(false);
    parquet::arrow::FileReaderBuilder builder;
    check(builder.OpenFile(path_.string(), false, props), "not a readable parquet file");
    builder.properties(arrow_props);
    check(builder.Build(&reader_), "not a readable parquet file");
    std::shared_ptr<arrow::Schema> schema;
    check(reader_->GetSchema(&schema), "cannot read the schema");
    const int field = field_index(*schema);
    // The leaf columns under the field (a list of structs has one per struct member).
    std::vector<int> leaves;
    const parquet::SchemaDescriptor* descr = reader_->parquet_reader()->metadata()->schema();
    for (int c = 0; c < descr->num_columns(); ++c) {
      const std::vector<std::string> path = descr->Column(c)->path()->ToDotVector();
      if (!path.empty() && path.front() == schema->field(field)->name()) leaves.push_back(c);
    }
    MAGIX_CHECK(!leaves.empty(), "{}: column '{}' has no data columns", path_.string(),
                sink_.options().field);
    std::vector<int> row_groups(static_cast<size_t>(reader_->num_row_groups()));
    for (size_t g = 0; g < row_groups.size(); ++g) row_groups[g] = static_cast<int>(g);
    auto batches = reader_->GetRecordBatchReader(row_groups, leaves);
    check(batches.status(), "cannot read the row groups");
    batches_ = std::move(*batches);
  }

  std::unique_ptr<parquet::arrow::FileReader> reader_;
  std::unique_ptr<arrow::RecordBatchReader> batches_;
};

class ArrowIpcRecordReader : public ColumnarRecordReader {
 public:
  ArrowIpcRecordReader(const std::filesystem::path& path, const ReadOptions& options,
                       ReadStats* stats)
      : ColumnarRecordReader(path, options, stats) {
    std::error_code ec;
    MAGIX_CHECK(std::filesystem::is_regular_file(path_, ec),
                "data file '{}' does not exist or is not a regular file", path_.string());
    auto file = arrow::io::ReadableFile::Open(path_.string());
    check(file.status(), "cannot open");
    // The IPC file format starts with "ARROW1"; datasets writes the stream format.
    auto magic = (*file)->ReadAt(0, 6);
    check(magic.status(), "cannot read");
    const bool file_format = (*magic)->ToString() == "ARROW1";
    check((*file)->Seek(0), "cannot read");
    arrow::ipc::IpcReadOptions ipc;
    ipc.use_threads = false;
    if (file_format) {
      auto reader = arrow::ipc::RecordBatchFileReader::Open(*file, ipc);
      check(reader.status(), "not a readable Arrow IPC file");
      ipc.included_fields = {field_index(*(*reader)->schema())};
      reader = arrow::ipc::RecordBatchFileReader::Open(*file, ipc);
      check(reader.status(), "not a readable Arrow IPC file");
      file_reader_ = std::move(*reader);
    } else {
      auto reader = arrow::ipc::RecordBatchStreamReader::Open(*file, ipc);
      check(reader.status(), "not a readable Arrow IPC stream");
      const int field = field_index(*(*reader)->schema());
      check((*file)->Seek(0), "cannot read");
      ipc.included_fields = {field};
      reader = arrow::ipc::RecordBatchStreamReader::Open(*file, ipc);
      check(reader.status(), "not a readable Arrow IPC stream");
      stream_reader_ = std::move(*reader);
    }
  }

 protected:
  std::shared_ptr<arrow::RecordBatch> next_batch() override {
    if (file_reader_) {
      if (next_ >= file_reader_->num_record_batches()) return nullptr;
      auto batch = file_reader_->ReadRecordBatch(next_++);
      check(batch.status(), "cannot read a record batch");
      return *batch;
    }
    std::shared_ptr<arrow::RecordBatch> batch;
    check(stream_reader_->ReadNext(&batch), "cannot read a record batch");
    return batch;
  }

 private:
  std::shared_ptr<arrow::ipc::RecordBatchFileReader> file_reader_;
  std::shared_ptr<arrow::ipc::RecordBatchStreamReader> stream_reader_;
  int next_ = 0;
};

}  // namespace

std::unique_ptr<RecordReader> open_parquet_records(const std::filesystem::path& path,
                                                   const ReadOptions& options, ReadStats* stats) {
  return std::make_unique<ParquetRecordReader>(path, options, stats);
}

std::unique_ptr<RecordReader> open_arrow_records(const std::filesystem::path& path,
                                                 const ReadOptions& options, ReadStats* stats) {
  return std::make_unique<ArrowIpcRecordReader>(path, options, stats);
}

}  // namespace data

#else  // !MAGIX_HAVE_ARROW

bool has_arrow_support() {
  return false;
}

namespace data {
namespace {

[[noreturn]] void no_arrow(const std::filesystem::path& path) {
  MAGIX_FAIL(
      "{}: this magix was built without Apache Arrow, which parquet and Arrow files need. "
      "Run scripts/setup.sh (it installs the pinned pyarrow, whose wheel carries the Arrow C++ "
      "libraries, into .venv) and rebuild with scripts/build.sh (or configure with "
      "-DMAGIX_ARROW=ON -DMAGIX_ARROW_PYTHON=<python with pyarrow>); or convert the data to "
      ".jsonl",
      path.string());
}

}  // namespace

std::unique_ptr<RecordReader> open_parquet_records(const std::filesystem::path& path,
                                                   const ReadOptions&, ReadStats*) {
  no_arrow(path);
}

std::unique_ptr<RecordReader> open_arrow_records(const std::filesystem::path& path,
                                                 const ReadOptions&, ReadStats*) {
  no_arrow(path);
}

}  // namespace data

#endif  // MAGIX_HAVE_ARROW

}  // namespace magix
