#include "backends/cuda/gemm.hpp"

#include "backends/cuda/cublaslt_library.hpp"
#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/kernel_math.hpp"
#include "backends/cuda/kernels.hpp"

namespace magix::cuda {
namespace {

// 32 MiB: what NVIDIA recommends for cuBLASLt on Hopper.
constexpr size_t kWorkspaceBytes = size_t{32} << 20;

cudaDataType_t data_type(GemmType t) {
  return t == GemmType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
}

// The largest power of two (<= 256) dividing the address: the alignment cuBLASLt may assume.
uint32_t alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t k = 256;
  while (k > 1 && a % k != 0) k /= 2;
  return k;
}

// Owners of the cuBLASLt descriptors of one call.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Descriptors() {
    if (pref) cublaslt().pref_destroy(pref);
    if (c) cublaslt().layout_destroy(c);
    if (b) cublaslt().layout_destroy(b);
    if (a) cublaslt().layout_destroy(a);
    if (op) cublaslt().desc_destroy(op);
  }
};

template <class T>
void set(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const T& v) {
  MAGIX_CUBLAS_CHECK(cublaslt().desc_set(d, attr, &v, sizeof v));
}
template <class T>
void set(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t attr, const T& v) {
  MAGIX_CUBLAS_CHECK(cublaslt().pref_set(p, attr, &v, sizeof v));
}

}  // namespace

Gemm::Gemm(cudaStream_t stream, std::shared_ptr<DeviceAllocator> allocator)
    : stream_(stream), allocator_(std::move(allocator)), workspace_bytes_(kWorkspaceBytes) {
  MAGIX_CUBLAS_CHECK(cublaslt().create(&handle_));
  workspace_ = allocator_->allocate(workspace_bytes_);
}

Gemm::~Gemm() {
  if (handle_) (void)cublaslt().destroy(handle_);
}

int Gemm::version() {
  return static_cast<int>(cublaslt().get_version());
}

bool Gemm::try_run(const GemmCall& g, bool epilogue) const {
  const ColumnMajorGemm cm = column_major_gemm(g.ta, g.tb, g.M, g.N, g.K);
  Descriptors d;
  MAGIX_CUBLAS_CHECK(cublaslt().desc_create(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  set(d.op, CUBLASLT_MATMUL_DESC_TRANSA, cm.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N);
  set(d.op, CUBLASLT_MATMUL_DESC_TRANSB, cm.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N);
  if (epilogue) {
    set(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BIAS);
    set(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias);
    set(d.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, CUDA_R_32F);
  }
  const cudaDataType_t ab = data_type(g.ab), c = data_type(g.c);
  MAGIX_CUBLAS_CHECK(cublaslt().layout_create(&d.a, ab, cm.first_rows, cm.first_cols, g.ldb));
  MAGIX_CUBLAS_CHECK(cublaslt().layout_create(&d.b, ab, cm.second_rows, cm.second_cols, g.lda));
  MAGIX_CUBLAS_CHECK(cublaslt().layout_create(&d.c, c, cm.m, cm.n, g.ldc));
  MAGIX_CUBLAS_CHECK(cublaslt().pref_create(&d.pref));
  set(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<uint64_t>(workspace_bytes_));
  set(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment(g.B));
  set(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment(g.A));
  set(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment(g.C));
  set(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment(g.C));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublaslt().heuristic(handle_, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &result, &found);
  // No algorithm for these layouts (NOT_SUPPORTED, INVALID_VALUE for a layout cuBLASLt does not
  // take, or none found): false, and the caller falls back to a kernel of its own. A failure of
  // the product itself is an error.
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) return false;
  MAGIX_CUBLAS_CHECK(cublaslt().matmul(handle_, d.op, &g.alpha, g.B, d.a, g.A, d.b, &g.beta, g.C,
                                       d.c, g.C, d.c, &result.algo, workspace_.get(),
                                       workspace_bytes_, stream_));
  return true;
}

void Gemm::run(const GemmCall& g) const {
  MAGIX_CHECK(g.M >= 0 && g.N >= 0 && g.K >= 0, "gemm: bad sizes M={} N={} K={}", g.M, g.N, g.K);
  MAGIX_CHECK(g.c == GemmType::kF32 || g.beta == 0.0f, "gemm: a BF16 output takes beta = 0");
  MAGIX_CHECK(!g.bias || (g.beta == 0.0f && g.ldc == g.N), "gemm: a bias takes beta = 0, ldc = N");
  if (g.M == 0 || g.N == 0) return;
  if (g.K == 0) {  // C = beta · C (+ bias): cuBLASLt takes no empty inner dimension
    if (g.beta == 0.0f) {
      const size_t elem = g.c == GemmType::kF32 ? 4 : 2;
      MAGIX_CUDA_CHECK(cudaMemset2DAsync(g.C, g.ldc * elem, 0, g.N * elem, g.M, stream_));
      if (g.bias) {
        if (g.c == GemmType::kF32) {
          add_bias(static_cast<float*>(g.C), g.bias, g.M, g.N, stream_);
        } else {
          auto zeros = allocator_->allocate(g.M * g.N * sizeof(float));
          MAGIX_CUDA_CHECK(cudaMemsetAsync(zeros.get(), 0, g.M * g.N * sizeof(float), stream_));
          bias_round_bf16(static_cast<uint16_t*>(g.C), reinterpret_cast<float*>(zeros.get()),
                          g.bias, g.M, g.N, stream_);
        }
        MAGIX_CUDA_CHECK_LAUNCH("gemm bias");
      }
    } else {
      MAGIX_CHECK(g.beta == 1.0f, "gemm: an empty inner dimension takes beta 0 or 1");
    }
    return;
  }
  if (g.bias == nullptr) {
    if (!try_run(g, false)) {
      // No cuBLASLt algorithm (e.g. an odd leading dimension or alignment): the plain kernel.
      gemm_fallback(g.ta, g.tb, g.M, g.N, g.K, g.alpha, g.A, g.lda, g.B, g.ldb, g.beta, g.C, g.ldc,
                    g.ab == GemmType::kBF16, g.c == GemmType::kBF16, nullptr, stream_);
      MAGIX_CUDA_CHECK_LAUNCH("gemm (fallback kernel)");
    }
    return;
  }
  if (try_run(g, true)) return;
  // No algorithm with the bias epilogue: the product in fp32, then the bias (and the rounding).
  GemmCall plain = g;
  plain.bias = nullptr;
  if (g.c == GemmType::kF32) {
    run(plain);
    add_bias(static_cast<float*>(g.C), g.bias, g.M, g.N, stream_);
  } else {
    auto acc = allocator_->allocate(g.M * g.N * sizeof(float));
    plain.C = acc.get();
    plain.c = GemmType::kF32;
    run(plain);
    bias_round_bf16(static_cast<uint16_t*>(g.C), reinterpret_cast<float*>(acc.get()), g.bias, g.M,
                    g.N, stream_);
  }
  MAGIX_CUDA_CHECK_LAUNCH("gemm bias");
}

}  // namespace magix::cuda
