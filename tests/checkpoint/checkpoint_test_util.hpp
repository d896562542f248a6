// Helpers of the checkpoint tests: temporary folders and reproducible tensors.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "magix/dtype_convert.hpp"
#include "magix/tensor.hpp"

namespace magix::test {

// A fresh folder under the system temp dir, removed with everything in it.
class CkptTempDir {
 public:
  CkptTempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "magix_ckpt_XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    if (p == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~CkptTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  CkptTempDir(const CkptTempDir&) = delete;
  CkptTempDir& operator=(const CkptTempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Element e of a tensor with tag `seed`: a pure function, so any box can be recomputed.
inline float pattern_value(uint64_t seed, int64_t e) {
  uint64_t x =
      (seed + 1) * 0x9E3779B97F4A7C15ull ^ static_cast<uint64_t>(e) * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 29;
  return static_cast<float>(static_cast<int64_t>(x % 2000001) - 1000000) / 1000.0f;
}

// The box [start, start + extent) of the global tensor `shape` whose element at flat global
// index g is pattern_value(seed, g), in `dtype` (F32, or BF16 rounded from it).
inline Tensor pattern_box(uint64_t seed, const Shape& shape, const Shape& start,
                          const Shape& extent, DType dtype = DType::kF32) {
  Tensor t(extent, DType::kF32);
  float* out = t.data<float>();
  const size_t nd = shape.size();
  for (int64_t i = 0; i < t.numel(); ++i) {
    int64_t rem = i, g = 0, stride = 1;
    Shape idx(nd);
    for (size_t d = nd; d-- > 0;) {
      idx[d] = rem % extent[d];
      rem /= extent[d];
    }
    for (size_t d = nd; d-- > 0;) {
      g += (start[d] + idx[d]) * stride;
      stride *= shape[d];
    }
    out[i] = pattern_value(seed, g);
  }
  return dtype == DType::kF32 ? t : t.to(dtype);
}

inline Tensor pattern_full(uint64_t seed, const Shape& shape, DType dtype = DType::kF32) {
  return pattern_box(seed, shape, Shape(shape.size(), 0), shape, dtype);
}

inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.bytes(), b.bytes(), a.nbytes()) == 0;
}

}  // namespace magix::test
