// Row-major GEMMs on cuBLASLt, the interface of the CPU backend's gemm(): C (M, N) =
// alpha · op(A) · op(B) + beta · C, fp32 compute (CUBLAS_COMPUTE_32F: no TF32, so fp32 results
// stay close to the CPU reference), A and B both F32 or both BF16, C F32 (or BF16 for beta = 0),
// and an optional F32 bias (N) added to every row before C is rounded (the bias epilogue; a
// separate kernel where cuBLASLt offers no algorithm with it).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "backends/cuda/device_memory.hpp"

namespace magix::cuda {

enum class GemmType { kF32, kBF16 };

struct GemmCall {
  bool ta = false, tb = false;
  int64_t M = 0, N = 0, K = 0;
  float alpha = 1;
  const void* A = nullptr;
  int64_t lda = 0;
  const void* B = nullptr;
  int64_t ldb = 0;
  float beta = 0;
  void* C = nullptr;
  int64_t ldc = 0;
  GemmType ab = GemmType::kF32, c = GemmType::kF32;
  const float* bias = nullptr;  // (N) F32, or null; with beta = 0 and ldc = N only
};

class Gemm {
 public:
  Gemm(cudaStream_t stream, std::shared_ptr<DeviceAllocator> allocator);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  void run(const GemmCall& call) const;
  // cublasLtGetVersion() of the loaded library, e.g. 130000.
  static int version();

 private:
  // false when cuBLASLt has no algorithm for the call (with its bias epilogue, when asked).
  bool try_run(const GemmCall& call, bool epilogue) const;

  cudaStream_t stream_;
  std::shared_ptr<DeviceAllocator> allocator_;
  cublasLtHandle_t handle_ = nullptr;
  std::shared_ptr<std::byte[]> workspace_;
  size_t workspace_bytes_;
};

}  // namespace magix::cuda
