// GGUF reader: header, metadata and tensor directory, checked before anything is allocated.
#include "magix/gguf.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "magix/error.hpp"
#include "safetensors_util.hpp"

namespace magix {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Bounds for untrusted files (llama.cpp's own files are far below each).
constexpr uint64_t kMaxTensors = 1u << 20;
constexpr uint64_t kMaxKeys = 1u << 20;
constexpr uint64_t kMaxString = 64ull << 20;         // one string (chat templates are KBs)
constexpr uint64_t kMaxNameLength = 1024;            // keys and tensor names
constexpr uint64_t kMaxMetadataValues = 16ull << 20;  // all array elements together
constexpr int kMaxArrayDepth = 2;
constexpr uint32_t kMaxDims = 4;

enum ValueType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

const char* value_type_name(uint32_t t) {
  switch (t) {
    case kU8: return "u8";
    case kI8: return "i8";
    case kU16: return "u16";
    case kI16: return "i16";
    case kU32: return "u32";
    case kI32: return "i32";
    case kF32: return "f32";
    case kBool: return "bool";
    case kString: return "string";
    case kArray: return "array";
    case kU64: return "u64";
    case kI64: return "i64";
    case kF64: return "f64";
    default: return nullptr;
  }
}

// Sequential reads through a buffer, never past the end of the file.
class Cursor {
 public:
  Cursor(int fd, uint64_t size, const fs::path& path) : fd_(fd), size_(size), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  void read(void* dst, uint64_t n, const char* what) {
    MAGIX_CHECK(n <= remaining(), "{}: GGUF file ends inside {} (offset {}, {} bytes needed, {} left)",
                path_.string(), what, pos_, n, remaining());
    auto* out = static_cast<uint8_t*>(dst);
    while (n > 0) {
      if (buf_pos_ == buf_.size()) refill();
      const uint64_t take = std::min<uint64_t>(n, buf_.size() - buf_pos_);
      std::memcpy(out, buf_.data() + buf_pos_, take);
      buf_pos_ += take;
      pos_ += take;
      out += take;
      n -= take;
    }
  }
  template <typename T>
  T get(const char* what) {
    T v;
    read(&v, sizeof v, what);
    return v;
  }
  std::string string(uint64_t max_len, const char* what) {
    const uint64_t len = get<uint64_t>(what);
    MAGIX_CHECK(len <= max_len && len <= remaining(),
                "{}: GGUF {} at offset {} has length {} (limit {}, {} bytes left in the file)",
                path_.string(), what, pos_ - 8, len, max_len, remaining());
    std::string s(len, '\0');
    read(s.data(), len, what);
    return s;
  }

 private:
  void refill() {
    const uint64_t n = std::min<uint64_t>(1u << 20, size_ - pos_);
    buf_.resize(n);
    io::read_exact(fd_, pos_, buf_.data(), n, path_);
    buf_pos_ = 0;
  }
  int fd_;
  uint64_t size_;
  const fs::path& path_;
  uint64_t pos_ = 0;
  std::vector<uint8_t> buf_;
  size_t buf_pos_ = 0;
};

// The smallest encoding of one element of this type: bounds array counts by the bytes left.
uint64_t min_value_bytes(uint32_t t) {
  switch (t) {
    case kU8: case kI8: case kBool: return 1;
    case kU16: case kI16: return 2;
    case kU32: case kI32: case kF32: return 4;
    case kString: case kU64: case kI64: case kF64: return 8;
    case kArray: return 12;
    default: return 1;
  }
}

struct MetadataReader {
  Cursor& c;
  const fs::path& path;
  uint64_t values = 0;

  json value(uint32_t type, const std::string& key, int depth, std::string* type_name) {
    switch (type) {
      case kU8: return c.get<uint8_t>("a u8 value");
      case kI8: return c.get<int8_t>("an i8 value");
      case kU16: return c.get<uint16_t>("a u16 value");
      case kI16: return c.get<int16_t>("an i16 value");
      case kU32: return c.get<uint32_t>("a u32 value");
      case kI32: return c.get<int32_t>("an i32 value");
      case kF32: return static_cast<double>(c.get<float>("an f32 value"));
      case kU64: return c.get<uint64_t>("a u64 value");
      case kI64: return c.get<int64_t>("an i64 value");
      case kF64: return c.get<double>("an f64 value");
      case kBool: {
        const uint8_t b = c.get<uint8_t>("a bool value");
        MAGIX_CHECK(b <= 1, "{}: GGUF key '{}' has a bool byte {} (0 or 1 expected)", path.string(),
                    key, b);
        return b == 1;
      }
      case kString: return c.string(kMaxString, "string value");
      case kArray: {
        MAGIX_CHECK(depth < kMaxArrayDepth, "{}: GGUF key '{}' nests arrays deeper than {}",
                    path.string(), key, kMaxArrayDepth);
        const uint32_t elem = c.get<uint32_t>("an array's element type");
        const char* elem_name = value_type_name(elem);
        MAGIX_CHECK(elem_name != nullptr, "{}: GGUF key '{}' is an array of unknown type {}",
                    path.string(), key, elem);
        const uint64_t n = c.get<uint64_t>("an array's length");
        MAGIX_CHECK(n <= c.remaining() / min_value_bytes(elem) && values + n <= kMaxMetadataValues,
                    "{}: GGUF key '{}' claims {} array elements ({} bytes left in the file; at "
                    "most {} values in all)",
                    path.string(), key, n, c.remaining(), kMaxMetadataValues);
        values += n;
        std::string inner;
        json arr = json::array();
        arr.get_ref<json::array_t&>().reserve(n);
        for (uint64_t i = 0; i < n; ++i) arr.push_back(value(elem, key, depth + 1, &inner));
        if (type_name) *type_name = std::string("array[") + (inner.empty() ? elem_name : inner) + "]";
        return arr;
      }
      default:
        MAGIX_FAIL("{}: GGUF key '{}' has unknown value type {}", path.string(), key, type);
    }
  }
};

}  // namespace

std::string ggml_type_name(uint32_t type) {
  switch (type) {
    case 0: return "F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 6: return "Q5_0";
    case 7: return "Q5_1";
    case 8: return "Q8_0";
    case 9: return "Q8_1";
    case 10: return "Q2_K";
    case 11: return "Q3_K";
    case 12: return "Q4_K";
    case 13: return "Q5_K";
    case 14: return "Q6_K";
    case 15: return "Q8_K";
    case 16: return "IQ2_XXS";
    case 17: return "IQ2_XS";
    case 18: return "IQ3_XXS";
    case 19: return "IQ1_S";
    case 20: return "IQ4_NL";
    case 21: return "IQ3_S";
    case 22: return "IQ2_S";
    case 23: return "IQ4_XS";
    case 24: return "I8";
    case 25: return "I16";
    case 26: return "I32";
    case 27: return "I64";
    case 28: return "F64";
    case 29: return "IQ1_M";
    case 30: return "BF16";
    case 34: return "TQ1_0";
    case 35: return "TQ2_0";
    case 39: return "MXFP4";
    default: return "type " + std::to_string(type);
  }
}

bool ggml_type_supported(uint32_t type) {
  switch (type) {
    case 0: case 1: case 2: case 3: case 6: case 7: case 8:
    case 10: case 11: case 12: case 13: case 14: case 30:
      return true;
    default:
      return false;
  }
}

int64_t ggml_block_values(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: case GgmlType::kF16: case GgmlType::kBF16: return 1;
    case GgmlType::kQ4_0: case GgmlType::kQ4_1: case GgmlType::kQ5_0: case GgmlType::kQ5_1:
    case GgmlType::kQ8_0: return 32;
    case GgmlType::kQ2_K: case GgmlType::kQ3_K: case GgmlType::kQ4_K: case GgmlType::kQ5_K:
    case GgmlType::kQ6_K: return 256;
  }
  MAGIX_FAIL("ggml type {} has no block size in magix", static_cast<uint32_t>(type));
}

int64_t ggml_block_bytes(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return 4;
    case GgmlType::kF16: case GgmlType::kBF16: return 2;
    case GgmlType::kQ4_0: return 2 + 16;
    case GgmlType::kQ4_1: return 2 + 2 + 16;
    case GgmlType::kQ5_0: return 2 + 4 + 16;
    case GgmlType::kQ5_1: return 2 + 2 + 4 + 16;
    case GgmlType::kQ8_0: return 2 + 32;
    case GgmlType::kQ2_K: return 2 + 2 + 16 + 64;
    case GgmlType::kQ3_K: return 2 + 64 + 32 + 12;
    case GgmlType::kQ4_K: return 2 + 2 + 128 + 12;
    case GgmlType::kQ5_K: return 2 + 2 + 128 + 32 + 12;
    case GgmlType::kQ6_K: return 2 + 128 + 64 + 16;
  }
  MAGIX_FAIL("ggml type {} has no block size in magix", static_cast<uint32_t>(type));
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

Shape GgufTensorInfo::shape() const {
  Shape s(dims.rbegin(), dims.rend());
  return s;
}

struct GgufFile::File {
  io::FileHandle fd;
  uint64_t size = 0;
};

GgufFile::GgufFile(const fs::path& path) : path_(path), file_(std::make_unique<File>()) {
  const std::string p = path.string();
  file_->fd = io::open_for_reading(path, &file_->size);
  Cursor c(file_->fd.get(), file_->size, path_);
  char magic[4];
  c.read(magic, 4, "the magic");
  MAGIX_CHECK(std::memcmp(magic, "GGUF", 4) == 0, "{}: not a GGUF file (the first bytes are not "
              "'GGUF')", p);
  version_ = c.get<uint32_t>("the version");
  if (version_ != 2 && version_ != 3) {
    uint32_t swapped = __builtin_bswap32(version_);
    MAGIX_CHECK(!(swapped == 2 || swapped == 3),
                "{}: a big-endian GGUF file (version {}); magix reads little-endian GGUF only", p,
                swapped);
    MAGIX_FAIL("{}: GGUF version {} is not supported (magix reads versions 2 and 3; version 1 "
               "files predate August 2023: convert them again with llama.cpp)", p, version_);
  }
  const uint64_t n_tensors = c.get<uint64_t>("the tensor count");
  const uint64_t n_keys = c.get<uint64_t>("the metadata key count");
  MAGIX_CHECK(n_tensors <= kMaxTensors && n_tensors <= c.remaining() / 24,
              "{}: GGUF header claims {} tensors (at most {}, and the file is {} bytes)", p,
              n_tensors, kMaxTensors, file_->size);
  MAGIX_CHECK(n_keys <= kMaxKeys && n_keys <= c.remaining() / 12,
              "{}: GGUF header claims {} metadata keys (at most {}, and the file is {} bytes)", p,
              n_keys, kMaxKeys, file_->size);

  MetadataReader mr{c, path_};
  metadata_ = json::object();
  for (uint64_t i = 0; i < n_keys; ++i) {
    std::string key = c.string(kMaxNameLength, "metadata key");
    MAGIX_CHECK(!key.empty(), "{}: GGUF metadata key {} is empty", p, i);
    MAGIX_CHECK(!metadata_.contains(key), "{}: GGUF metadata key '{}' appears twice", p, key);
    const uint32_t type = c.get<uint32_t>("a metadata value type");
    const char* tname = value_type_name(type);
    MAGIX_CHECK(tname != nullptr, "{}: GGUF key '{}' has unknown value type {}", p, key, type);
    std::string full_type = tname;
    metadata_[key] = mr.value(type, key, 0, &full_type);
    metadata_types_[key] = full_type;
  }

  if (auto it = metadata_.find("general.alignment"); it != metadata_.end()) {
    MAGIX_CHECK(metadata_types_["general.alignment"] == "u32",
                "{}: general.alignment must be a u32 (it is {})", p,
                metadata_types_["general.alignment"]);
    alignment_ = it->get<uint64_t>();
    MAGIX_CHECK(alignment_ > 0 && alignment_ <= (1u << 16) && (alignment_ & (alignment_ - 1)) == 0,
                "{}: general.alignment {} is not a power of two up to 65536", p, alignment_);
  }

  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = c.string(kMaxNameLength, "tensor name");
    MAGIX_CHECK(!t.name.empty(), "{}: GGUF tensor {} has an empty name", p, i);
    MAGIX_CHECK(!index_.contains(t.name), "{}: GGUF tensor '{}' appears twice", p, t.name);
    const uint32_t n_dims = c.get<uint32_t>("a tensor's dimension count");
    MAGIX_CHECK(n_dims >= 1 && n_dims <= kMaxDims, "{}: GGUF tensor '{}' has {} dimensions (1 to {})",
                p, t.name, n_dims, kMaxDims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = c.get<uint64_t>("a tensor dimension");
      MAGIX_CHECK(dim >= 1 && dim <= (1ull << 40) && numel <= (1ull << 48) / dim,
                  "{}: GGUF tensor '{}' has dimension {} = {} (positive, product under 2^48)", p,
                  t.name, d, dim);
      numel *= dim;
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    const uint32_t type = c.get<uint32_t>("a tensor type");
    MAGIX_CHECK(ggml_type_supported(type),
                "{}: GGUF tensor '{}' is stored as {}, which magix does not read (F32, F16, BF16, "
                "Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)", p, t.name,
                ggml_type_name(type));
    t.type = static_cast<GgmlType>(type);
    const int64_t bv = ggml_block_values(t.type);
    MAGIX_CHECK(t.dims[0] % bv == 0,
                "{}: GGUF tensor '{}' ({}) has rows of {} values, not a multiple of the block size "
                "{}", p, t.name, ggml_type_name(type), t.dims[0], bv);
    t.nbytes = numel / bv * ggml_block_bytes(t.type);
    t.offset = c.get<uint64_t>("a tensor offset");
    MAGIX_CHECK(t.offset % alignment_ == 0, "{}: GGUF tensor '{}' starts at offset {}, not a "
                "multiple of the alignment {}", p, t.name, t.offset, alignment_);
    index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }
  data_start_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  MAGIX_CHECK(data_start_ <= file_->size, "{}: GGUF file ends before its data section", p);
  const uint64_t data_size = file_->size - data_start_;
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : tensors_) {
    MAGIX_CHECK(t.offset <= data_size && t.nbytes <= data_size - t.offset,
                "{}: GGUF tensor '{}' ({} bytes at data offset {}) runs past the end of the file "
                "(data section of {} bytes): truncated file?", p, t.name, t.nbytes, t.offset,
                data_size);
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const auto* a = by_offset[i - 1];
    const auto* b = by_offset[i];
    MAGIX_CHECK(a->offset + a->nbytes <= b->offset, "{}: GGUF tensors '{}' and '{}' overlap", p,
                a->name, b->name);
  }
}

GgufFile::~GgufFile() = default;
GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;

const GgufTensorInfo* GgufFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::vector<uint8_t> GgufFile::read_raw(std::string_view name) const {
  const GgufTensorInfo* t = find(name);
  MAGIX_CHECK(t != nullptr, "{}: no tensor '{}' in this GGUF file", path_.string(), name);
  std::vector<uint8_t> bytes(t->nbytes);
  io::read_exact(file_->fd.get(), data_start_ + t->offset, bytes.data(), bytes.size(), path_);
  return bytes;
}

Tensor GgufFile::read_f32(std::string_view name) const {
  const GgufTensorInfo* t = find(name);
  MAGIX_CHECK(t != nullptr, "{}: no tensor '{}' in this GGUF file", path_.string(), name);
  Tensor out(t->shape(), DType::kF32);
  if (t->type == GgmlType::kF32) {
    io::read_exact(file_->fd.get(), data_start_ + t->offset, out.data<float>(), t->nbytes, path_);
    return out;
  }
  const std::vector<uint8_t> bytes = read_raw(name);
  ggml_dequantize(t->type, bytes, std::span<float>(out.data<float>(), out.numel()));
  return out;
}

bool is_gguf_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

}  // namespace magix
