// Tensor: a dtype, a shape, a device and contiguous, 64-byte aligned, shared storage (row-major).
// Copies share the storage; views of whole rows (rows()) share it too.
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

// Where a tensor's storage lives. Host code may read and write kCpu tensors only: data(), span(),
// bytes(), clone(), to() and fill_zero() of a tensor on another device throw magix::Error. The
// storage of other devices is handed out by their backend (src/backends/) and touched by its
// ops only (device_bytes()); host code moves values across with Backend::copy.
enum class Device : uint8_t { kCpu, kCuda };
std::string_view device_name(Device device);  // "cpu", "cuda"

size_t dtype_size(DType dtype);
// Names as safetensors writes them: "F32", "BF16", "F16", "I32", "I64".
std::string_view dtype_name(DType dtype);
std::optional<DType> dtype_from_name(std::string_view name);

using Shape = std::vector<int64_t>;

// Product of dims; throws magix::Error on a negative dim or int64 overflow.
int64_t shape_numel(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[2, 3]"

// The first NaN or infinity among the `n` elements of dtype F32, BF16 or F16 at `data`: its flat
// index, or -1 when every element is finite (and for integer dtypes). One vectorised pass over
// the bits (exponent all ones), then a scalar search of the 4096-element block that holds it.
int64_t first_non_finite(const void* data, DType dtype, size_t n);
// "[3, 17]": the coordinates of the flat row-major index `flat` of a box of shape `extent`
// starting at `start` in the global tensor ("[flat]" when extent is empty).
std::string box_coordinates(int64_t flat, const Shape& start, const Shape& extent);

class Tensor {
 public:
  Tensor() = default;
  // Zero-filled host storage.
  Tensor(Shape shape, DType dtype = DType::kF32);
  // Host storage whose contents are unspecified (for buffers written before they are read).
  static Tensor empty(Shape shape, DType dtype = DType::kF32);
  // A host tensor over memory the caller owns and keeps alive while the tensor (or a copy) is used.
  static Tensor view_of(void* data, Shape shape, DType dtype);
  // A tensor over storage a backend allocated on `device` (at least numel * dtype_size bytes).
  static Tensor from_storage(Shape shape, DType dtype, Device device,
                             std::shared_ptr<std::byte[]> storage);

  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  bool defined() const { return storage_ != nullptr; }

  // Host storage; throw for a tensor on another device.
  std::byte* bytes();
  const std::byte* bytes() const;
  // The storage wherever it lives (a device address for a device tensor): for backends only,
  // which know how to touch it.
  std::byte* device_bytes() { return storage_.get(); }
  const std::byte* device_bytes() const { return storage_.get(); }

  // Typed host views; throw if T does not match the dtype (uint16_t for bf16/f16) or the tensor
  // lives on another device.
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
  // Rows [start, start + count) of dim 0, sharing the storage (shape (count, ...)).
  Tensor rows(int64_t start, int64_t count) const;
  // Deep copy (host tensors; a device tensor is copied with Backend::copy).
  Tensor clone() const;
  // Converted copy (host tensors; float types convert through f32; bf16 rounds to nearest even).
  Tensor to(DType dtype) const;
  void fill_zero();  // host tensors (Backend::fill_zero on any device)

 private:
  void check_host(const char* what) const;

  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
  Shape shape_;
  int64_t numel_ = 0;
  std::shared_ptr<std::byte[]> storage_;
};

}  // namespace magix
