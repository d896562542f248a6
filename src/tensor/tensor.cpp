#include "magix/tensor.hpp"

#include <algorithm>
#include <cstring>
#include <new>

#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"

namespace magix {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kBF16:
      return 2;
    case DType::kF16:
      return 2;
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
  }
  return 0;
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

std::optional<DType> dtype_from_name(std::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "BF16") return DType::kBF16;
  if (name == "F16") return DType::kF16;
  if (name == "I32") return DType::kI32;
  if (name == "I64") return DType::kI64;
  return std::nullopt;
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    MAGIX_CHECK(d >= 0, "negative dimension in shape {}", shape_str(shape));
    MAGIX_CHECK(!__builtin_mul_overflow(n, d, &n), "shape {} overflows int64", shape_str(shape));
  }
  return n;
}

namespace {

// Elements of `p` whose bits under `mask` are all ones (NaN or infinity for the float formats'
// exponent masks).
template <typename Bits>
int64_t first_all_ones(const Bits* p, size_t n, Bits mask) {
  constexpr size_t kBlock = 4096;
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t e = std::min(n, b + kBlock);
    Bits hit = 0;  // a branch-free reduction the compiler vectorises
    for (size_t i = b; i < e; ++i) hit |= static_cast<Bits>((p[i] & mask) == mask);
    if (hit == 0) continue;
    for (size_t i = b; i < e; ++i) {
      if ((p[i] & mask) == mask) return static_cast<int64_t>(i);
    }
  }
  return -1;
}

}  // namespace

int64_t first_non_finite(const void* data, DType dtype, size_t n) {
  switch (dtype) {
    case DType::kF32:
      return first_all_ones(static_cast<const uint32_t*>(data), n, uint32_t{0x7f800000u});
    case DType::kBF16:
      return first_all_ones(static_cast<const uint16_t*>(data), n, uint16_t{0x7f80u});
    case DType::kF16:
      return first_all_ones(static_cast<const uint16_t*>(data), n, uint16_t{0x7c00u});
    default:
      return -1;
  }
}

std::string box_coordinates(int64_t flat, const Shape& start, const Shape& extent) {
  if (extent.empty()) return "[" + std::to_string(flat) + "]";
  Shape at(extent.size());
  for (size_t d = extent.size(); d-- > 0;) {
    const int64_t n = std::max<int64_t>(extent[d], 1);
    at[d] = flat % n + (d < start.size() ? start[d] : 0);
    flat /= n;
  }
  return shape_str(at);
}

std::string shape_str(const Shape& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

namespace {
constexpr size_t kAlignment = 64;

std::shared_ptr<std::byte[]> allocate(size_t nbytes, bool zero) {
  size_t padded = (nbytes + kAlignment - 1) / kAlignment * kAlignment;
  if (padded == 0) padded = kAlignment;
  auto* p = static_cast<std::byte*>(::operator new[](padded, std::align_val_t(kAlignment)));
  if (zero) std::memset(p, 0, padded);
  return std::shared_ptr<std::byte[]>(
      p, [](std::byte* q) { ::operator delete[](q, std::align_val_t(kAlignment)); });
}

template <class T>
constexpr bool matches(DType d) {
  if constexpr (std::is_same_v<T, float>) return d == DType::kF32;
  if constexpr (std::is_same_v<T, uint16_t>) return d == DType::kBF16 || d == DType::kF16;
  if constexpr (std::is_same_v<T, int32_t>) return d == DType::kI32;
  if constexpr (std::is_same_v<T, int64_t>) return d == DType::kI64;
  return false;
}

size_t checked_nbytes(const Shape& shape, int64_t numel, DType dtype) {
  size_t bytes;
  MAGIX_CHECK(!__builtin_mul_overflow(static_cast<size_t>(numel), dtype_size(dtype), &bytes),
              "tensor of shape {} is too large", shape_str(shape));
  return bytes;
}
}  // namespace

std::string_view device_name(Device device) {
  switch (device) {
    case Device::kCpu:
      return "cpu";
    case Device::kCuda:
      return "cuda";
  }
  return "?";
}

Tensor::Tensor(Shape shape, DType dtype)
    : dtype_(dtype), shape_(std::move(shape)), numel_(shape_numel(shape_)) {
  storage_ = allocate(checked_nbytes(shape_, numel_, dtype_), /*zero=*/true);
}

Tensor Tensor::empty(Shape shape, DType dtype) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.numel_ = shape_numel(t.shape_);
  t.storage_ = allocate(checked_nbytes(t.shape_, t.numel_, dtype), /*zero=*/false);
  return t;
}

Tensor Tensor::from_storage(Shape shape, DType dtype, Device device,
                            std::shared_ptr<std::byte[]> storage) {
  MAGIX_CHECK(storage != nullptr, "from_storage: no storage");
  Tensor t;
  t.dtype_ = dtype;
  t.device_ = device;
  t.shape_ = std::move(shape);
  t.numel_ = shape_numel(t.shape_);
  checked_nbytes(t.shape_, t.numel_, dtype);
  t.storage_ = std::move(storage);
  return t;
}

Tensor Tensor::view_of(void* data, Shape shape, DType dtype) {
  MAGIX_CHECK(data != nullptr, "view_of: null data");
  // A non-owning pointer: the aliasing constructor over an empty owner.
  return from_storage(
      std::move(shape), dtype, Device::kCpu,
      std::shared_ptr<std::byte[]>(std::shared_ptr<std::byte[]>(), static_cast<std::byte*>(data)));
}

Tensor Tensor::rows(int64_t start, int64_t count) const {
  MAGIX_CHECK(ndim() >= 1 && start >= 0 && count >= 0 && start + count <= shape_[0],
              "rows [{}, {}) of a tensor of shape {}", start, start + count, shape_str(shape_));
  const int64_t row = shape_[0] == 0 ? 0 : numel_ / shape_[0];
  Tensor t = *this;
  t.shape_[0] = count;
  t.numel_ = row * count;
  const size_t offset = static_cast<size_t>(start * row) * dtype_size(dtype_);
  t.storage_ = std::shared_ptr<std::byte[]>(storage_, storage_.get() + offset);
  return t;
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  if (i < 0) i += n;
  MAGIX_CHECK(i >= 0 && i < n, "dim {} out of range for a {}-d tensor", i, n);
  return shape_[i];
}

void Tensor::check_host(const char* what) const {
  MAGIX_CHECK(device_ == Device::kCpu,
              "Tensor::{}: a {} {} tensor that lives on {}; copy it to the host first "
              "(Backend::copy)",
              what, shape_str(shape_), dtype_name(dtype_), device_name(device_));
}

std::byte* Tensor::bytes() {
  check_host("bytes");
  return storage_.get();
}
const std::byte* Tensor::bytes() const {
  check_host("bytes");
  return storage_.get();
}

template <class T>
T* Tensor::data() {
  check_host("data");
  MAGIX_CHECK(matches<T>(dtype_), "tensor of dtype {} accessed with the wrong type",
              dtype_name(dtype_));
  return reinterpret_cast<T*>(storage_.get());
}
template <class T>
const T* Tensor::data() const {
  check_host("data");
  MAGIX_CHECK(matches<T>(dtype_), "tensor of dtype {} accessed with the wrong type",
              dtype_name(dtype_));
  return reinterpret_cast<const T*>(storage_.get());
}
template float* Tensor::data<float>();
template uint16_t* Tensor::data<uint16_t>();
template int32_t* Tensor::data<int32_t>();
template int64_t* Tensor::data<int64_t>();
template const float* Tensor::data<float>() const;
template const uint16_t* Tensor::data<uint16_t>() const;
template const int32_t* Tensor::data<int32_t>() const;
template const int64_t* Tensor::data<int64_t>() const;

Tensor Tensor::reshape(Shape shape) const {
  MAGIX_CHECK(shape_numel(shape) == numel_, "cannot reshape {} to {}", shape_str(shape_),
              shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::clone() const {
  check_host("clone");
  Tensor t = empty(shape_, dtype_);
  if (nbytes() > 0) std::memcpy(t.bytes(), bytes(), nbytes());
  return t;
}

void Tensor::fill_zero() {
  check_host("fill_zero");
  if (nbytes() > 0) std::memset(bytes(), 0, nbytes());
}

namespace {
bool is_float(DType d) {
  return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16;
}

Tensor to_f32(const Tensor& t) {
  Tensor out(t.shape(), DType::kF32);
  auto o = out.span<float>();
  switch (t.dtype()) {
    case DType::kF32:
      return t.clone();
    case DType::kBF16:
      bf16_to_float(t.span<uint16_t>(), o);
      break;
    case DType::kF16:
      f16_to_float(t.span<uint16_t>(), o);
      break;
    default:
      MAGIX_FAIL("cannot convert {} to F32", dtype_name(t.dtype()));
  }
  return out;
}
}  // namespace

Tensor Tensor::to(DType dtype) const {
  check_host("to");
  if (dtype == dtype_) return clone();
  if (is_float(dtype_) && is_float(dtype)) {
    Tensor f = to_f32(*this);
    if (dtype == DType::kF32) return f;
    Tensor out(shape_, dtype);
    auto in = f.span<float>();
    auto o = out.span<uint16_t>();
    if (dtype == DType::kBF16) {
      float_to_bf16(in, o);
    } else {
      for (size_t i = 0; i < in.size(); ++i) o[i] = float_to_f16(in[i]);
    }
    return out;
  }
  if (dtype_ == DType::kI32 && dtype == DType::kI64) {
    Tensor out(shape_, dtype);
    auto in = span<int32_t>();
    auto o = out.span<int64_t>();
    for (size_t i = 0; i < in.size(); ++i) o[i] = in[i];
    return out;
  }
  if (dtype_ == DType::kI64 && dtype == DType::kI32) {
    Tensor out(shape_, dtype);
    auto in = span<int64_t>();
    auto o = out.span<int32_t>();
    for (size_t i = 0; i < in.size(); ++i) {
      MAGIX_CHECK(in[i] >= INT32_MIN && in[i] <= INT32_MAX, "value {} does not fit I32", in[i]);
      o[i] = static_cast<int32_t>(in[i]);
    }
    return out;
  }
  MAGIX_FAIL("cannot convert {} to {}", dtype_name(dtype_), dtype_name(dtype));
}

}  // namespace magix
