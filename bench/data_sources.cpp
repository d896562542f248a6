// bench_data_sources: streams a ~1 GB parquet file through magix's record reader (open_records:
// Arrow's parquet reader, a batch of rows at a time, each row converted to the record a .jsonl
// line gives) and reports records/s, MB/s and peak RSS, against, in the same run, Arrow's own
// decode of the same column (batches, no conversion; with magix's reader properties and with
// Arrow's defaults) and a plain read of the file's bytes.
//
//   bench_data_sources [--size_mb 1024] [--dir /tmp] [--keep]
//
// The file is written first by Arrow's parquet writer (one string column `text` of ~2 KB rows of
// words, 32,768 rows per row group, uncompressed) into DIR. Each measurement runs in its own
// child process, so that its peak RSS (getrusage ru_maxrss) is its own. Reads follow the write,
// so the file is mostly in the page cache: these are decode rates, not disk rates. The last line
// is one JSON object with every figure.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "magix/dataset.hpp"
#include "magix/error.hpp"

#if MAGIX_HAVE_ARROW
#include <arrow/api.h>
#include <arrow/io/file.h>
#include <parquet/arrow/reader.h>
#include <parquet/arrow/writer.h>
#endif

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

[[maybe_unused]] std::string loadavg() {
  std::string load;
  std::getline(std::ifstream("/proc/loadavg"), load);
  return load;
}

[[maybe_unused]] double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

// Runs fn in a child process; its JSON result comes back through a pipe.
template <class Fn>
[[maybe_unused]] nlohmann::json in_child(Fn fn) {
  int fds[2];
  if (pipe(fds) != 0) std::abort();
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    std::string out;
    try {
      out = fn().dump();
    } catch (const std::exception& e) {
      out = nlohmann::json{{"error", e.what()}}.dump();
    }
    if (write(fds[1], out.data(), out.size()) < 0) _exit(1);
    _exit(0);
  }
  close(fds[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return text.empty() ? nlohmann::json{{"error", "child failed"}} : nlohmann::json::parse(text);
}

#if MAGIX_HAVE_ARROW

void ok(const arrow::Status& s) {
  MAGIX_CHECK(s.ok(), "arrow: {}", s.ToString());
}

// ~size_mb MB of rows of words (a fixed LCG picks them), written by Arrow's parquet writer.
nlohmann::json write_file(const fs::path& path, int64_t size_mb) {
  const auto t0 = Clock::now();
  static const char* kWords[] = {"the",   "cat",     "sees",  "a",     "red",     "ball",
                                 "then",  "it",      "rests", "for",   "minutes", "small",
                                 "robot", "follows", "song",  "about", "rain",    "neighbour",
                                 "finds", "three",   "green", "apples"};
  auto schema = arrow::schema({arrow::field("text", arrow::utf8())});
  auto out = arrow::io::FileOutputStream::Open(path.string());
  ok(out.status());
  parquet::WriterProperties::Builder props;
  props.max_row_group_length(32768)->compression(parquet::Compression::UNCOMPRESSED);
  auto writer =
      parquet::arrow::FileWriter::Open(*schema, arrow::default_memory_pool(), *out, props.build());
  ok(writer.status());
  uint64_t state = 12345;
  int64_t bytes = 0, rows = 0;
  const int64_t target = size_mb * 1000 * 1000;
  std::string row;
  while (bytes < target) {
    arrow::StringBuilder builder;
    for (int r = 0; r < 8192; ++r) {
      row.clear();
      const size_t len = 1500 + (state >> 33) % 1000;
      while (row.size() < len) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        row += kWords[(state >> 35) % (sizeof kWords / sizeof *kWords)];
        row += ' ';
      }
      ok(builder.Append(row));
      bytes += static_cast<int64_t>(row.size());
      ++rows;
    }
    std::shared_ptr<arrow::Array> array;
    ok(builder.Finish(&array));
    ok((*writer)->WriteRecordBatch(*arrow::RecordBatch::Make(schema, array->length(), {array})));
  }
  ok((*writer)->Close());
  ok((*out)->Close());
  return {{"rows", rows},
          {"text_mb", static_cast<double>(bytes) / 1e6},
          {"file_mb", static_cast<double>(fs::file_size(path)) / 1e6},
          {"write_s", seconds_since(t0)}};
}

// Arrow alone: the same batches (1,024 rows, buffered column reads, no pre-buffering), no
// conversion; with `defaults`, Arrow's default reader properties instead (pre_buffer on: whole
// row groups are read ahead).
nlohmann::json arrow_only(const fs::path& path, bool defaults) {
  const auto t0 = Clock::now();
  parquet::ReaderProperties props;
  parquet::ArrowReaderProperties arrow_props;
  if (!defaults) {
    props.enable_buffered_stream();
    props.set_buffer_size(int64_t{1} << 20);
    arrow_props.set_batch_size(1024);
    arrow_props.set_use_threads(false);
    arrow_props.set_pre_buffer(false);
  }
  parquet::arrow::FileReaderBuilder builder;
  ok(builder.OpenFile(path.string(), false, props));
  builder.properties(arrow_props);
  std::unique_ptr<parquet::arrow::FileReader> reader;
  ok(builder.Build(&reader));
  std::vector<int> groups(static_cast<size_t>(reader->num_row_groups()));
  for (size_t g = 0; g < groups.size(); ++g) groups[g] = static_cast<int>(g);
  auto batches = reader->GetRecordBatchReader(groups, {0});
  ok(batches.status());
  int64_t rows = 0, bytes = 0;
  std::shared_ptr<arrow::RecordBatch> batch;
  while (true) {
    ok((*batches)->ReadNext(&batch));
    if (!batch) break;
    ok(batch->ValidateFull());
    const auto& s = static_cast<const arrow::StringArray&>(*batch->column(0));
    rows += s.length();
    bytes += s.total_values_length();
  }
  const double secs = seconds_since(t0);
  return {{"rows", rows},
          {"seconds", secs},
          {"mb_per_s", static_cast<double>(bytes) / 1e6 / secs},
          {"peak_rss_mb", peak_rss_mb()}};
}

#endif

// magix's record reader: every record, as training and generate read them.
[[maybe_unused]] nlohmann::json magix_records(const fs::path& path) {
  const auto t0 = Clock::now();
  magix::ReadOptions options;
  auto reader = magix::open_records(path, options);
  magix::Record record;
  int64_t rows = 0, bytes = 0;
  while (reader->next(record)) {
    ++rows;
    bytes += static_cast<int64_t>(record.text.size());
  }
  const double secs = seconds_since(t0);
  return {{"rows", rows},
          {"seconds", secs},
          {"records_per_s", static_cast<double>(rows) / secs},
          {"mb_per_s", static_cast<double>(bytes) / 1e6 / secs},
          {"peak_rss_mb", peak_rss_mb()}};
}

// The file's bytes read in 1 MiB chunks (the page cache's speed).
[[maybe_unused]] nlohmann::json plain_read(const fs::path& path) {
  const auto t0 = Clock::now();
  std::FILE* f = std::fopen(path.c_str(), "rb");
  MAGIX_CHECK(f != nullptr, "cannot open {}", path.string());
  std::vector<char> buf(1 << 20);
  int64_t bytes = 0;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) bytes += static_cast<int64_t>(n);
  std::fclose(f);
  const double secs = seconds_since(t0);
  return {{"mb_per_s", static_cast<double>(bytes) / 1e6 / secs}};
}

}  // namespace

int main(int argc, char** argv) {
  int64_t size_mb = 1024;
  fs::path dir = "/tmp";
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--size_mb" && i + 1 < argc) {
      size_mb = std::stoll(argv[++i]);
    } else if (a == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (a == "--keep") {
      keep = true;
    } else {
      std::fprintf(stderr, "usage: bench_data_sources [--size_mb 1024] [--dir /tmp] [--keep]\n");
      return 2;
    }
  }
#if MAGIX_HAVE_ARROW
  const std::string load_start = loadavg();
  const fs::path path = dir / "magix_bench_data_sources.parquet";
  const nlohmann::json written = in_child([&] { return write_file(path, size_mb); });
  std::printf("written: %s\n", written.dump().c_str());
  const nlohmann::json plain = in_child([&] { return plain_read(path); });
  std::printf("plain read of the file: %s\n", plain.dump().c_str());
  const nlohmann::json arrow = in_child([&] { return arrow_only(path, false); });
  std::printf("Arrow batches alone (magix's reader properties): %s\n", arrow.dump().c_str());
  const nlohmann::json arrow_defaults = in_child([&] { return arrow_only(path, true); });
  std::printf("Arrow batches alone (Arrow's default properties): %s\n",
              arrow_defaults.dump().c_str());
  const nlohmann::json records = in_child([&] { return magix_records(path); });
  std::printf("magix open_records: %s\n", records.dump().c_str());
  if (!keep) fs::remove(path);
  nlohmann::json out = {{"bench", "data_sources"},
                        {"file", written},
                        {"plain_read", plain},
                        {"arrow_only", arrow},
                        {"arrow_defaults", arrow_defaults},
                        {"magix_records", records},
                        {"threads", 1},
                        {"load_start", load_start},
                        {"load_end", loadavg()}};
  if (records.contains("mb_per_s") && arrow.contains("mb_per_s")) {
    out["records_over_arrow"] = records["mb_per_s"].get<double>() / arrow["mb_per_s"].get<double>();
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
#else
  (void)size_mb, (void)keep;
  std::printf("%s\n", nlohmann::json{{"bench", "data_sources"},
                                     {"skipped", "built without Arrow (MAGIX_ARROW)"}}
                          .dump()
                          .c_str());
  return 0;
#endif
}
