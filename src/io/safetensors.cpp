// safetensors: strict header parser, reader (whole tensors and boxes) and atomic writer.
#include "magix/safetensors.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <set>

#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"
#include "safetensors_util.hpp"

namespace magix {

namespace {

using nlohmann::json;

// Dtypes of the safetensors format that magix does not hold in a Tensor: named in the error.
constexpr std::array<std::string_view, 17> kUnsupportedDtypes = {
    "BOOL",    "U8",      "I8",  "U16",         "I16",        "U32",
    "U64",     "F64",     "C64", "F8_E4M3",     "F8_E5M2",    "F8_E8M0",
    "F6_E2M3", "F6_E3M2", "F4",  "F8_E4M3FNUZ", "F8_E5M2FNUZ"};

// A name for messages: quoted, cut if very long.
std::string quote_name(std::string_view name) {
  if (name.size() > 120) return fmt::format("'{}...'", name.substr(0, 120));
  return fmt::format("'{}'", name);
}

std::string_view json_type(const json& v) {
  return v.type_name();
}

uint64_t read_le64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint64_t>(p[i]);
  return v;
}

// A non-negative JSON integer (what = where it came from, for the message).
uint64_t get_u64(const json& v, const std::string& what) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  MAGIX_CHECK(!v.is_number_integer(), "{} is negative ({})", what, v.get<int64_t>());
  MAGIX_FAIL("{} must be a non-negative integer, not {} {}", what, json_type(v),
             v.dump().substr(0, 40));
}

bool is_float_dtype(DType d) {
  return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16;
}

SafetensorsEntry parse_entry(const std::string& name, const json& v) {
  std::string q = quote_name(name);
  MAGIX_CHECK(v.is_object(),
              "tensor {}: expected an object with dtype, shape and data_offsets, "
              "got {}",
              q, json_type(v));
  bool exact =
      v.size() == 3 && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets");
  if (!exact) {
    std::vector<std::string> keys;
    for (const auto& [k, _] : v.items()) keys.push_back(quote_name(k));
    MAGIX_FAIL(
        "tensor {}: an entry must have exactly the keys dtype, shape, data_offsets; it has "
        "[{}]",
        q, fmt::join(keys, ", "));
  }
  SafetensorsEntry e;
  e.name = name;

  const json& dt = v["dtype"];
  MAGIX_CHECK(dt.is_string(), "tensor {}: dtype must be a string, not {}", q, json_type(dt));
  const auto& dts = dt.get_ref<const std::string&>();
  auto dtype = dtype_from_name(dts);
  if (!dtype) {
    bool known = std::find(kUnsupportedDtypes.begin(), kUnsupportedDtypes.end(), dts) !=
                 kUnsupportedDtypes.end();
    MAGIX_FAIL("tensor {}: {} dtype {}; magix reads F32, BF16, F16, I32 and I64", q,
               known ? "unsupported" : "unknown", quote_name(dts));
  }
  e.dtype = *dtype;

  const json& sh = v["shape"];
  MAGIX_CHECK(sh.is_array(), "tensor {}: shape must be an array, not {}", q, json_type(sh));
  uint64_t numel = 1;
  for (const json& d : sh) {
    uint64_t n = get_u64(d, fmt::format("tensor {}: a shape dimension", q));
    MAGIX_CHECK(n <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                "tensor {}: dimension {} is too large", q, n);
    MAGIX_CHECK(!__builtin_mul_overflow(numel, n, &numel) &&
                    numel <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                "tensor {}: the number of elements of its shape overflows", q);
    e.shape.push_back(static_cast<int64_t>(n));
  }
  MAGIX_CHECK(!__builtin_mul_overflow(numel, dtype_size(e.dtype), &e.nbytes),
              "tensor {}: its size in bytes overflows", q);

  const json& off = v["data_offsets"];
  MAGIX_CHECK(off.is_array() && off.size() == 2,
              "tensor {}: data_offsets must be an array of two integers [begin, end]", q);
  uint64_t begin = get_u64(off[0], fmt::format("tensor {}: data_offsets[0]", q));
  uint64_t end = get_u64(off[1], fmt::format("tensor {}: data_offsets[1]", q));
  MAGIX_CHECK(begin <= end, "tensor {}: data_offsets begin {} is after end {}", q, begin, end);
  MAGIX_CHECK(end - begin == e.nbytes,
              "tensor {}: data_offsets [{}, {}] span {} bytes but {} {} needs {}", q, begin, end,
              end - begin, dtype_name(e.dtype), shape_str(e.shape), e.nbytes);
  e.offset = begin;
  return e;
}

// Validates `start`/`extent` as a box inside `shape`.
void check_box(const SafetensorsEntry& e, const Shape& start, const Shape& extent) {
  MAGIX_CHECK(start.size() == e.shape.size() && extent.size() == e.shape.size(),
              "box start {} extent {} does not match the rank of tensor {} of shape {}",
              shape_str(start), shape_str(extent), quote_name(e.name), shape_str(e.shape));
  for (size_t d = 0; d < e.shape.size(); ++d) {
    MAGIX_CHECK(start[d] >= 0 && extent[d] >= 0 && start[d] <= e.shape[d] &&
                    extent[d] <= e.shape[d] - start[d],
                "box start {} extent {} is outside tensor {} of shape {} (dim {})",
                shape_str(start), shape_str(extent), quote_name(e.name), shape_str(e.shape), d);
  }
}

void check_float(const SafetensorsEntry& e, const std::filesystem::path& path) {
  MAGIX_CHECK(is_float_dtype(e.dtype), "{}: tensor {} is {}; only F32, BF16 and F16 convert to F32",
              path.string(), quote_name(e.name), dtype_name(e.dtype));
}

// Converts n stored elements of a float dtype to f32.
void convert_to_f32(DType dtype, const void* src, float* dst, size_t n) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      break;
    case DType::kBF16:
      bf16_to_float({static_cast<const uint16_t*>(src), n}, {dst, n});
      break;
    case DType::kF16:
      f16_to_float({static_cast<const uint16_t*>(src), n}, {dst, n});
      break;
    default:
      MAGIX_FAIL("internal: convert_to_f32 of {}", dtype_name(dtype));
  }
}

}  // namespace

SafetensorsHeader parse_safetensors_header(std::span<const std::byte> prefix, uint64_t file_size) {
  MAGIX_CHECK(file_size >= 8, "file is {} bytes, too short for a safetensors header", file_size);
  MAGIX_CHECK(prefix.size() >= 8, "only {} bytes given, fewer than the 8-byte header length",
              prefix.size());
  uint64_t n = read_le64(prefix.data());
  MAGIX_CHECK(n <= kSafetensorsMaxHeaderBytes,
              "header length {} exceeds the limit of {} bytes (not a safetensors file?)", n,
              kSafetensorsMaxHeaderBytes);
  MAGIX_CHECK(n <= file_size - 8, "header length {} runs past the end of the file ({} bytes)", n,
              file_size);
  MAGIX_CHECK(prefix.size() - 8 >= n, "only {} of the {} header bytes given", prefix.size() - 8, n);
  std::string_view text(reinterpret_cast<const char*>(prefix.data()) + 8, n);
  MAGIX_CHECK(!text.empty() && text.front() == '{',
              "the header must be a JSON object starting with '{{'");

  SafetensorsHeader h;
  h.data_start = 8 + n;
  uint64_t data_len = file_size - h.data_start;
  // Top object (1) > entry (2) > shape / data_offsets (3).
  json j = io::parse_json_strict(text, 3);
  MAGIX_CHECK(j.is_object(), "the header must be a JSON object, not {}", json_type(j));
  for (const auto& [name, v] : j.items()) {
    if (name == "__metadata__") {
      MAGIX_CHECK(v.is_object(), "__metadata__ must be an object of strings, not {}", json_type(v));
      for (const auto& [k, s] : v.items()) {
        MAGIX_CHECK(s.is_string(), "__metadata__ value of {} must be a string, not {}",
                    quote_name(k), json_type(s));
        h.metadata.emplace(k, s.get<std::string>());
      }
      continue;
    }
    h.entries.push_back(parse_entry(name, v));
  }
  // Names are unique (the JSON parser rejects duplicate keys). Sorted by [begin, end), the
  // tensors must tile the data section exactly: from 0, no gap, no overlap, nothing after.
  std::sort(h.entries.begin(), h.entries.end(), [](const auto& a, const auto& b) {
    return a.offset != b.offset ? a.offset < b.offset : a.nbytes < b.nbytes;
  });
  uint64_t pos = 0;
  for (const auto& e : h.entries) {
    MAGIX_CHECK(e.offset >= pos,
                "tensor {} at bytes [{}, {}) overlaps the previous tensor, "
                "which ends at {}",
                quote_name(e.name), e.offset, e.offset + e.nbytes, pos);
    MAGIX_CHECK(e.offset == pos,
                "gap in the data section: bytes [{}, {}) before tensor {} "
                "belong to no tensor",
                pos, e.offset, quote_name(e.name));
    pos = e.offset + e.nbytes;
    MAGIX_CHECK(pos <= data_len,
                "tensor {} ends at byte {} of the data section, past its end "
                "({} bytes: file truncated?)",
                quote_name(e.name), pos, data_len);
  }
  MAGIX_CHECK(pos == data_len,
              "the data section has {} bytes but the tensors cover only {} "
              "(trailing bytes)",
              data_len, pos);
  return h;
}

struct SafetensorsReader::File {
  io::FileHandle fd;
};

SafetensorsReader::SafetensorsReader(const std::filesystem::path& path)
    : path_(path), file_(std::make_unique<File>()) {
  uint64_t size = 0;
  file_->fd = io::open_for_reading(path, &size);  // errors name the file
  std::vector<std::byte> prefix(std::min<uint64_t>(size, 8));
  io::read_exact(file_->fd.get(), 0, prefix.data(), prefix.size(), path);
  if (prefix.size() == 8) {
    uint64_t n = read_le64(prefix.data());
    // Read the header only once its length is known to be sane; the parser reports otherwise.
    if (n <= kSafetensorsMaxHeaderBytes && n <= size - 8) {
      prefix.resize(8 + n);
      io::read_exact(file_->fd.get(), 8, prefix.data() + 8, n, path);
    }
  }
  try {
    header_ = parse_safetensors_header(prefix, size);
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", path.string(), e.what()), e.where());
  }
  for (size_t i = 0; i < header_.entries.size(); ++i) index_.emplace(header_.entries[i].name, i);
}

SafetensorsReader::~SafetensorsReader() = default;
SafetensorsReader::SafetensorsReader(SafetensorsReader&&) noexcept = default;
SafetensorsReader& SafetensorsReader::operator=(SafetensorsReader&&) noexcept = default;

const SafetensorsEntry* SafetensorsReader::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.entries[it->second];
}

const SafetensorsEntry& SafetensorsReader::entry(std::string_view name) const {
  const SafetensorsEntry* e = find(name);
  MAGIX_CHECK(e != nullptr, "{}: no tensor named {}", path_.string(), quote_name(name));
  return *e;
}

Tensor SafetensorsReader::read(std::string_view name) const {
  const SafetensorsEntry& e = entry(name);
  Tensor t(e.shape, e.dtype);
  io::read_exact(file_->fd.get(), header_.data_start + e.offset, t.bytes(), e.nbytes, path_);
  return t;
}

Tensor SafetensorsReader::read_f32(std::string_view name) const {
  const SafetensorsEntry& e = entry(name);
  check_float(e, path_);
  Tensor t = read(name);
  return e.dtype == DType::kF32 ? t : t.to(DType::kF32);
}

Tensor SafetensorsReader::read_box_f32(std::string_view name, const Shape& start,
                                       const Shape& extent) const {
  const SafetensorsEntry& e = entry(name);
  check_float(e, path_);
  try {
    check_box(e, start, extent);
  } catch (const Error& err) {
    throw Error(fmt::format("{}: {}", path_.string(), err.what()), err.where());
  }
  Tensor out(extent, DType::kF32);
  if (out.numel() == 0) return out;
  const int nd = static_cast<int>(e.shape.size());
  const uint64_t esize = dtype_size(e.dtype);
  const uint64_t base = header_.data_start + e.offset;
  float* dst = out.data<float>();
  if (nd == 0) {
    std::array<std::byte, 4> buf;
    io::read_exact(file_->fd.get(), base, buf.data(), esize, path_);
    convert_to_f32(e.dtype, buf.data(), dst, 1);
    return out;
  }
  // Dims k..nd-1 form one contiguous run per index of dims 0..k-1: every dim after k is whole.
  int k = nd - 1;
  int64_t run = extent[k];
  while (k > 0 && extent[k] == e.shape[k]) {
    --k;
    run *= extent[k];
  }
  std::vector<int64_t> stride(nd, 1);
  for (int d = nd - 2; d >= 0; --d) stride[d] = stride[d + 1] * e.shape[d + 1];
  int64_t first = 0;  // element index of the box's first element
  for (int d = 0; d < nd; ++d) first += start[d] * stride[d];

  // 16-bit sources are read through a bounded staging buffer, a chunk of a run at a time.
  const int64_t chunk = std::min<int64_t>(run, int64_t{1} << 20);
  std::vector<std::byte> staging(e.dtype == DType::kF32 ? 0 : chunk * esize);
  std::vector<int64_t> idx(k, 0);  // odometer over dims 0..k-1 of the box
  for (int64_t r = 0, runs = out.numel() / run; r < runs; ++r) {
    int64_t elem = first;
    for (int d = 0; d < k; ++d) elem += idx[d] * stride[d];
    uint64_t at = base + static_cast<uint64_t>(elem) * esize;
    float* o = dst + r * run;
    if (e.dtype == DType::kF32) {
      io::read_exact(file_->fd.get(), at, o, run * esize, path_);
    } else {
      for (int64_t c = 0; c < run; c += chunk) {
        const int64_t m = std::min(chunk, run - c);
        io::read_exact(file_->fd.get(), at + c * esize, staging.data(), m * esize, path_);
        convert_to_f32(e.dtype, staging.data(), o + c, m);
      }
    }
    for (int d = k - 1; d >= 0; --d) {
      if (++idx[d] < extent[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

void write_safetensors(const std::filesystem::path& path, std::span<const NamedTensor> tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string_view> seen;
  uint64_t offset = 0;
  for (const NamedTensor& nt : tensors) {
    MAGIX_CHECK(nt.name != "__metadata__", "{}: a tensor cannot be named __metadata__",
                path.string());
    MAGIX_CHECK(seen.insert(nt.name).second, "{}: tensor {} is given twice", path.string(),
                quote_name(nt.name));
    MAGIX_CHECK(nt.tensor != nullptr && nt.tensor->defined(), "{}: tensor {} has no data",
                path.string(), quote_name(nt.name));
    const Tensor& t = *nt.tensor;
    uint64_t end = offset + t.nbytes();
    header[nt.name] = {
        {"dtype", dtype_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text;
  try {
    text = header.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::strict);
  } catch (const nlohmann::json::exception& e) {
    MAGIX_FAIL("{}: cannot encode the header (tensor names and metadata must be UTF-8): {}",
               path.string(), e.what());
  }
  // Pad with spaces so that the data section starts at a multiple of 8 bytes.
  text.append((8 - text.size() % 8) % 8, ' ');
  std::array<std::byte, 8> len;
  for (int i = 0; i < 8; ++i) len[i] = static_cast<std::byte>((text.size() >> (8 * i)) & 0xff);
  io::write_file_atomically(path, [&](int fd, const std::filesystem::path& tmp) {
    io::write_all(fd, len.data(), len.size(), tmp);
    io::write_all(fd, text.data(), text.size(), tmp);
    for (const NamedTensor& nt : tensors) {
      io::write_all(fd, nt.tensor->bytes(), nt.tensor->nbytes(), tmp);
    }
  });
}

}  // namespace magix
