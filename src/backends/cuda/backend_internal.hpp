// Internals shared by the files of the CUDA backend (cuda_backend.cpp, cuda_backend_sequence.cpp):
// its state and the checks every op makes of its tensors (device, dtype, shape), with the CPU
// backend's messages.
#pragma once

#include <memory>

#include "backends/cuda/cuda_backend.hpp"
#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/device_memory.hpp"
#include "backends/cuda/gemm.hpp"
#include "magix/error.hpp"

namespace magix::cuda {

struct CudaBackend::State {
  int device = 0;
  cudaDeviceProp prop{};
  cudaStream_t stream = nullptr;
  std::shared_ptr<DeviceAllocator> allocator;
  std::unique_ptr<Gemm> gemm;
};

namespace checks {

struct Mat {
  int64_t rows, cols;
};

inline Mat mat(const Tensor& t) {
  if (t.ndim() == 0) return {1, 1};
  const int64_t cols = t.dim(-1);
  return {cols == 0 ? 0 : t.numel() / cols, cols};
}

inline void check_cuda(const char* op, const Tensor& t) {
  MAGIX_CHECK(t.defined(), "{}: an undefined tensor", op);
  MAGIX_CHECK(t.device() == Device::kCuda, "{}: a {} tensor given to the cuda backend", op,
              device_name(t.device()));
}

inline void check_dtype(const char* op, const char* what, const Tensor& t, DType want) {
  check_cuda(op, t);
  MAGIX_CHECK(t.dtype() == want, "{}: {} is {}, must be {}", op, what, dtype_name(t.dtype()),
              dtype_name(want));
}

inline void check_numel(const char* op, const char* what, const Tensor& t, int64_t want) {
  MAGIX_CHECK(t.numel() == want, "{}: {} has {} elements {}, expected {}", op, what, t.numel(),
              shape_str(t.shape()), want);
}

// F32 or BF16; true for BF16.
inline bool float_kind(const char* op, const char* what, const Tensor& t) {
  check_cuda(op, t);
  MAGIX_CHECK(t.dtype() == DType::kF32 || t.dtype() == DType::kBF16,
              "{}: {} is {}, must be F32 or BF16", op, what, dtype_name(t.dtype()));
  return t.dtype() == DType::kBF16;
}

[[noreturn]] inline void unsupported(const char* op, const Tensor& a, const Tensor& b) {
  MAGIX_FAIL("{}: the cuda backend has no kernel for {} x {}", op, dtype_name(a.dtype()),
             dtype_name(b.dtype()));
}

inline bool is(const Tensor& t, DType d) {
  return t.dtype() == d;
}

// Device pointers (the backend's own storage; never dereferenced on the host).
inline float* f32(Tensor& t) {
  return t.data<float>();
}
inline const float* f32(const Tensor& t) {
  return t.data<float>();
}
inline const float* f32_or_null(const Tensor* t) {
  return t ? t->data<float>() : nullptr;
}
inline const int32_t* i32(const Tensor& t) {
  return t.data<int32_t>();
}
inline void* raw(Tensor& t) {
  return t.bytes();
}
inline const void* raw(const Tensor& t) {
  return t.bytes();
}

struct Heads {
  int64_t B, T, H, D;
};

inline Heads heads(const char* op, const char* what, const Tensor& t) {
  MAGIX_CHECK(t.ndim() == 4, "{}: {} must be (B, T, H, D), got {}", op, what, shape_str(t.shape()));
  return {t.dim(0), t.dim(1), t.dim(2), t.dim(3)};
}

}  // namespace checks
}  // namespace magix::cuda
