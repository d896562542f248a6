// HF model folders: the local hub cache, sharded safetensors weights, and writing them back.
#include "magix/hf_files.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <system_error>

#include "magix/error.hpp"
#include "magix/gguf_model.hpp"
#include "magix/json_parse.hpp"
#include "safetensors_util.hpp"

namespace magix {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// Where huggingface_hub keeps models: HF_HUB_CACHE, else HF_HOME/hub, HF_HOME defaulting to
// $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface.
fs::path hub_cache_dir() {
  if (auto c = env_or_empty("HF_HUB_CACHE"); !c.empty()) return c;
  fs::path home;
  if (auto h = env_or_empty("HF_HOME"); !h.empty()) {
    home = h;
  } else if (auto x = env_or_empty("XDG_CACHE_HOME"); !x.empty()) {
    home = fs::path(x) / "huggingface";
  } else {
    auto user_home = env_or_empty("HOME");
    MAGIX_CHECK(!user_home.empty(),
                "cannot locate the HF cache: HF_HUB_CACHE, HF_HOME and HOME "
                "are all unset");
    home = fs::path(user_home) / ".cache" / "huggingface";
  }
  return home / "hub";
}

// "ORG/NAME" or "NAME" made of letters, digits, '-', '_', '.', without ".." or leading '.'.
bool is_hub_name(const std::string& s) {
  if (s.empty() || s.size() > 256 || s.find("..") != std::string::npos) return false;
  int slashes = 0;
  for (char c : s) {
    if (c == '/') {
      ++slashes;
    } else if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      return false;
    }
  }
  return slashes <= 1 && s.front() != '/' && s.back() != '/' && s.front() != '.';
}

// A hub cache's refs (a 40-character commit) and a shard index (some KB; ~100 KB for the
// largest models) are small: a file far larger is not one of them.
std::string read_small_text(const fs::path& p) {
  constexpr int64_t kMaxBytes = 16 << 20;
  return read_text_file_bounded(p, kMaxBytes, "hub file");
}

std::string trim(std::string s) {
  auto ws = [](unsigned char c) { return std::isspace(c); };
  s.erase(s.begin(), std::find_if_not(s.begin(), s.end(), ws));
  s.erase(std::find_if_not(s.rbegin(), s.rend(), ws).base(), s.end());
  return s;
}

// True if `inner` (canonical) is `outer` (canonical) or lies below it.
bool is_within(const fs::path& inner, const fs::path& outer) {
  auto [o, i] = std::mismatch(outer.begin(), outer.end(), inner.begin(), inner.end());
  return o == outer.end();
}

// Where the files of the model folder `canon_dir` (canonical) may resolve to. A snapshot of the
// HF hub cache, models--ORG--NAME/snapshots/<rev>/, holds relative symlinks into the
// repository's blobs/ folder (huggingface_hub's layout): for it, the repository folder; for any
// other folder, the folder itself.
fs::path containment_root(const fs::path& canon_dir) {
  const fs::path snapshots = canon_dir.parent_path();
  const fs::path repo = snapshots.parent_path();
  const std::string repo_name = repo.filename().string();
  if (snapshots.filename() == "snapshots" &&
      (repo_name.starts_with("models--") || repo_name.starts_with("datasets--"))) {
    return repo;
  }
  return canon_dir;
}

// A shard path from the index, checked to stay inside `dir` (canonical) and to resolve inside
// `root` (containment_root(dir)).
fs::path checked_shard_path(const fs::path& dir, const fs::path& root, const std::string& file,
                            const fs::path& index) {
  MAGIX_CHECK(!file.empty(), "{}: a weight_map entry names an empty file", index.string());
  fs::path rel(file);
  MAGIX_CHECK(!rel.is_absolute() && !rel.has_root_path(),
              "{}: shard path '{}' is absolute; shard paths must be inside the model folder",
              index.string(), file);
  for (const auto& part : rel) {
    MAGIX_CHECK(part != "..",
                "{}: shard path '{}' contains '..'; shard paths must stay inside "
                "the model folder",
                index.string(), file);
  }
  fs::path full = dir / rel;
  std::error_code ec;
  MAGIX_CHECK(fs::exists(full, ec), "{}: shard file '{}' listed in the index is missing ({})",
              index.string(), file, full.string());
  fs::path canon = fs::canonical(full, ec);
  MAGIX_CHECK(!ec, "{}: cannot resolve shard '{}': {}", index.string(), file, ec.message());
  MAGIX_CHECK(is_within(canon, root), "{}: shard '{}' resolves to {}, outside {} (symlink escape)",
              index.string(), file, canon.string(),
              root == dir ? std::string("the model folder")
                          : fmt::format("the hub cache repository {}", root.string()));
  return full;
}

// Removes weight files that a previous write of another layout may have left in `dir`.
void remove_stale_weights(const fs::path& dir) {
  std::error_code ec;
  fs::remove(dir / kIndexFile, ec);
  MAGIX_CHECK(!ec, "cannot remove {}: {}", (dir / kIndexFile).string(), ec.message());
  fs::remove(dir / kSingleFile, ec);
  MAGIX_CHECK(!ec, "cannot remove {}: {}", (dir / kSingleFile).string(), ec.message());
  for (const auto& de : fs::directory_iterator(dir)) {
    std::string n = de.path().filename().string();
    // model-DDDDD-of-DDDDD.safetensors
    bool shard = n.size() == 32 && n.starts_with("model-") && n.substr(11, 4) == "-of-" &&
                 n.ends_with(".safetensors") &&
                 std::all_of(n.begin() + 6, n.begin() + 11, ::isdigit) &&
                 std::all_of(n.begin() + 15, n.begin() + 20, ::isdigit);
    if (shard && de.is_regular_file()) {
      fs::remove(de.path(), ec);
      MAGIX_CHECK(!ec, "cannot remove {}: {}", de.path().string(), ec.message());
    }
  }
  io::fsync_dir(dir);
}

std::string g_hub_revision;  // set_hub_revision; empty: refs/main or the only snapshot

// A revision as huggingface_hub names them: a branch or tag ("main", "v1.0", "refs/pr/1") or a
// commit hash; path-like tricks refused.
bool is_valid_revision(const std::string& rev) {
  if (rev.empty() || rev.size() > 256 || rev.front() == '/' || rev.back() == '/') return false;
  if (rev.find("..") != std::string::npos || rev.find("//") != std::string::npos) return false;
  return std::all_of(rev.begin(), rev.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '/';
  });
}

// The names under `dir` (files and folders, recursively for refs/pr/N), sorted, for messages.
std::vector<std::string> listing(const fs::path& dir, bool files) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (files ? it->is_regular_file() : (it.depth() == 0 && it->is_directory())) {
      out.push_back(fs::relative(it->path(), dir, ec).generic_string());
    }
    if (out.size() >= 32) break;
  }
  std::sort(out.begin(), out.end());
  return out;
}

// What kind of hub repository a name is looked up as: its cache folder prefix and the words of
// messages.
struct HubKind {
  const char* word;         // "model" / "dataset"
  const char* prefix;       // "models--" / "datasets--"
  const char* cli_options;  // extra `huggingface-cli download` options
};
HubKind hub_kind(HubRepoType type) {
  if (type == HubRepoType::kDataset) return {"dataset", "datasets--", "--repo-type dataset "};
  return {"model", "models--", ""};
}

// The snapshot of `revision` in the cache repository `repo`: refs/<revision> when it is a
// branch or tag, else snapshots/<revision> when it is a commit hash that was downloaded.
fs::path revision_snapshot(const std::string& name, const fs::path& repo,
                           const std::string& revision, const HubKind& kind) {
  MAGIX_CHECK(is_valid_revision(revision), "--revision '{}' is not a valid revision", revision);
  std::error_code ec;
  const fs::path snapshots = repo / "snapshots";
  std::string commit = revision;
  if (fs::path ref = repo / "refs" / revision; fs::is_regular_file(ref, ec)) {
    commit = trim(read_small_text(ref));
    MAGIX_CHECK(is_valid_revision(commit) && commit.find('/') == std::string::npos,
                "{}: invalid revision '{}'", ref.string(), commit);
  }
  const fs::path snap = snapshots / commit;
  MAGIX_CHECK(commit.find('/') == std::string::npos && fs::is_directory(snap, ec),
              "{} '{}': revision '{}' is not in the local HF cache ({} has refs [{}] and "
              "snapshots [{}]). magix never downloads: fetch it first, e.g. `huggingface-cli "
              "download {}{} --revision {}`",
              kind.word, name, revision, repo.string(),
              fmt::join(listing(repo / "refs", true), ", "),
              fmt::join(listing(snapshots, false), ", "), kind.cli_options, name, revision);
  return snap;
}

std::string g_dataset_revision;  // set_dataset_revision

}  // namespace

void set_hub_revision(std::string revision) {
  MAGIX_CHECK(revision.empty() || is_valid_revision(revision),
              "--revision '{}' is not a valid revision (a branch, a tag or a commit hash)",
              revision);
  g_hub_revision = std::move(revision);
}

const std::string& hub_revision() {
  return g_hub_revision;
}

void set_dataset_revision(std::string revision) {
  MAGIX_CHECK(revision.empty() || is_valid_revision(revision),
              "--dataset_revision '{}' is not a valid revision (a branch, a tag or a commit hash)",
              revision);
  g_dataset_revision = std::move(revision);
}

const std::string& dataset_revision() {
  return g_dataset_revision;
}

bool is_hub_repo_name(const std::string& s) {
  return is_hub_name(s);
}

fs::path hub_repo_folder(const std::string& name, HubRepoType type) {
  std::string folder = hub_kind(type).prefix + name;
  if (auto p = folder.find('/'); p != std::string::npos) folder.replace(p, 1, "--");
  return hub_cache_dir() / folder;
}

fs::path resolve_hub_snapshot(const std::string& name, HubRepoType type,
                              const std::string& revision) {
  const HubKind kind = hub_kind(type);
  MAGIX_CHECK(is_hub_name(name), "{} '{}' is not a hub name of the form ORG/NAME", kind.word, name);
  std::error_code ec;
  const fs::path repo = hub_repo_folder(name, type);
  MAGIX_CHECK(fs::is_directory(repo, ec),
              "{} '{}' not found: no folder of that name, and "
              "not in the local HF cache (looked for {}; set HF_HOME or HF_HUB_CACHE to point "
              "elsewhere). magix never downloads: fetch it first, e.g. `huggingface-cli download "
              "{}{}`{}",
              kind.word, name, repo.string(), kind.cli_options, name,
              type == HubRepoType::kDataset
                  ? fmt::format(" or `datasets.load_dataset(\"{}\")` in Python", name)
                  : std::string());
  fs::path snapshots = repo / "snapshots";
  if (!revision.empty()) return revision_snapshot(name, repo, revision, kind);
  fs::path ref = repo / "refs" / "main";
  if (fs::is_regular_file(ref, ec)) {
    std::string rev = trim(read_small_text(ref));
    MAGIX_CHECK(!rev.empty() && rev.find('/') == std::string::npos && rev != "." && rev != "..",
                "{}: invalid revision '{}'", ref.string(), rev);
    fs::path snap = snapshots / rev;
    MAGIX_CHECK(fs::is_directory(snap, ec),
                "{} '{}': {} names revision {} but {} does not "
                "exist (incomplete download?)",
                kind.word, name, ref.string(), rev, snap.string());
    return snap;
  }
  std::vector<std::string> revs;
  if (fs::is_directory(snapshots, ec)) {
    for (const auto& de : fs::directory_iterator(snapshots)) {
      if (de.is_directory()) revs.push_back(de.path().filename().string());
    }
  }
  std::sort(revs.begin(), revs.end());
  MAGIX_CHECK(!revs.empty(), "{} '{}': no snapshot in {} (incomplete download?)", kind.word, name,
              snapshots.string());
  MAGIX_CHECK(revs.size() == 1,
              "{} '{}': {} has no refs/main and several snapshots ({}); "
              "pass the folder of the one you want",
              kind.word, name, repo.string(), fmt::join(revs, ", "));
  return snapshots / revs.front();
}

fs::path checked_folder_file(const fs::path& dir, const fs::path& file) {
  std::error_code ec;
  const fs::path canon_dir = fs::canonical(dir, ec);
  MAGIX_CHECK(!ec, "cannot resolve {}: {}", dir.string(), ec.message());
  const fs::path root = containment_root(canon_dir);
  const fs::path canon = fs::canonical(file, ec);
  MAGIX_CHECK(!ec, "cannot resolve {}: {}", file.string(), ec.message());
  MAGIX_CHECK(is_within(canon, root), "{} resolves to {}, outside {} (symlink escape)",
              file.string(), canon.string(),
              root == canon_dir ? fmt::format("the folder {}", dir.string())
                                : fmt::format("the hub cache repository {}", root.string()));
  return file;
}

// A folder without config.json holding exactly one .gguf file stands for that file.
static fs::path gguf_folder_or(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir / "config.json", ec)) return dir;
  std::vector<fs::path> ggufs;
  for (const auto& de : fs::directory_iterator(dir, ec)) {
    if (de.path().extension() == ".gguf" && is_gguf_file(de.path())) ggufs.push_back(de.path());
  }
  if (ggufs.empty()) return dir;
  std::sort(ggufs.begin(), ggufs.end());
  if (ggufs.size() > 1) {
    std::vector<std::string> names;
    for (const auto& g : ggufs) names.push_back(g.filename().string());
    MAGIX_FAIL(
        "{} has no config.json and {} GGUF files ({}): pass the one to load as the model "
        "path",
        dir.string(), ggufs.size(), fmt::join(names, ", "));
  }
  return gguf_model_folder(ggufs[0]);
}

static fs::path resolve_model_path(const std::string& name_or_path);

fs::path resolve_model_dir(const std::string& name_or_path) {
  if (is_gguf_file(name_or_path)) return gguf_model_folder(name_or_path);
  return gguf_folder_or(resolve_model_path(name_or_path));
}

// A model folder: an existing folder, or a hub name's snapshot in the local cache.
static fs::path resolve_model_path(const std::string& name_or_path) {
  std::error_code ec;
  fs::path as_path(name_or_path);
  if (fs::exists(as_path, ec)) {
    MAGIX_CHECK(fs::is_directory(as_path, ec),
                "{} is not a folder (a model is a folder with "
                "config.json and safetensors weights, or a .gguf file)",
                name_or_path);
    return as_path;
  }
  MAGIX_CHECK(is_hub_name(name_or_path),
              "model '{}' not found: no such folder, and it is not a "
              "hub name of the form ORG/NAME",
              name_or_path);
  return resolve_hub_snapshot(name_or_path, HubRepoType::kModel, g_hub_revision);
}

HfWeights::HfWeights(const fs::path& model_dir) : dir_(model_dir) {
  std::error_code ec;
  MAGIX_CHECK(fs::is_directory(dir_, ec), "model folder {} does not exist or is not a folder",
              dir_.string());
  if (fs::path src = gguf_source_of(dir_); !src.empty()) {
    gguf_ = std::make_shared<const GgufWeights>(src);
    return;
  }
  fs::path single = dir_ / kSingleFile;
  fs::path index = dir_ / kIndexFile;
  if (fs::exists(single, ec)) {  // transformers prefers the single file too
    shards_.emplace_back(single);
    for (const auto& e : shards_.back().entries()) shard_of_.emplace(e.name, 0);
    return;
  }
  if (!fs::exists(index, ec)) {
    bool has_bin = fs::exists(dir_ / "pytorch_model.bin", ec) ||
                   fs::exists(dir_ / "pytorch_model.bin.index.json", ec);
    MAGIX_FAIL("{}: no {} or {}{}", dir_.string(), kSingleFile, kIndexFile,
               has_bin ? " (pytorch_model.bin is not supported: convert it to safetensors)" : "");
  }
  nlohmann::json j;
  try {
    j = io::parse_json_strict(read_small_text(index), 64);
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", index.string(), e.what()), e.where());
  }
  MAGIX_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
              "{}: expected an object with a \"weight_map\" object", index.string());
  fs::path canon_dir = fs::canonical(dir_, ec);
  MAGIX_CHECK(!ec, "cannot resolve {}: {}", dir_.string(), ec.message());
  const fs::path root = containment_root(canon_dir);
  std::map<std::string, size_t> shard_index;  // file name as written in the index -> shards_
  for (const auto& [name, file] : j["weight_map"].items()) {
    MAGIX_CHECK(file.is_string(), "{}: weight_map[\"{}\"] must be a file name string",
                index.string(), name);
    const auto& f = file.get_ref<const std::string&>();
    auto it = shard_index.find(f);
    if (it == shard_index.end()) {
      shards_.emplace_back(checked_shard_path(canon_dir, root, f, index));
      it = shard_index.emplace(f, shards_.size() - 1).first;
    }
    MAGIX_CHECK(shards_[it->second].find(name) != nullptr,
                "{}: tensor '{}' is listed in shard '{}', which does not contain it",
                index.string(), name, f);
    shard_of_.emplace(name, it->second);
  }
}

HfWeights::~HfWeights() = default;
HfWeights::HfWeights(HfWeights&&) noexcept = default;
HfWeights& HfWeights::operator=(HfWeights&&) noexcept = default;

std::vector<std::string> HfWeights::names() const {
  if (gguf_) return gguf_->names();
  std::vector<std::string> out;
  out.reserve(shard_of_.size());
  for (const auto& [name, _] : shard_of_) out.push_back(name);
  return out;
}

bool HfWeights::contains(std::string_view name) const {
  if (gguf_) return gguf_->contains(name);
  return shard_of_.count(name) > 0;
}

const SafetensorsReader& HfWeights::reader_of(std::string_view name) const {
  auto it = shard_of_.find(name);
  MAGIX_CHECK(it != shard_of_.end(), "model folder {} has no tensor named '{}'", dir_.string(),
              name);
  return shards_[it->second];
}

const SafetensorsEntry& HfWeights::entry(std::string_view name) const {
  if (gguf_) return gguf_->entry(name);
  return reader_of(name).entry(name);
}
std::filesystem::path HfWeights::file_of(std::string_view name) const {
  if (gguf_) return gguf_->path();
  return reader_of(name).path();
}
Tensor HfWeights::read(std::string_view name) const {
  if (gguf_) return gguf_->read_f32(name);
  return reader_of(name).read(name);
}
Tensor HfWeights::read_f32(std::string_view name) const {
  if (gguf_) return gguf_->read_f32(name);
  return reader_of(name).read_f32(name);
}
Tensor HfWeights::read_box_f32(std::string_view name, const Shape& start,
                               const Shape& extent) const {
  if (gguf_) return gguf_->read_box_f32(name, start, extent);
  return reader_of(name).read_box_f32(name, start, extent);
}

void write_hf_weights(const fs::path& dir, std::span<const NamedTensor> tensors, DType dtype,
                      uint64_t max_shard_bytes) {
  MAGIX_CHECK(dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16,
              "HF weights are written as F32, BF16 or F16, not {}", dtype_name(dtype));
  MAGIX_CHECK(max_shard_bytes > 0, "max_shard_bytes must be positive");
  std::set<std::string_view> seen;
  // Greedy sharding as transformers does: a new shard when the next tensor would overflow.
  std::vector<std::vector<size_t>> shards(1);
  uint64_t shard_bytes = 0, total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const NamedTensor& nt = tensors[i];
    MAGIX_CHECK(seen.insert(nt.name).second, "{}: tensor '{}' is given twice", dir.string(),
                nt.name);
    MAGIX_CHECK(nt.tensor != nullptr && nt.tensor->defined(), "{}: tensor '{}' has no data",
                dir.string(), nt.name);
    DType from = nt.tensor->dtype();
    MAGIX_CHECK(from == DType::kF32 || from == DType::kBF16 || from == DType::kF16,
                "{}: tensor '{}' is {}; HF weights must be float tensors", dir.string(), nt.name,
                dtype_name(from));
    uint64_t b = static_cast<uint64_t>(nt.tensor->numel()) * dtype_size(dtype);
    if (!shards.back().empty() && shard_bytes + b > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(i);
    shard_bytes += b;
    total += b;
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  MAGIX_CHECK(!ec, "cannot create folder {}: {}", dir.string(), ec.message());
  remove_stale_weights(dir);

  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  nlohmann::json weight_map = nlohmann::json::object();
  const size_t n = shards.size();
  for (size_t s = 0; s < n; ++s) {
    std::string file = n == 1 ? std::string(kSingleFile)
                              : fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, n);
    std::vector<Tensor> converted;  // only this shard's tensors are converted at a time
    std::vector<NamedTensor> named;
    converted.reserve(shards[s].size());
    for (size_t i : shards[s]) {
      const NamedTensor& nt = tensors[i];
      const Tensor* t = nt.tensor;
      if (t->dtype() != dtype) {
        converted.push_back(t->to(dtype));
        t = &converted.back();
      }
      named.push_back({nt.name, t});
      weight_map[nt.name] = file;
    }
    write_safetensors(dir / file, named, metadata);
  }
  if (n == 1) return;
  nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::string text = index.dump(2) + "\n";
  io::write_file_atomically(dir / kIndexFile, [&](int fd, const fs::path& tmp) {
    io::write_all(fd, text.data(), text.size(), tmp);
  });
}

}  // namespace magix
