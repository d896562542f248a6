// What a data source names (a file, files, a folder, a glob, a save_to_disk folder, a hub dataset
// in the local cache) resolved to the files read in order, and the reader over them
// (docs/data.md).
#include <glob.h>

#include <algorithm>
#include <map>
#include <optional>

#include "magix/dataset.hpp"
#include "magix/error.hpp"
#include "magix/hf_files.hpp"
#include "magix/json_parse.hpp"
#include "record_readers.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;

enum class FileKind { kText, kParquet, kArrow };

struct DataFile {
  fs::path path;
  FileKind kind = FileKind::kText;
  data::TextFormat text = data::TextFormat::kJsonl;
  bool gzip = false;
};

constexpr const char* kSupported =
    ".jsonl, .json, .txt (each optionally .gz), .parquet, .arrow, a folder, a glob or a hub "
    "dataset name";

// A data file by its name's extension, or nullopt.
std::optional<DataFile> data_file_of(const fs::path& path) {
  std::string name = path.filename().string();
  DataFile f{path};
  if (name.ends_with(".gz")) {
    f.gzip = true;
    name.resize(name.size() - 3);
  }
  const std::string ext = fs::path(name).extension().string();
  if (ext == ".jsonl") return f;
  if (ext == ".json") {
    f.text = data::TextFormat::kJson;
    return f;
  }
  if (ext == ".txt") {
    f.text = data::TextFormat::kTxt;
    return f;
  }
  if (f.gzip) return std::nullopt;
  if (ext == ".parquet") {
    f.kind = FileKind::kParquet;
    return f;
  }
  if (ext == ".arrow") {
    f.kind = FileKind::kArrow;
    return f;
  }
  return std::nullopt;
}

DataFile checked_data_file(const fs::path& path) {
  std::optional<DataFile> f = data_file_of(path);
  MAGIX_CHECK(f.has_value(), "data file '{}': unsupported extension '{}' (supported: {})",
              path.string(), path.extension().string(), kSupported);
  return *f;
}

std::string read_small_file(const fs::path& path) {
  return read_text_file_bounded(path, 1 << 20, "dataset description");
}

nlohmann::json read_small_json(const fs::path& path) {
  return parse_json(read_small_file(path), path.string());
}

// A name from a metadata file or an option that must stay one plain path component.
void check_plain_name(const std::string& name, const std::string& what, const fs::path& where) {
  MAGIX_CHECK(!name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
                  name.find('\0') == std::string::npos,
              "{}: {} '{}' must be a plain file or folder name", where.string(), what, name);
}

// Data files directly in `dir`, sorted by name (hidden names skipped).
std::vector<DataFile> data_files_in(const fs::path& dir) {
  std::vector<DataFile> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.starts_with(".") || !it->is_regular_file(ec)) continue;
    if (auto f = data_file_of(it->path())) out.push_back(*f);
  }
  MAGIX_CHECK(!ec, "cannot list {}: {}", dir.string(), ec.message());
  std::sort(out.begin(), out.end(),
            [](const DataFile& a, const DataFile& b) { return a.path < b.path; });
  return out;
}

std::vector<std::string> subfolders(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with(".") && it->is_directory(ec)) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// One split of a save_to_disk Dataset: state.json lists its Arrow files in order.
std::vector<DataFile> dataset_folder_files(const fs::path& dir) {
  const fs::path state = dir / "state.json";
  std::error_code ec;
  MAGIX_CHECK(fs::is_regular_file(state, ec),
              "{}: no state.json (not a folder written by datasets' save_to_disk)", dir.string());
  const nlohmann::json j = read_small_json(state);
  MAGIX_CHECK(j.is_object() && j.contains("_data_files") && j["_data_files"].is_array() &&
                  !j["_data_files"].empty(),
              "{}: expected a non-empty \"_data_files\" list", state.string());
  std::vector<DataFile> out;
  for (const auto& entry : j["_data_files"]) {
    MAGIX_CHECK(entry.is_object() && entry.contains("filename") && entry["filename"].is_string(),
                "{}: each \"_data_files\" entry must be {{\"filename\": ...}}", state.string());
    const std::string name = entry["filename"].get<std::string>();
    check_plain_name(name, "data file", state);
    const fs::path file = dir / name;
    MAGIX_CHECK(fs::is_regular_file(file, ec), "{}: lists {}, which is missing", state.string(),
                file.string());
    out.push_back(DataFile{file, FileKind::kArrow});
  }
  return out;
}

// The split a hub-style file name belongs to: <split>-NNNNN-of-NNNNN... (any split name), or a
// name whose first word (before '-', '.' or '_') is one of datasets' split keywords.
std::optional<std::string> split_of_file(const std::string& name) {
  const size_t dash = name.find('-');
  if (dash != std::string::npos && dash > 0) {
    size_t p = dash + 1, digits = 0;
    while (p < name.size() && std::isdigit(static_cast<unsigned char>(name[p]))) ++p, ++digits;
    if (digits > 0 && name.compare(p, 4, "-of-") == 0) return name.substr(0, dash);
  }
  const size_t end = name.find_first_of("-._");
  const std::string word = name.substr(0, end);
  for (const char* k : {"train", "training", "test", "testing", "validation", "valid", "val", "dev",
                        "eval", "evaluation"}) {
    if (word == k) return word;
  }
  return std::nullopt;
}

// A folder laid out as hub datasets are: [<config>/ | data/] then <split>-*.parquet,
// <split>.jsonl, <split>/*.parquet, ...; without split names, every data file.
std::vector<DataFile> layout_files(const fs::path& root, const ReadOptions& o) {
  std::error_code ec;
  fs::path base = root;
  if (!o.config.empty()) {
    check_plain_name(o.config, "config", root);
    base = root / o.config;
    MAGIX_CHECK(fs::is_directory(base, ec), "{}: no config '{}' (folders: [{}])", root.string(),
                o.config, fmt::join(subfolders(root), ", "));
  } else if (fs::is_directory(root / "data", ec)) {
    base = root / "data";
  } else if (data_files_in(root).empty()) {
    // Only config folders: the one there is, or "default".
    const std::vector<std::string> configs = subfolders(root);
    if (configs.size() == 1) {
      base = root / configs.front();
    } else if (std::find(configs.begin(), configs.end(), "default") != configs.end()) {
      base = root / "default";
    } else {
      MAGIX_FAIL(
          "{}: no data files, and several configs [{}]: choose one (--train_data_config, "
          "--hf_data_config)",
          root.string(), fmt::join(configs, ", "));
    }
  }
  std::map<std::string, std::vector<DataFile>> splits;
  std::vector<DataFile> unsplit;
  for (const std::string& sub : subfolders(base)) {
    std::vector<DataFile> files = data_files_in(base / sub);
    if (!files.empty()) splits[sub] = std::move(files);
  }
  for (DataFile& f : data_files_in(base)) {
    if (auto s = split_of_file(f.path.filename().string())) {
      splits[*s].push_back(std::move(f));
    } else {
      unsplit.push_back(std::move(f));
    }
  }
  if (splits.empty()) {
    MAGIX_CHECK(!unsplit.empty(), "{}: no data files ({})", base.string(), kSupported);
    return unsplit;  // one split: whatever o.split says
  }
  auto it = splits.find(o.split);
  if (it == splits.end()) {
    std::vector<std::string> names;
    for (const auto& [name, _] : splits) names.push_back(name);
    MAGIX_FAIL("{}: no split '{}' (splits: [{}]); choose one with --split / --hf_data_split",
               base.string(), o.split, fmt::join(names, ", "));
  }
  for (const auto& [name, files] : splits) {
    for (size_t i = 1; i < files.size(); ++i) {
      MAGIX_CHECK(files[i].path != files[i - 1].path, "duplicate file {}", files[i].path.string());
    }
  }
  return it->second;
}

// A folder: save_to_disk DatasetDict or Dataset, else the hub layout.
std::vector<DataFile> folder_files(const fs::path& dir, const ReadOptions& o) {
  std::error_code ec;
  if (fs::is_regular_file(dir / "dataset_dict.json", ec)) {
    MAGIX_CHECK(o.config.empty(),
                "{}: a save_to_disk DatasetDict has no configs (drop the config option '{}')",
                dir.string(), o.config);
    const nlohmann::json j = read_small_json(dir / "dataset_dict.json");
    MAGIX_CHECK(j.is_object() && j.contains("splits") && j["splits"].is_array(),
                "{}: expected {{\"splits\": [...]}}", (dir / "dataset_dict.json").string());
    std::vector<std::string> names;
    for (const auto& s : j["splits"]) {
      MAGIX_CHECK(s.is_string(), "{}: split names must be strings",
                  (dir / "dataset_dict.json").string());
      names.push_back(s.get<std::string>());
    }
    MAGIX_CHECK(std::find(names.begin(), names.end(), o.split) != names.end(),
                "{}: no split '{}' in this DatasetDict (splits: [{}]); choose one with --split / "
                "--hf_data_split",
                dir.string(), o.split, fmt::join(names, ", "));
    check_plain_name(o.split, "split", dir);
    return dataset_folder_files(dir / o.split);
  }
  if (fs::is_regular_file(dir / "state.json", ec)) return dataset_folder_files(dir);
  return layout_files(dir, o);
}

bool has_glob_chars(const std::string& s) {
  return s.find_first_of("*?[") != std::string::npos;
}

std::vector<DataFile> glob_files(const std::string& pattern) {
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), GLOB_ERR, nullptr, &g);
  std::vector<std::string> paths;
  if (rc == 0) paths.assign(g.gl_pathv, g.gl_pathv + g.gl_pathc);
  globfree(&g);
  MAGIX_CHECK(rc == 0 || rc == GLOB_NOMATCH, "data source '{}': the glob failed", pattern);
  MAGIX_CHECK(!paths.empty(), "data source '{}': no file matches the pattern", pattern);
  std::vector<DataFile> out;
  std::error_code ec;
  for (const std::string& p : paths) {  // glob sorts them
    MAGIX_CHECK(fs::is_regular_file(p, ec), "data source '{}': matches {}, which is not a file",
                pattern, p);
    out.push_back(checked_data_file(p));
  }
  return out;
}

void check_no_config(const std::string& source, const ReadOptions& o) {
  MAGIX_CHECK(o.config.empty(),
              "data source '{}' has no configs: drop the config option ('{}'; configs are the "
              "subfolders of hub-style dataset folders)",
              source, o.config);
}

std::vector<DataFile> resolve_one(const std::string& source, const ReadOptions& o) {
  std::error_code ec;
  const fs::path path(source);
  if (fs::is_directory(path, ec)) return folder_files(path, o);
  if (fs::exists(path, ec) || has_glob_chars(source)) check_no_config(source, o);
  if (fs::exists(path, ec)) {
    MAGIX_CHECK(fs::is_regular_file(path, ec),
                "data file '{}' does not exist or is not a regular file", source);
    return {checked_data_file(path)};
  }
  if (has_glob_chars(source)) return glob_files(source);
  // A hub dataset name in the local cache; names with a data file extension are missing files.
  if (is_hub_repo_name(source) && !data_file_of(path)) {
    const fs::path snap = resolve_hub_snapshot(source, HubRepoType::kDataset, dataset_revision());
    std::vector<DataFile> files = folder_files(snap, o);
    for (const DataFile& f : files) checked_folder_file(snap, f.path);
    return files;
  }
  MAGIX_FAIL("data file '{}' does not exist or is not a regular file (a data source is {})", source,
             kSupported);
}

std::vector<DataFile> resolve_source(const std::string& source, const ReadOptions& o) {
  MAGIX_CHECK(!source.empty(), "no data source given ({})", kSupported);
  std::error_code ec;
  if (source.find(',') != std::string::npos && !fs::exists(source, ec)) {
    std::vector<DataFile> out;
    size_t pos = 0;
    while (pos <= source.size()) {
      size_t end = source.find(',', pos);
      if (end == std::string::npos) end = source.size();
      const std::string part = source.substr(pos, end - pos);
      MAGIX_CHECK(!part.empty(), "data source '{}': an empty name between commas", source);
      for (DataFile& f : resolve_one(part, o)) out.push_back(std::move(f));
      pos = end + 1;
    }
    return out;
  }
  return resolve_one(source, o);
}

std::unique_ptr<RecordReader> open_file(const DataFile& f, const ReadOptions& o, ReadStats* stats) {
  switch (f.kind) {
    case FileKind::kParquet:
      return data::open_parquet_records(f.path, o, stats);
    case FileKind::kArrow:
      return data::open_arrow_records(f.path, o, stats);
    case FileKind::kText:
      break;
  }
  return data::open_text_records(f.path, f.text, f.gzip, o, stats);
}

// The files of a source one after the other, each opened when the previous one ends.
class FilesReader : public RecordReader {
 public:
  FilesReader(std::vector<DataFile> files, const ReadOptions& options, ReadStats* stats)
      : files_(std::move(files)), options_(options), stats_(stats) {}
  bool next(Record& record) override {
    while (true) {
      if (!current_) {
        if (next_file_ == files_.size()) return false;
        current_ = open_file(files_[next_file_++], options_, stats_);
      }
      if (current_->next(record)) return true;
      current_.reset();
    }
  }
  std::string where(const Record& record) const override {
    return current_ ? current_->where(record) : std::string("(end of data)");
  }

 private:
  std::vector<DataFile> files_;
  ReadOptions options_;
  ReadStats* stats_;
  size_t next_file_ = 0;
  std::unique_ptr<RecordReader> current_;
};

}  // namespace

std::unique_ptr<RecordReader> open_records(const fs::path& source, const ReadOptions& options,
                                           ReadStats* stats) {
  return std::make_unique<FilesReader>(resolve_source(source.string(), options), options, stats);
}

std::vector<Record> read_records(const fs::path& path, const ReadOptions& options,
                                 ReadStats* stats) {
  std::unique_ptr<RecordReader> reader = open_records(path, options, stats);
  std::vector<Record> records;
  Record record;
  while (reader->next(record)) records.push_back(std::move(record));
  return records;
}

std::vector<std::string> read_prompts(const fs::path& path, const std::string& data_field,
                                      bool skip_bad_records, ReadStats* stats) {
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
