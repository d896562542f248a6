#include "safetensors_util.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <unordered_set>
#include <vector>

#include "magix/error.hpp"

namespace magix::io {

namespace {

// SAX pass that only checks structure: depth and duplicate keys.
class StructureChecker {
 public:
  using json = nlohmann::json;
  explicit StructureChecker(int max_depth) : max_depth_(max_depth) {}

  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(json::number_integer_t) { return true; }
  bool number_unsigned(json::number_unsigned_t) { return true; }
  bool number_float(json::number_float_t, const json::string_t&) { return true; }
  bool string(json::string_t&) { return true; }
  bool binary(json::binary_t&) { return true; }
  bool start_object(std::size_t) {
    keys_.emplace_back();
    return enter();
  }
  bool key(json::string_t& k) {
    if (!keys_.back().insert(k).second) {
      error_ = fmt::format("duplicate key \"{}\"", k.size() > 200 ? k.substr(0, 200) + "..." : k);
      return false;
    }
    return true;
  }
  bool end_object() {
    keys_.pop_back();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) { return enter(); }
  bool end_array() {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
    // Drop nlohmann's "[json.exception.parse_error.101] " prefix.
    std::string_view what = ex.what();
    if (auto p = what.find("] "); what.starts_with("[json.exception") && p != what.npos) {
      what.remove_prefix(p + 2);
    }
    error_ = std::string(what);
    return false;
  }
  const std::string& error() const { return error_; }

 private:
  bool enter() {
    if (++depth_ > max_depth_) {
      error_ = fmt::format("JSON nested deeper than {} levels", max_depth_);
      return false;
    }
    return true;
  }

  int max_depth_;
  int depth_ = 0;
  std::vector<std::unordered_set<std::string>> keys_;
  std::string error_;
};

}  // namespace

nlohmann::json parse_json_strict(std::string_view text, int max_depth) {
  // nlohmann stops at a NUL byte as if the input ended there; valid JSON never holds a raw NUL.
  if (auto nul = text.find('\0'); nul != std::string_view::npos) {
    MAGIX_FAIL("invalid JSON: NUL byte at offset {}", nul);
  }
  StructureChecker checker(max_depth);
  bool ok = nlohmann::json::sax_parse(text.begin(), text.end(), &checker,
                                      nlohmann::json::input_format_t::json, /*strict=*/true);
  if (!ok) {
    MAGIX_FAIL("invalid JSON: {}", checker.error().empty() ? "parse failed" : checker.error());
  }
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    MAGIX_FAIL("invalid JSON: {}", e.what());
  }
}

FileHandle::~FileHandle() {
  if (fd_ >= 0) ::close(fd_);
}

FileHandle& FileHandle::operator=(FileHandle&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

FileHandle open_for_reading(const std::filesystem::path& path, uint64_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  MAGIX_CHECK(fd >= 0, "cannot open {}: {}", path.string(), std::strerror(errno));
  FileHandle handle(fd);
  struct stat st;
  MAGIX_CHECK(::fstat(fd, &st) == 0, "cannot stat {}: {}", path.string(), std::strerror(errno));
  MAGIX_CHECK(S_ISREG(st.st_mode), "{} is not a regular file", path.string());
  *size = static_cast<uint64_t>(st.st_size);
  return handle;
}

void read_exact(int fd, uint64_t offset, void* dst, size_t n, const std::filesystem::path& path) {
  auto* p = static_cast<char*>(dst);
  while (n > 0) {
    ssize_t got = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    MAGIX_CHECK(got >= 0, "reading {} at byte {}: {}", path.string(), offset, std::strerror(errno));
    MAGIX_CHECK(got > 0, "{} ended early at byte {} (was it truncated while open?)", path.string(),
                offset);
    p += got;
    offset += static_cast<uint64_t>(got);
    n -= static_cast<size_t>(got);
  }
}

void write_all(int fd, const void* src, size_t n, const std::filesystem::path& path) {
  auto* p = static_cast<const char*>(src);
  while (n > 0) {
    ssize_t put = ::write(fd, p, n);
    if (put < 0 && errno == EINTR) continue;
    MAGIX_CHECK(put > 0, "writing {}: {}", path.string(),
                put < 0 ? std::strerror(errno) : "no progress");
    p += put;
    n -= static_cast<size_t>(put);
  }
}

void fsync_dir(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  MAGIX_CHECK(fd >= 0, "cannot open folder {}: {}", dir.string(), std::strerror(errno));
  FileHandle handle(fd);
  MAGIX_CHECK(::fsync(fd) == 0, "fsync of folder {}: {}", dir.string(), std::strerror(errno));
}

void write_file_atomically(
    const std::filesystem::path& path,
    const std::function<void(int fd, const std::filesystem::path& tmp)>& body) {
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  MAGIX_CHECK(path.has_filename(), "cannot write to {}: not a file name", path.string());
  std::random_device rd;
  std::filesystem::path tmp =
      dir / fmt::format(".{}.tmp.{}.{:08x}", path.filename().string(), ::getpid(), rd());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  MAGIX_CHECK(fd >= 0, "cannot create {}: {}", tmp.string(), std::strerror(errno));
  try {
    FileHandle handle(fd);
    body(fd, tmp);
    MAGIX_CHECK(::fsync(fd) == 0, "fsync of {}: {}", tmp.string(), std::strerror(errno));
    MAGIX_CHECK(::close(handle.release()) == 0, "closing {}: {}", tmp.string(),
                std::strerror(errno));
    MAGIX_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename {} to {}: {}",
                tmp.string(), path.string(), std::strerror(errno));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_dir(dir);
}

}  // namespace magix::io
