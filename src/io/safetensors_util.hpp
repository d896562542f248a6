// Internal helpers of src/io: strict JSON parsing and POSIX file I/O with checked errors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace magix::io {

// Parses `text` as one JSON value. Rejects what nlohmann accepts silently: duplicate keys in any
// object (nlohmann keeps the last) and nesting deeper than `max_depth` (checked before the DOM
// is built, so deep input cannot exhaust the stack) and raw NUL bytes. Throws magix::Error (message
// without a file name: callers add it).
nlohmann::json parse_json_strict(std::string_view text, int max_depth);

// A read-only file descriptor that closes itself.
class FileHandle {
 public:
  FileHandle() = default;
  explicit FileHandle(int fd) : fd_(fd) {}
  ~FileHandle();
  FileHandle(FileHandle&& other) noexcept : fd_(other.release()) {}
  FileHandle& operator=(FileHandle&& other) noexcept;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// Opens a regular file for reading; throws naming the file.
FileHandle open_for_reading(const std::filesystem::path& path, uint64_t* size);

// Reads exactly n bytes at `offset` (pread; safe from several threads). Throws naming the file
// on an I/O error or a file that ends early.
void read_exact(int fd, uint64_t offset, void* dst, size_t n, const std::filesystem::path& path);

// Writes all n bytes; throws naming the file (e.g. on a full disk).
void write_all(int fd, const void* src, size_t n, const std::filesystem::path& path);

// Writes `path` atomically: `body` writes the contents to a new temporary file in the same
// folder, which is then fsynced and renamed over `path`, and the folder is fsynced. On any
// error the temporary file is removed and `path` is left as it was.
void write_file_atomically(
    const std::filesystem::path& path,
    const std::function<void(int fd, const std::filesystem::path& tmp)>& body);

// fsync a folder so that a rename or unlink inside it is durable.
void fsync_dir(const std::filesystem::path& dir);

}  // namespace magix::io
