// Tensor: a dtype, a shape and contiguous, 64-byte aligned, shared storage (row-major).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace magix {

enum class DType : uint8_t { kF32, kBF16, kF16, kI32, kI64 };

size_t dtype_size(DType dtype);
// Names as safetensors writes them: "F32", "BF16", "F16", "I32", "I64".
std::string_view dtype_name(DType dtype);
std::optional<DType> dtype_from_name(std::string_view name);

using Shape = std::vector<int64_t>;

// Product of dims; throws magix::Error on a negative dim or int64 overflow.
int64_t shape_numel(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[2, 3]"

class Tensor {
 public:
  Tensor() = default;
  // Zero-filled storage.
  Tensor(Shape shape, DType dtype = DType::kF32);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  bool defined() const { return storage_ != nullptr; }

  std::byte* bytes() { return storage_.get(); }
  const std::byte* bytes() const { return storage_.get(); }

  // Typed views; throw if T does not match the dtype (uint16_t for bf16/f16).
  template <class T>
  T* data();
  template <class T>
  const T* data() const;
  template <class T>
  std::span<T> span() {
    return {data<T>(), static_cast<size_t>(numel_)};
  }
  template <class T>
  std::span<const T> span() const {
    return {data<T>(), static_cast<size_t>(numel_)};
  }

  // Same storage, new shape with the same number of elements.
  Tensor reshape(Shape shape) const;
  // Deep copy.
  Tensor clone() const;
  // Converted copy (float types convert through f32; bf16 rounds to nearest even).
  Tensor to(DType dtype) const;
  void fill_zero();

 private:
  DType dtype_ = DType::kF32;
  Shape shape_;
  int64_t numel_ = 0;
  std::shared_ptr<std::byte[]> storage_;
};

}  // namespace magix
