// The CUDA backend: the op table (backends/backend.hpp) over the kernels of this folder
// (kernels.hpp) and cuBLASLt (gemm.hpp). Each op's arguments are checked by Backend
// (backends/op_checks.cpp) before its kernel here enqueues work on the backend's stream. The ops
// over sequences and the vocabulary are in cuda_backend_sequence.cpp.
#include "backends/cuda/cuda_backend.hpp"

#include <atomic>
#include <cmath>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cuda/backend_internal.hpp"
#include "backends/cuda/cublaslt_library.hpp"
#include "backends/cuda/kernel_math.hpp"
#include "backends/cuda/kernels.hpp"

namespace magix::cuda {

using namespace access;  // the tensor accessors of backend_internal.hpp

namespace {
// The GPU the process's backend was created on (-1: not created yet).
std::atomic<int> g_backend_device{-1};
}  // namespace

CudaBackend::CudaBackend() : s_(std::make_unique<State>()) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) (void)cudaGetLastError();
  MAGIX_CHECK(err == cudaSuccess && count > 0, "no CUDA device visible: {}",
              err == cudaSuccess ? std::string("cudaGetDeviceCount found 0 devices")
                                 : fmt::format("cudaGetDeviceCount failed: {} ({})",
                                               cudaGetErrorString(err), cudaGetErrorName(err)));
  MAGIX_CUDA_CHECK(cudaGetDevice(&s_->device));
  g_backend_device.store(s_->device);
  MAGIX_CUDA_CHECK(cudaGetDeviceProperties(&s_->prop, s_->device));
  // A blocking stream: ordered with work on the legacy default stream (e.g. a library's).
  MAGIX_CUDA_CHECK(cudaStreamCreate(&s_->stream));
  s_->allocator = DeviceAllocator::create();
  s_->gemm = std::make_unique<Gemm>(s_->stream, s_->allocator);
}

CudaBackend::~CudaBackend() {
  if (s_ && s_->stream) {
    (void)cudaStreamSynchronize(s_->stream);
    s_->gemm.reset();
    (void)cudaStreamDestroy(s_->stream);
  }
}

Device CudaBackend::device() const {
  return Device::kCuda;
}

double CudaBackend::memory_bytes() const {
  return static_cast<double>(s_->prop.totalGlobalMem);
}

std::string CudaBackend::describe() const {
  int runtime = 0;
  (void)cudaRuntimeGetVersion(&runtime);
  return fmt::format(
      "cuda: device {} {} (sm_{}{}, {} SMs, {:.0f} GiB), CUDA runtime {}.{}, "
      "cuBLASLt {} ({})",
      s_->device, s_->prop.name, s_->prop.major, s_->prop.minor, s_->prop.multiProcessorCount,
      static_cast<double>(s_->prop.totalGlobalMem) / (1 << 30), runtime / 1000,
      (runtime % 1000) / 10, Gemm::version(), cublaslt().path);
}

void* CudaBackend::stream() const {
  return s_->stream;
}

void CudaBackend::synchronize() const {
  MAGIX_CUDA_CHECK(cudaStreamSynchronize(s_->stream));
}

Tensor CudaBackend::do_empty(const Shape& shape, DType dtype) const {
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  return Tensor::from_storage(shape, dtype, Device::kCuda, s_->allocator->allocate(bytes));
}

Tensor CudaBackend::do_zeros(const Shape& shape, DType dtype) const {
  Tensor t = empty(shape, dtype);
  fill_zero(t);
  return t;
}

void CudaBackend::do_fill_zero(Tensor& t) const {
  if (t.nbytes() > 0) MAGIX_CUDA_CHECK(cudaMemsetAsync(t.bytes(), 0, t.nbytes(), s_->stream));
}

void CudaBackend::do_copy(Tensor& dst, const Tensor& src) const {
  const bool dst_dev = dst.device() == Device::kCuda, src_dev = src.device() == Device::kCuda;
  if (!dst_dev && !src_dev) {
    cpu::cpu_backend().copy(dst, src);
    return;
  }
  const int64_t n = dst.numel();
  const cudaStream_t st = s_->stream;
  if (dst.dtype() == src.dtype()) {
    if (dst.nbytes() == 0 || dst.bytes() == src.bytes()) return;
    const cudaMemcpyKind kind = dst_dev
                                    ? (src_dev ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                    : cudaMemcpyDeviceToHost;
    MAGIX_CUDA_CHECK(cudaMemcpyAsync(dst.bytes(), src.bytes(), dst.nbytes(), kind, st));
    // To or from the host: done when copy returns (the host buffer may be freed or read then).
    if (!dst_dev || !src_dev) MAGIX_CUDA_CHECK(cudaStreamSynchronize(st));
    return;
  }
  const bool to_bf16 = is(dst, DType::kBF16);  // else BF16 to F32 (the op's check)
  if (n == 0) return;
  // Converted on the device: the host side is first uploaded, or the result downloaded.
  Tensor s_dev = src, d_dev = dst;
  if (!src_dev) {
    s_dev = empty(src.shape(), src.dtype());
    MAGIX_CUDA_CHECK(
        cudaMemcpyAsync(s_dev.bytes(), src.bytes(), src.nbytes(), cudaMemcpyHostToDevice, st));
  }
  if (!dst_dev) d_dev = empty(dst.shape(), dst.dtype());
  if (to_bf16) {
    convert_f32_to_bf16(d_dev.data<uint16_t>(), f32(s_dev), n, st);
  } else {
    convert_bf16_to_f32(f32(d_dev), s_dev.data<uint16_t>(), n, st);
  }
  MAGIX_CUDA_CHECK_LAUNCH("copy");
  if (!dst_dev) {
    MAGIX_CUDA_CHECK(
        cudaMemcpyAsync(dst.bytes(), d_dev.bytes(), dst.nbytes(), cudaMemcpyDeviceToHost, st));
    MAGIX_CUDA_CHECK(cudaStreamSynchronize(st));
  } else if (!src_dev) {
    MAGIX_CUDA_CHECK(cudaStreamSynchronize(st));  // the host source may be freed on return
  }
}

void CudaBackend::do_add(Tensor& dst, const Tensor& src) const {
  add_f32(f32(dst), f32(src), dst.numel(), s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("add");
}

void CudaBackend::do_scale(Tensor& x, float s) const {
  scale_f32(f32(x), s, x.numel(), s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("scale");
}

void CudaBackend::do_dropout(Tensor& out, const Tensor& inp, uint64_t key, int64_t row0,
                             int64_t col0, int64_t cols, float p) const {
  const Mat x = mat(inp);
  const auto threshold = static_cast<uint64_t>(std::llround(double(p) * 16777216.0));
  const float keep_scale = 1.0f / (1.0f - p);
  cuda::dropout(f32(out), raw(inp), is(inp, DType::kBF16), x.rows, x.cols, key, row0, col0, cols,
                threshold, keep_scale, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("dropout");
}

void CudaBackend::do_matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight,
                                    const Tensor* bias) const {
  const Mat x = mat(inp), w = mat(weight);
  GemmCall g;
  g.tb = true;
  g.M = x.rows, g.N = w.rows, g.K = x.cols;
  g.A = raw(inp), g.lda = x.cols;
  g.B = raw(weight), g.ldb = x.cols;
  g.C = raw(out), g.ldc = w.rows;
  g.bias = f32_or_null(bias);
  // F32 x F32 -> F32, or BF16 x BF16 -> F32 or BF16.
  g.ab = is(inp, DType::kBF16) ? GemmType::kBF16 : GemmType::kF32;
  g.c = is(out, DType::kBF16) ? GemmType::kBF16 : GemmType::kF32;
  s_->gemm->run(g);
}

void CudaBackend::do_matmul_backward(Tensor* dinp, Tensor* dweight, Tensor* dbias,
                                     const Tensor& dout, const Tensor& inp,
                                     const Tensor& weight) const {
  const Mat x = mat(inp), w = mat(weight);
  const GemmType ab = is(dout, DType::kBF16) ? GemmType::kBF16 : GemmType::kF32;
  const int64_t N = x.rows, C = x.cols, OC = w.rows;
  if (dinp) {  // dinp (N, C) += dout (N, OC) · weight (OC, C)
    s_->gemm->run({false, false, N, C, OC, 1.0f, raw(dout), OC, raw(weight), C, 1.0f, raw(*dinp), C,
                   ab, GemmType::kF32, nullptr});
  }
  if (dweight) {  // dweight (OC, C) += doutᵀ (OC, N) · inp (N, C)
    s_->gemm->run({true, false, OC, C, N, 1.0f, raw(dout), OC, raw(inp), C, 1.0f, raw(*dweight), C,
                   ab, GemmType::kF32, nullptr});
  }
  if (dbias) {
    column_sums(f32(*dbias), raw(dout), ab == GemmType::kBF16, N, OC, s_->stream);
    MAGIX_CUDA_CHECK_LAUNCH("matmul_backward");
  }
}

void CudaBackend::do_matmul_decode(Tensor& out, const Tensor& inp, const Tensor& weight,
                                   const Tensor* bias) const {
  const char* op = "matmul_decode";
  const bool w_bf16 = is(weight, DType::kBF16);
  const Mat x = mat(inp), w = mat(weight);
  const int64_t N = x.rows, C = x.cols, OC = w.rows;
  if (N <= kDecodeRows) {
    matmul_decode_rows(f32(out), f32(inp), raw(weight), w_bf16, f32_or_null(bias), N, C, OC,
                       s_->stream);
    MAGIX_CUDA_CHECK_LAUNCH(op);
    return;
  }
  // Many rows: a GEMM (bf16 weight: of the rows rounded to bf16, as the CPU backend).
  GemmCall g{
      false,       true, N,    OC,       C,  1.0f,           raw(inp),       C,
      raw(weight), C,    0.0f, raw(out), OC, GemmType::kF32, GemmType::kF32, f32_or_null(bias)};
  Tensor rows;
  if (w_bf16) {
    rows = empty(inp.shape(), DType::kBF16);
    convert_f32_to_bf16(rows.data<uint16_t>(), f32(inp), inp.numel(), s_->stream);
    MAGIX_CUDA_CHECK_LAUNCH(op);
    g.A = raw(rows);
    g.ab = GemmType::kBF16;
  }
  s_->gemm->run(g);
}

void CudaBackend::do_residual_forward(Tensor& out, const Tensor& residual, const Tensor& y,
                                      const Tensor* bias) const {
  const Mat m = mat(out);
  cuda::residual_forward(f32(out), f32(residual), f32(y), f32_or_null(bias), m.rows, m.cols,
                         s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("residual_forward");
}

void CudaBackend::do_bias_backward(Tensor& dbias, const Tensor& dout) const {
  const Mat m = mat(dout);
  column_sums(f32(dbias), raw(dout), false, m.rows, m.cols, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("bias_backward");
}

void CudaBackend::do_rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& inp,
                                     const Tensor& weight, float eps, float offset) const {
  const Mat m = mat(inp);
  cuda::rmsnorm_forward(raw(out), is(out, DType::kBF16), f32(rstd), f32(inp), f32(weight), m.rows,
                        m.cols, eps, offset, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("rmsnorm_forward");
}

void CudaBackend::do_rmsnorm_backward(Tensor& dinp, Tensor* dweight, const Tensor& dout,
                                      const Tensor& inp, const Tensor& weight, const Tensor& rstd,
                                      float offset) const {
  const Mat m = mat(inp);
  cuda::rmsnorm_backward(f32(dinp), dweight ? f32(*dweight) : nullptr, f32(dout), f32(inp),
                         f32(weight), f32(rstd), m.rows, m.cols, offset, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("rmsnorm_backward");
}

void CudaBackend::do_softcap_forward(Tensor& x, float cap) const {
  cuda::softcap_forward(raw(x), is(x, DType::kBF16), x.numel(), cap, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("softcap_forward");
}

void CudaBackend::do_softcap_backward(Tensor& dx, const Tensor& y, float cap) const {
  cuda::softcap_backward(raw(dx), raw(y), is(dx, DType::kBF16), dx.numel(), cap, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("softcap_backward");
}

void CudaBackend::do_glu_forward(Tensor& out, const Tensor& gate, const Tensor& up,
                                 Activation act) const {
  cuda::glu_forward(raw(out), raw(gate), raw(up), is(gate, DType::kBF16), gate.numel(),
                    act == Activation::kGeluTanh, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("glu_forward");
}

void CudaBackend::do_glu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout,
                                  const Tensor& gate, const Tensor& up, Activation act) const {
  cuda::glu_backward(raw(dgate), raw(dup), f32(dout), raw(gate), raw(up), is(gate, DType::kBF16),
                     dout.numel(), act == Activation::kGeluTanh, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("glu_backward");
}

void CudaBackend::do_adamw_update(Tensor& w, const Tensor& g, Tensor& m, Tensor& v,
                                  const AdamWScalars& k) const {
  const AdamWArgs args{k.grad_scale, k.beta1, k.beta2, k.bias1,
                       k.bias2,      k.eps,   k.lr,    k.weight_decay};
  cuda::adamw_update(raw(w), is(w, DType::kBF16), f32(g), f32(m), f32(v), w.numel(), args,
                     s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("adamw_update");
}

double CudaBackend::do_sum_of_squares(const Tensor& g) const {
  const int64_t blocks = sum_of_squares_blocks(g.numel());
  auto scratch = s_->allocator->allocate(static_cast<size_t>(blocks + 1) * sizeof(double));
  auto* result = reinterpret_cast<double*>(scratch.get());
  cuda::sum_of_squares(result, result + 1, f32(g), g.numel(), s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("sum_of_squares");
  double total = 0;
  MAGIX_CUDA_CHECK(
      cudaMemcpyAsync(&total, result, sizeof total, cudaMemcpyDeviceToHost, s_->stream));
  MAGIX_CUDA_CHECK(cudaStreamSynchronize(s_->stream));
  return total;
}

void CudaBackend::do_lora_merge(Tensor& w, const Tensor& a, const Tensor& b, float scale,
                                const Tensor* base) const {
  if (base) copy(w, *base);  // w = base (converted), then w += scale · b · a
  const int64_t O = w.dim(0), I = w.dim(1), r = a.dim(0);
  s_->gemm->run({false, false, O, I, r, scale, raw(b), r, raw(a), I, 1.0f, raw(w), I,
                 GemmType::kF32, GemmType::kF32, nullptr});
}

void CudaBackend::do_lora_project(Tensor& da, Tensor& db, const Tensor& dw, const Tensor& a,
                                  const Tensor& b, float scale) const {
  const int64_t O = dw.dim(0), I = dw.dim(1), r = a.dim(0);
  // da (r, I) += scale · bᵀ (r, O) · dw (O, I)
  s_->gemm->run({true, false, r, I, O, scale, raw(b), r, raw(dw), I, 1.0f, raw(da), I,
                 GemmType::kF32, GemmType::kF32, nullptr});
  // db (O, r) = scale · dw (O, I) · aᵀ (I, r)
  s_->gemm->run({false, true, O, r, I, scale, raw(dw), I, raw(a), I, 0.0f, raw(db), r,
                 GemmType::kF32, GemmType::kF32, nullptr});
}

int visible_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

void set_device(int index) {
  const int bound = g_backend_device.load();
  MAGIX_CHECK(bound < 0 || bound == index,
              "the CUDA backend already runs on GPU {}; GPU {} must be selected before it is "
              "first used",
              bound, index);
  MAGIX_CUDA_CHECK(cudaSetDevice(index));
}

const CudaBackend& cuda_backend() {
  static const CudaBackend backend;
  return backend;
}

}  // namespace magix::cuda
