// GGUF files (llama.cpp's single-file model format): the header, the metadata, the tensor
// directory, and dequantization of the block formats to f32.
//
// A GGUF file is untrusted input like a safetensors file: every count, length, offset and type
// is checked against the file's size before anything is allocated, and every error names the
// file. Versions 2 and 3, little-endian, are read.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "magix/tensor.hpp"

namespace magix {

// The tensor data types of ggml that magix reads (the numbers are the file's).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
};

// Name as llama.cpp spells it ("Q4_K", "BF16", ...); "type N" for numbers magix does not read.
std::string ggml_type_name(uint32_t type);
// True for the types above.
bool ggml_type_supported(uint32_t type);
// Values per block and bytes per block (F32: 1 and 4; Q4_0: 32 and 18; Q6_K: 256 and 210).
int64_t ggml_block_values(GgmlType type);
int64_t ggml_block_bytes(GgmlType type);

// Dequantizes `n` values (a multiple of the type's block size) stored as `type` in `src`
// (n / block_values * block_bytes bytes) into dst, with the arithmetic of ggml's reference
// dequantizers (the gguf Python package's `quants.dequantize` gives the same bits).
void ggml_dequantize(GgmlType type, std::span<const uint8_t> src, std::span<float> dst);

// Quantizes to Q8_0 (src.size() a multiple of 32; dst 34 bytes per 32 values) as ggml's
// reference quantizer does.
void ggml_quantize_q8_0(std::span<const float> src, std::span<uint8_t> dst);

struct GgufTensorInfo {
  std::string name;
  // Dims as the file lists them: dims[0] varies fastest (for a matrix: dims = {columns, rows}).
  std::vector<int64_t> dims;
  GgmlType type;
  uint64_t offset;  // from the start of the data section
  uint64_t nbytes;
  int64_t numel() const;
  // The row-major shape (dims reversed), as HF and magix write it.
  Shape shape() const;
};

class GgufFile {
 public:
  // Opens and validates `path`: magic, version (2 or 3), metadata (values as JSON: integers,
  // floats, bools, strings; arrays of them), the tensor directory (names unique, types read by
  // magix, dims positive, offsets aligned, in bounds and not overlapping).
  explicit GgufFile(const std::filesystem::path& path);
  ~GgufFile();
  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;

  const std::filesystem::path& path() const { return path_; }
  uint32_t version() const { return version_; }
  // Keys as in the file ("general.architecture", "tokenizer.ggml.tokens", ...). The type of
  // each value as the file declares it is in metadata_types() ("u32", "f32", "string",
  // "array[string]", ...).
  const nlohmann::json& metadata() const { return metadata_; }
  const std::map<std::string, std::string>& metadata_types() const { return metadata_types_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find(std::string_view name) const;  // null if absent
  uint64_t alignment() const { return alignment_; }
  uint64_t data_start() const { return data_start_; }

  // The tensor's values dequantized to f32, in the row-major shape().
  Tensor read_f32(std::string_view name) const;
  // The stored bytes of a tensor.
  std::vector<uint8_t> read_raw(std::string_view name) const;

 private:
  struct File;
  std::filesystem::path path_;
  uint32_t version_ = 0;
  nlohmann::json metadata_;
  std::map<std::string, std::string> metadata_types_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  uint64_t alignment_ = 32;
  uint64_t data_start_ = 0;
  std::unique_ptr<File> file_;
};

// True when `path` is a regular file whose first four bytes are "GGUF".
bool is_gguf_file(const std::filesystem::path& path);

}  // namespace magix
