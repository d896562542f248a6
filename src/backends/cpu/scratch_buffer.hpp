// A growable 64-byte-aligned buffer kept between calls, for the packed operands and partial
// results of the CPU GEMMs. Not thread-safe: each owner is one thread (thread_local).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>

#include "magix/error.hpp"

namespace magix::cpu {

class ScratchBuffer {
 public:
  // Room for count values of T (the contents are not kept when it grows); `what` names the
  // caller in the error when the allocation fails.
  template <typename T>
  T* get(int64_t count, const char* what) {
    const size_t bytes = static_cast<size_t>(count) * sizeof(T);
    if (bytes > capacity_) {
      const size_t rounded = (bytes + 4095) / 4096 * 4096;
      capacity_ = 0;  // stays 0 if the allocation fails
      data_.reset(std::aligned_alloc(64, rounded));
      MAGIX_CHECK(data_ != nullptr, "{}: cannot allocate {} bytes of scratch", what, bytes);
      capacity_ = rounded;
    }
    return static_cast<T*>(data_.get());
  }

 private:
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> data_;
  size_t capacity_ = 0;
};

}  // namespace magix::cpu
