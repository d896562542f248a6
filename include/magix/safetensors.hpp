// safetensors files: a strict parser, a reader (whole tensors or boxes of them) and an atomic
// writer. Format: 8-byte little-endian header length N, N bytes of JSON header, then the data
// section; every tensor's data_offsets are relative to the start of the data section.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "magix/tensor.hpp"

namespace magix {

// Largest JSON header accepted (bytes).
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000ull;

struct SafetensorsEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t offset;  // from the start of the data section
  uint64_t nbytes;  // numel(shape) * dtype_size(dtype)
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;  // sorted by offset (the order of the data section)
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + header length: file offset of the data section
};

// Pure, strict parser of a file's first bytes (8-byte little-endian header length + JSON
// header); used by the reader and the fuzzer. `prefix` must hold at least the 8 + N header
// bytes (more is ignored). Throws magix::Error on anything malformed: header length over the cap
// or past the file, invalid JSON, a non-object, entries without exactly dtype/shape/
// data_offsets, unsupported dtypes, negative or overflowing shapes, offsets inconsistent with
// shape x dtype, gaps/overlaps/out-of-bounds data, duplicate names, non-string metadata.
SafetensorsHeader parse_safetensors_header(std::span<const std::byte> prefix, uint64_t file_size);

class SafetensorsReader {
 public:
  // Opens and validates the file; every error names it.
  explicit SafetensorsReader(const std::filesystem::path& path);
  ~SafetensorsReader();
  SafetensorsReader(SafetensorsReader&&) noexcept;
  SafetensorsReader& operator=(SafetensorsReader&&) noexcept;

  const std::filesystem::path& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return header_.entries; }
  const SafetensorsEntry* find(std::string_view name) const;   // null if absent
  const SafetensorsEntry& entry(std::string_view name) const;  // throws naming tensor and file
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  uint64_t data_start() const { return header_.data_start; }

  Tensor read(std::string_view name) const;      // in its stored dtype
  Tensor read_f32(std::string_view name) const;  // F32/BF16/F16 converted to F32
  // A box of the tensor: per dim [start, start + extent). Reads only the needed bytes (runs of
  // the last dims), converted to F32. For sharded loading onto a mesh.
  Tensor read_box_f32(std::string_view name, const Shape& start, const Shape& extent) const;

 private:
  struct File;
  std::filesystem::path path_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in header_.entries
  std::unique_ptr<File> file_;  // the open file (pread: safe to use from several threads)
};

struct NamedTensor {
  std::string name;
  const Tensor* tensor;
};

// Writes atomically: to a temporary name in the same folder, fsync, rename, fsync the folder.
// Tensors stored in the order given; 8-byte aligned data offsets (the header is space-padded);
// metadata as "__metadata__". Duplicate or empty names are an error.
void write_safetensors(const std::filesystem::path& path, std::span<const NamedTensor> tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace magix
