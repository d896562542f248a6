// Data sources beyond one JSONL file (docs/data.md): parquet, datasets' save_to_disk folders,
// hub datasets in a local HF cache, .jsonl.gz and to_json output, each against its .jsonl twin
// (tests/fixtures/data/sources/, written by pyarrow and datasets:
// tools/reference/make_data_source_fixtures.py); and bad files.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "magix/dataset.hpp"
#include "magix/error.hpp"

#if MAGIX_HAVE_ARROW
#include <arrow/api.h>
#include <arrow/io/file.h>
#include <parquet/arrow/writer.h>
#endif

namespace magix {
namespace {

namespace fs = std::filesystem;
const fs::path kFix = fs::path(MAGIX_FIXTURES_DIR);
const fs::path kDir = kFix / "data" / "sources";

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

ReadOptions opts(std::string field = "text", std::string split = "train", std::string config = "") {
  ReadOptions o;
  o.field = std::move(field);
  o.split = std::move(split);
  o.config = std::move(config);
  return o;
}

std::vector<Record> read(const std::string& source, const ReadOptions& o = opts()) {
  return read_records(source, o);
}

// The same records: texts or messages (JSON equality, key order included), in order.
void expect_same(const std::vector<Record>& got, const std::vector<Record>& want, size_t from = 0) {
  ASSERT_EQ(got.size(), want.size() - from);
  for (size_t i = 0; i < got.size(); ++i) {
    const Record& w = want[from + i];
    EXPECT_EQ(got[i].is_messages, w.is_messages) << i;
    EXPECT_EQ(got[i].text, w.text) << i;
    EXPECT_EQ(got[i].messages, w.messages) << i;
    if (w.is_messages) {
      EXPECT_EQ(got[i].messages.dump(), w.messages.dump()) << i;
    }
  }
}

std::vector<Record> corpus() {
  return read((kFix / "train" / "corpus.jsonl").string());
}

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* v = std::getenv(name)) old_ = v;
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/magix_sources_XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out << bytes;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

#define SKIP_WITHOUT_ARROW() \
  if (!has_arrow_support()) GTEST_SKIP() << "built without Arrow (MAGIX_ARROW)"

// --- text sources ---------------------------------------------------------------------------

TEST(DataSources, JsonlGzEqualsJsonl) {
  expect_same(read((kDir / "corpus.jsonl.gz").string()), corpus());
}

TEST(DataSources, ToJsonLinesAndArrayEqualJsonl) {
  expect_same(read((kDir / "corpus_to_json.json").string()), corpus());
  expect_same(read((kDir / "corpus_to_json_array.json").string()), corpus());
}

TEST(DataSources, JsonlStreamsLinesAcrossChunksWithLineNumbers) {
  // Lines longer than the reader's 1 MiB chunks, a blank line and no final newline.
  TempDir tmp;
  const std::string big(1500000, 'x');
  write_file(tmp.path / "d.jsonl", "{\"text\": \"" + big + "\"}\n\n{\"text\": \"b\"}");
  ReadStats stats;
  auto records = read_records(tmp.path / "d.jsonl", opts(), &stats);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].text, big);
  EXPECT_EQ(records[1].text, "b");
  EXPECT_EQ(records[1].line, 3);
  EXPECT_EQ(stats.blank_lines, 1);
}

TEST(DataSources, LineLongerThanARecordMayBeIsABadRecord) {
  // kMaxRecordBytes bounds what one line may hold; the reader drops it as it streams and goes on.
  TempDir tmp;
  {
    std::ofstream out(tmp.path / "long.jsonl", std::ios::binary);
    out << "{\"text\": \"a\"}\n{\"text\": \"";
    const std::string chunk(1 << 20, 'y');
    for (int64_t i = 0; i <= kMaxRecordBytes >> 20; ++i) out << chunk;
    out << "\"}\n{\"text\": \"c\"}\n";
  }
  const std::string e = error_of([&] { read((tmp.path / "long.jsonl").string()); });
  EXPECT_NE(e.find("long.jsonl:2: the line is longer than 67108864 bytes"), std::string::npos) << e;
  ReadOptions o = opts();
  o.skip_bad_records = true;
  ReadStats stats;
  const auto records = read_records(tmp.path / "long.jsonl", o, &stats);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].text, "c");
  EXPECT_EQ(records[1].line, 3);
  EXPECT_EQ(stats.skipped, 1);
}

TEST(DataSources, GzipErrorsAreClear) {
  TempDir tmp;
  const std::string gz = read_file(kDir / "corpus.jsonl.gz");
  write_file(tmp.path / "cut.jsonl.gz", gz.substr(0, gz.size() / 2));
  EXPECT_NE(error_of([&] { read((tmp.path / "cut.jsonl.gz").string()); }).find("truncated"),
            std::string::npos);
  std::string bad = gz;
  for (size_t i = 20; i < 60; ++i) bad[i] = static_cast<char>(bad[i] ^ 0x5A);
  write_file(tmp.path / "bad.jsonl.gz", bad);
  EXPECT_NE(
      error_of([&] { read((tmp.path / "bad.jsonl.gz").string()); }).find("corrupt compressed data"),
      std::string::npos);
  // zlib-wrapped (not gzip) data reads too.
  const std::string plain = read_file(kFix / "train" / "corpus.jsonl");
  uLongf size = compressBound(plain.size());
  std::string z(size, '\0');
  ASSERT_EQ(compress(reinterpret_cast<Bytef*>(z.data()), &size,
                     reinterpret_cast<const Bytef*>(plain.data()), plain.size()),
            Z_OK);
  z.resize(size);
  write_file(tmp.path / "z.jsonl.gz", z);
  expect_same(read((tmp.path / "z.jsonl.gz").string()), corpus());
}

// --- parquet ----------------------------------------------------------------------------------

TEST(DataSources, ParquetTextEqualsJsonl) {
  SKIP_WITHOUT_ARROW();
  const auto got = read((kDir / "corpus.parquet").string());
  expect_same(got, corpus());
  EXPECT_EQ(got[47].line, 48);  // rows across the file's three row groups
}

TEST(DataSources, ParquetConversationsEqualJsonl) {
  SKIP_WITHOUT_ARROW();
  const auto want = read((kDir / "conv.jsonl").string(), opts("messages"));
  expect_same(read((kDir / "conv.parquet").string(), opts("messages")), want);
}

TEST(DataSources, ParquetMissingColumnNamesTheColumns) {
  SKIP_WITHOUT_ARROW();
  const std::string e = error_of([] { read((kDir / "conv.parquet").string()); });
  EXPECT_NE(e.find("no column 'text' (columns: messages, id)"), std::string::npos) << e;
}

TEST(DataSources, ParquetOfAnotherTypeIsABadRecord) {
  SKIP_WITHOUT_ARROW();
  // "id" is an int64 column: not a text, so each row is a bad record (skipped on request).
  ReadOptions o = opts("id");
  const std::string e = error_of([&] { read((kDir / "conv.parquet").string(), o); });
  EXPECT_NE(e.find("conv.parquet row 1: field 'id' must be a string"), std::string::npos) << e;
  o.skip_bad_records = true;
  ReadStats stats;
  EXPECT_TRUE(read_records(kDir / "conv.parquet", o, &stats).empty());
  EXPECT_EQ(stats.skipped, 16);
}

TEST(DataSources, BadParquetFilesAreErrors) {
  SKIP_WITHOUT_ARROW();
  TempDir tmp;
  const std::string bytes = read_file(kDir / "corpus.parquet");
  // Truncated at several places, and bytes flipped in the middle: an Error, never a crash.
  for (size_t cut : {size_t{0}, size_t{4}, size_t{100}, bytes.size() / 2, bytes.size() - 9}) {
    write_file(tmp.path / "cut.parquet", bytes.substr(0, cut));
    const std::string e = error_of([&] { read((tmp.path / "cut.parquet").string()); });
    EXPECT_NE(e.find("cut.parquet"), std::string::npos) << e;
  }
  for (size_t at = 4; at + 16 < bytes.size(); at += 97) {
    std::string bad = bytes;
    for (size_t i = at; i < at + 16; ++i) bad[i] = static_cast<char>(bad[i] ^ 0xA5);
    write_file(tmp.path / "flip.parquet", bad);
    try {
      read((tmp.path / "flip.parquet").string());  // may still decode (e.g. flipped text bytes)
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("flip.parquet"), std::string::npos) << e.what();
    }
  }
}

#if MAGIX_HAVE_ARROW
// A parquet file of one string column `text` holding `rows` (written by Arrow's writer).
void write_parquet(const fs::path& path, const std::vector<std::string>& rows) {
  arrow::StringBuilder builder;
  for (const std::string& r : rows) ASSERT_TRUE(builder.Append(r).ok());
  std::shared_ptr<arrow::Array> array;
  ASSERT_TRUE(builder.Finish(&array).ok());
  auto table = arrow::Table::Make(arrow::schema({arrow::field("text", arrow::utf8())}), {array});
  auto out = arrow::io::FileOutputStream::Open(path.string());
  ASSERT_TRUE(out.ok());
  ASSERT_TRUE(parquet::arrow::WriteTable(*table, arrow::default_memory_pool(), *out, 1024).ok());
  ASSERT_TRUE((*out)->Close().ok());
}

TEST(DataSources, ParquetRowLargerThanARecordMayBeIsABadRecord) {
  TempDir tmp;
  write_parquet(tmp.path / "big.parquet",
                {"a", std::string(static_cast<size_t>(kMaxRecordBytes) + 1, 'y'), "c"});
  const std::string e = error_of([&] { read((tmp.path / "big.parquet").string()); });
  EXPECT_NE(e.find("big.parquet row 2: the value of 'text' is larger than 67108864 bytes"),
            std::string::npos)
      << e;
  ReadOptions o = opts();
  o.skip_bad_records = true;
  ReadStats stats;
  const auto records = read_records(tmp.path / "big.parquet", o, &stats);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].text, "c");
  EXPECT_EQ(records[1].line, 3);
  EXPECT_EQ(stats.skipped, 1);
}

TEST(DataSources, ParquetInvalidUtf8IsAnErrorNamingTheFile) {
  TempDir tmp;
  write_parquet(tmp.path / "utf8.parquet", {"ok", std::string("bad \xC3\x28 bytes")});
  const std::string e = error_of([&] { read((tmp.path / "utf8.parquet").string()); });
  EXPECT_NE(e.find("utf8.parquet: invalid data"), std::string::npos) << e;
}
#endif

// --- save_to_disk -------------------------------------------------------------------------------

TEST(DataSources, SaveToDiskDatasetDictSplits) {
  SKIP_WITHOUT_ARROW();
  const auto all = corpus();
  const auto train = read((kDir / "corpus_dict").string(), opts("text", "train"));
  ASSERT_EQ(train.size(), 32u);  // two Arrow files, in state.json's order
  for (size_t i = 0; i < 32; ++i) EXPECT_EQ(train[i].text, all[i].text);
  expect_same(read((kDir / "corpus_dict").string(), opts("text", "test")), all, 32);
  // One split's folder is a Dataset on its own.
  expect_same(read((kDir / "corpus_dict" / "test").string(), opts("text", "ignored")), all, 32);
  const std::string e =
      error_of([] { read((kDir / "corpus_dict").string(), opts("text", "validation")); });
  EXPECT_NE(e.find("no split 'validation' in this DatasetDict (splits: [train, test])"),
            std::string::npos)
      << e;
}

TEST(DataSources, BadArrowFilesAreErrors) {
  SKIP_WITHOUT_ARROW();
  TempDir tmp;
  const fs::path src = kDir / "corpus_dict" / "test";
  const std::string bytes = read_file(src / "data-00000-of-00001.arrow");
  for (size_t cut : {size_t{0}, size_t{8}, size_t{200}, bytes.size() / 2, bytes.size() - 20}) {
    fs::create_directories(tmp.path / "ds");
    fs::copy_file(src / "state.json", tmp.path / "ds" / "state.json",
                  fs::copy_options::overwrite_existing);
    write_file(tmp.path / "ds" / "data-00000-of-00001.arrow", bytes.substr(0, cut));
    const std::string e = error_of([&] { read((tmp.path / "ds").string()); });
    EXPECT_NE(e.find("data-00000-of-00001.arrow"), std::string::npos) << e;
  }
  // state.json may not name files outside its folder.
  write_file(tmp.path / "ds" / "state.json",
             R"({"_data_files": [{"filename": "../../etc/passwd"}]})");
  EXPECT_NE(error_of([&] { read((tmp.path / "ds").string()); }).find("must be a plain file"),
            std::string::npos);
}

// --- hub datasets in the local cache, folders, globs, lists ------------------------------------

TEST(DataSources, HubDatasetSplitsAndConfigs) {
  SKIP_WITHOUT_ARROW();
  ScopedEnv home("HF_HOME", (kDir / "hf_home").string());
  ScopedEnv cache("HF_HUB_CACHE", (kDir / "hf_home" / "hub").string());
  expect_same(read("magix/tiny-corpus"), corpus());  // data/train-0000{0,1}-of-00002.parquet
  const auto conv = read((kDir / "conv.jsonl").string(), opts("messages"));
  expect_same(read("magix/tiny-corpus", opts("messages", "test")), conv);
  expect_same(read("magix/tiny-configs", opts("text", "train", "en")), corpus());
  expect_same(read("magix/tiny-configs", opts("messages", "train", "chat")), conv);
  std::string e = error_of([] { read("magix/tiny-configs"); });
  EXPECT_NE(e.find("several configs [chat, en]"), std::string::npos) << e;
  e = error_of([] { read("magix/tiny-corpus", opts("text", "validation")); });
  EXPECT_NE(e.find("no split 'validation' (splits: [test, train])"), std::string::npos) << e;
  e = error_of([] { read("magix/none"); });
  EXPECT_NE(e.find("huggingface-cli download --repo-type dataset magix/none"), std::string::npos)
      << e;
  EXPECT_NE(e.find((kDir / "hf_home" / "hub" / "datasets--magix--none").string()),
            std::string::npos)
      << e;
}

TEST(DataSources, HubSnapshotSymlinkEscapeIsRefused) {
  SKIP_WITHOUT_ARROW();
  TempDir tmp;
  const fs::path repo = tmp.path / "hub" / "datasets--evil--data";
  fs::create_directories(repo / "snapshots" / "abc" / "data");
  fs::create_directories(repo / "refs");
  write_file(repo / "refs" / "main", "abc");
  fs::copy_file(kDir / "corpus.parquet", tmp.path / "outside.parquet");
  fs::create_symlink(tmp.path / "outside.parquet",
                     repo / "snapshots" / "abc" / "data" / "train-00000-of-00001.parquet");
  ScopedEnv cache("HF_HUB_CACHE", (tmp.path / "hub").string());
  const std::string e = error_of([] { read("evil/data"); });
  EXPECT_NE(e.find("symlink escape"), std::string::npos) << e;
}

TEST(DataSources, GlobsFoldersAndCommaLists) {
  SKIP_WITHOUT_ARROW();
  const fs::path data = kDir / "hf_home" / "hub" / "datasets--magix--tiny-corpus" / "snapshots" /
                        "5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ff" / "data";
  expect_same(read((data / "train-*.parquet").string()), corpus());
  expect_same(read((data / "train-00000-of-00002.parquet").string() + "," +
                   (data / "train-00001-of-00002.parquet").string()),
              corpus());
  // A folder of files without split names: every file, in name order, whatever the split.
  TempDir tmp;
  fs::copy_file(data / "train-00000-of-00002.parquet", tmp.path / "a.parquet");
  fs::copy_file(kDir / "corpus_test.jsonl", tmp.path / "b.jsonl");
  const auto got = read(tmp.path.string(), opts("text", "test"));
  ASSERT_EQ(got.size(), 24u + 16u);
  EXPECT_EQ(got[0].text, corpus()[0].text);
  EXPECT_EQ(got[24].text, corpus()[32].text);
  EXPECT_NE(error_of([&] { read((tmp.path / "*.csv").string()); }).find("no file matches"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              read((kDir / "corpus.parquet").string(), opts("text", "train", "en"));
            }).find("has no configs"),
            std::string::npos);
}

TEST(DataSources, StreamingReaderNamesRowsInMessages) {
  SKIP_WITHOUT_ARROW();
  auto reader = open_records((kDir / "corpus.parquet").string(), opts());
  Record r;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(reader->next(r));
  EXPECT_EQ(reader->where(r), (kDir / "corpus.parquet").string() + " row 20");
}

TEST(DataSources, WithoutArrowParquetIsRefusedWithHowTo) {
  if (has_arrow_support()) GTEST_SKIP() << "built with Arrow";
  const std::string e = error_of([] { read((kDir / "corpus.parquet").string()); });
  EXPECT_NE(e.find("built without Apache Arrow"), std::string::npos) << e;
  EXPECT_NE(e.find("scripts/setup.sh"), std::string::npos) << e;
}

}  // namespace
}  // namespace magix
