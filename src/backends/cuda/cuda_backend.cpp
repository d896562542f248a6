// The CUDA backend: the op table (backends/backend.hpp) over the kernels of this folder
// (kernels.hpp) and cuBLASLt (gemm.hpp). Each op checks its tensors (device, dtype, shape) as the
// CPU backend does, then enqueues its kernels on the backend's stream.
#include "backends/cuda/cuda_backend.hpp"

#include <array>
#include <cmath>
#include <cstring>
#include <initializer_list>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cuda/cublaslt_library.hpp"
#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/device_memory.hpp"
#include "backends/cuda/gemm.hpp"
#include "backends/cuda/kernel_math.hpp"
#include "backends/cuda/kernels.hpp"

namespace magix::cuda {

struct CudaBackend::State {
  int device = 0;
  cudaDeviceProp prop{};
  cudaStream_t stream = nullptr;
  std::shared_ptr<DeviceAllocator> allocator;
  std::unique_ptr<Gemm> gemm;
};

namespace {

struct Mat {
  int64_t rows, cols;
};

Mat mat(const Tensor& t) {
  if (t.ndim() == 0) return {1, 1};
  const int64_t cols = t.dim(-1);
  return {cols == 0 ? 0 : t.numel() / cols, cols};
}

void check_cuda(const char* op, const Tensor& t) {
  MAGIX_CHECK(t.defined(), "{}: an undefined tensor", op);
  MAGIX_CHECK(t.device() == Device::kCuda, "{}: a {} tensor given to the cuda backend", op,
              device_name(t.device()));
}

void check_dtype(const char* op, const char* what, const Tensor& t, DType want) {
  check_cuda(op, t);
  MAGIX_CHECK(t.dtype() == want, "{}: {} is {}, must be {}", op, what, dtype_name(t.dtype()),
              dtype_name(want));
}

void check_numel(const char* op, const char* what, const Tensor& t, int64_t want) {
  MAGIX_CHECK(t.numel() == want, "{}: {} has {} elements {}, expected {}", op, what, t.numel(),
              shape_str(t.shape()), want);
}

// F32 or BF16; true for BF16.
bool float_kind(const char* op, const char* what, const Tensor& t) {
  check_cuda(op, t);
  MAGIX_CHECK(t.dtype() == DType::kF32 || t.dtype() == DType::kBF16,
              "{}: {} is {}, must be F32 or BF16", op, what, dtype_name(t.dtype()));
  return t.dtype() == DType::kBF16;
}

[[noreturn]] void unsupported(const char* op, const Tensor& a, const Tensor& b) {
  MAGIX_FAIL("{}: the cuda backend has no kernel for {} x {}", op, dtype_name(a.dtype()),
             dtype_name(b.dtype()));
}

bool is(const Tensor& t, DType d) {
  return t.dtype() == d;
}

// Device pointers (the backend's own storage; never dereferenced on the host).
float* f32(Tensor& t) {
  return t.data<float>();
}
const float* f32(const Tensor& t) {
  return t.data<float>();
}
const float* f32_or_null(const Tensor* t) {
  return t ? t->data<float>() : nullptr;
}
const int32_t* i32(const Tensor& t) {
  return t.data<int32_t>();
}
void* raw(Tensor& t) {
  return t.bytes();
}
const void* raw(const Tensor& t) {
  return t.bytes();
}

struct Heads {
  int64_t B, T, H, D;
};

Heads heads(const char* op, const char* what, const Tensor& t) {
  MAGIX_CHECK(t.ndim() == 4, "{}: {} must be (B, T, H, D), got {}", op, what, shape_str(t.shape()));
  return {t.dim(0), t.dim(1), t.dim(2), t.dim(3)};
}

// Sizes the attention kernels take (grid dims, head dim held in registers).
void check_attention_sizes(const char* op, int64_t B, int64_t Hq, int64_t Hkv, int64_t D) {
  MAGIX_CHECK(Hq > 0 && Hkv > 0 && Hq % Hkv == 0,
              "{}: {} query heads is not a multiple of {} kv heads", op, Hq, Hkv);
  MAGIX_CHECK(D > 0 && D <= kMaxHeadDim, "{}: head dim {} outside the cuda kernels' 1..{}", op, D,
              kMaxHeadDim);
  MAGIX_CHECK(B <= 65535 && Hq <= 65535, "{}: B={} or Hq={} above the grid's 65535", op, B, Hq);
}

AttentionArgs attention_args(const char* op, const magix::AttentionMask& m, const Heads& hq,
                             int64_t Hkv, float scale) {
  check_attention_sizes(op, hq.B, hq.H, Hkv, hq.D);
  AttentionArgs a{hq.B, hq.T, hq.H, Hkv, hq.D, scale, nullptr, nullptr, m.window, m.softcap};
  if (m.key_valid) {
    check_dtype(op, "key_valid", *m.key_valid, DType::kI32);
    check_numel(op, "key_valid", *m.key_valid, hq.B * hq.T);
    a.key_valid = i32(*m.key_valid);
  }
  if (m.segment) {
    check_dtype(op, "segment", *m.segment, DType::kI32);
    check_numel(op, "segment", *m.segment, hq.B * hq.T);
    a.segment = i32(*m.segment);
  }
  return a;
}

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

Tensor CudaBackend::empty(const Shape& shape, DType dtype) const {
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  return Tensor::from_storage(shape, dtype, Device::kCuda, s_->allocator->allocate(bytes));
}

Tensor CudaBackend::zeros(const Shape& shape, DType dtype) const {
  Tensor t = empty(shape, dtype);
  fill_zero(t);
  return t;
}

void CudaBackend::fill_zero(Tensor& t) const {
  check_cuda("fill_zero", t);
  if (t.nbytes() > 0) MAGIX_CUDA_CHECK(cudaMemsetAsync(t.bytes(), 0, t.nbytes(), s_->stream));
}

void CudaBackend::copy(Tensor& dst, const Tensor& src) const {
  const char* op = "copy";
  MAGIX_CHECK(dst.defined() && src.defined(), "{}: an undefined tensor", op);
  check_numel(op, "src", src, dst.numel());
  const bool dst_dev = dst.device() == Device::kCuda, src_dev = src.device() == Device::kCuda;
  MAGIX_CHECK(
      (dst_dev || dst.device() == Device::kCpu) && (src_dev || src.device() == Device::kCpu),
      "{}: the cuda backend copies between cuda and cpu tensors, not {} -> {}", op,
      device_name(src.device()), device_name(dst.device()));
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
  const bool to_bf16 = dst.dtype() == DType::kBF16 && src.dtype() == DType::kF32;
  const bool to_f32 = dst.dtype() == DType::kF32 && src.dtype() == DType::kBF16;
  MAGIX_CHECK(to_bf16 || to_f32, "{}: no conversion from {} to {} ({} elements)", op,
              dtype_name(src.dtype()), dtype_name(dst.dtype()), n);
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
  MAGIX_CUDA_CHECK_LAUNCH(op);
  if (!dst_dev) {
    MAGIX_CUDA_CHECK(
        cudaMemcpyAsync(dst.bytes(), d_dev.bytes(), dst.nbytes(), cudaMemcpyDeviceToHost, st));
    MAGIX_CUDA_CHECK(cudaStreamSynchronize(st));
  } else if (!src_dev) {
    MAGIX_CUDA_CHECK(cudaStreamSynchronize(st));  // the host source may be freed on return
  }
}

void CudaBackend::add(Tensor& dst, const Tensor& src) const {
  check_dtype("add", "dst", dst, DType::kF32);
  check_dtype("add", "src", src, DType::kF32);
  check_numel("add", "src", src, dst.numel());
  add_f32(f32(dst), f32(src), dst.numel(), s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("add");
}

void CudaBackend::scale(Tensor& x, float s) const {
  check_dtype("scale", "x", x, DType::kF32);
  scale_f32(f32(x), s, x.numel(), s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("scale");
}

void CudaBackend::dropout(Tensor& out, const Tensor& inp, uint64_t key, int64_t row0, int64_t col0,
                          int64_t cols, float p) const {
  const char* op = "dropout";
  check_dtype(op, "out", out, DType::kF32);
  const bool bf16 = float_kind(op, "inp", inp);
  check_numel(op, "out", out, inp.numel());
  MAGIX_CHECK(p >= 0 && p < 1, "{}: p must be in [0, 1), got {}", op, p);
  const Mat x = mat(inp);
  MAGIX_CHECK(row0 >= 0 && col0 >= 0 && col0 + x.cols <= cols,
              "{}: columns [{}, {}) outside the {} global columns", op, col0, col0 + x.cols, cols);
  const auto threshold = static_cast<uint64_t>(std::llround(double(p) * 16777216.0));
  const float keep_scale = 1.0f / (1.0f - p);
  cuda::dropout(f32(out), raw(inp), bf16, x.rows, x.cols, key, row0, col0, cols, threshold,
                keep_scale, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight,
                                 const Tensor* bias) const {
  const char* op = "matmul_forward";
  check_cuda(op, out);
  check_cuda(op, inp);
  check_cuda(op, weight);
  const Mat x = mat(inp), w = mat(weight);
  MAGIX_CHECK(weight.ndim() == 2 && x.cols == w.cols,
              "{}: inp {} and weight {} do not chain (weight is (OC, C))", op,
              shape_str(inp.shape()), shape_str(weight.shape()));
  check_numel(op, "out", out, x.rows * w.rows);
  if (bias) {
    check_dtype(op, "bias", *bias, DType::kF32);
    check_numel(op, "bias", *bias, w.rows);
  }
  GemmCall g;
  g.tb = true;
  g.M = x.rows, g.N = w.rows, g.K = x.cols;
  g.A = raw(inp), g.lda = x.cols;
  g.B = raw(weight), g.ldb = x.cols;
  g.C = raw(out), g.ldc = w.rows;
  g.bias = f32_or_null(bias);
  if (is(inp, DType::kF32) && is(weight, DType::kF32) && is(out, DType::kF32)) {
    g.ab = g.c = GemmType::kF32;
  } else if (is(inp, DType::kBF16) && is(weight, DType::kBF16) &&
             (is(out, DType::kF32) || is(out, DType::kBF16))) {
    g.ab = GemmType::kBF16;
    g.c = is(out, DType::kF32) ? GemmType::kF32 : GemmType::kBF16;
  } else {
    unsupported(op, inp, weight);
  }
  s_->gemm->run(g);
}

void CudaBackend::matmul_backward(Tensor* dinp, Tensor* dweight, Tensor* dbias, const Tensor& dout,
                                  const Tensor& inp, const Tensor& weight) const {
  const char* op = "matmul_backward";
  check_cuda(op, dout);
  check_cuda(op, inp);
  check_cuda(op, weight);
  const Mat x = mat(inp), w = mat(weight);
  MAGIX_CHECK(weight.ndim() == 2 && x.cols == w.cols,
              "{}: inp {} and weight {} do not chain (weight is (OC, C))", op,
              shape_str(inp.shape()), shape_str(weight.shape()));
  check_numel(op, "dout", dout, x.rows * w.rows);
  if (dinp) {
    check_dtype(op, "dinp", *dinp, DType::kF32);
    check_numel(op, "dinp", *dinp, inp.numel());
  }
  if (dweight) {
    check_dtype(op, "dweight", *dweight, DType::kF32);
    check_numel(op, "dweight", *dweight, weight.numel());
  }
  if (dbias) {
    check_dtype(op, "dbias", *dbias, DType::kF32);
    check_numel(op, "dbias", *dbias, w.rows);
  }
  GemmType ab;
  if (is(dout, DType::kF32) && is(inp, DType::kF32) && is(weight, DType::kF32)) {
    ab = GemmType::kF32;
  } else if (is(dout, DType::kBF16) && is(inp, DType::kBF16) && is(weight, DType::kBF16)) {
    ab = GemmType::kBF16;
  } else {
    unsupported(op, dout, inp);
  }
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
    MAGIX_CUDA_CHECK_LAUNCH(op);
  }
}

void CudaBackend::matmul_decode(Tensor& out, const Tensor& inp, const Tensor& weight,
                                const Tensor* bias) const {
  const char* op = "matmul_decode";
  check_dtype(op, "inp", inp, DType::kF32);
  check_dtype(op, "out", out, DType::kF32);
  const bool w_bf16 = float_kind(op, "weight", weight);
  const Mat x = mat(inp), w = mat(weight);
  MAGIX_CHECK(weight.ndim() == 2 && x.cols == w.cols,
              "{}: inp {} and weight {} do not chain (weight is (OC, C))", op,
              shape_str(inp.shape()), shape_str(weight.shape()));
  check_numel(op, "out", out, x.rows * w.rows);
  if (bias) {
    check_dtype(op, "bias", *bias, DType::kF32);
    check_numel(op, "bias", *bias, w.rows);
  }
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

void CudaBackend::residual_forward(Tensor& out, const Tensor& residual, const Tensor& y,
                                   const Tensor* bias) const {
  const char* op = "residual_forward";
  check_dtype(op, "out", out, DType::kF32);
  check_dtype(op, "residual", residual, DType::kF32);
  check_dtype(op, "y", y, DType::kF32);
  const Mat m = mat(out);
  check_numel(op, "residual", residual, out.numel());
  check_numel(op, "y", y, out.numel());
  if (bias) {
    check_dtype(op, "bias", *bias, DType::kF32);
    check_numel(op, "bias", *bias, m.cols);
  }
  cuda::residual_forward(f32(out), f32(residual), f32(y), f32_or_null(bias), m.rows, m.cols,
                         s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::bias_backward(Tensor& dbias, const Tensor& dout) const {
  const char* op = "bias_backward";
  check_dtype(op, "dbias", dbias, DType::kF32);
  check_dtype(op, "dout", dout, DType::kF32);
  const Mat m = mat(dout);
  check_numel(op, "dbias", dbias, m.cols);
  column_sums(f32(dbias), raw(dout), false, m.rows, m.cols, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& inp,
                                  const Tensor& weight, float eps, float offset) const {
  const char* op = "rmsnorm_forward";
  check_dtype(op, "inp", inp, DType::kF32);
  check_dtype(op, "weight", weight, DType::kF32);
  check_dtype(op, "rstd", rstd, DType::kF32);
  const bool bf16 = float_kind(op, "out", out);
  const Mat m = mat(inp);
  check_numel(op, "out", out, inp.numel());
  check_numel(op, "weight", weight, m.cols);
  check_numel(op, "rstd", rstd, m.rows);
  MAGIX_CHECK(m.rows == 0 || m.cols > 0, "{}: rows of 0 channels", op);
  cuda::rmsnorm_forward(raw(out), bf16, f32(rstd), f32(inp), f32(weight), m.rows, m.cols, eps,
                        offset, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::rmsnorm_backward(Tensor& dinp, Tensor* dweight, const Tensor& dout,
                                   const Tensor& inp, const Tensor& weight, const Tensor& rstd,
                                   float offset) const {
  const char* op = "rmsnorm_backward";
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dinp, &dout, &inp, &weight, &rstd})
    check_dtype(op, "every tensor", *t, DType::kF32);
  const Mat m = mat(inp);
  check_numel(op, "dinp", dinp, inp.numel());
  check_numel(op, "dout", dout, inp.numel());
  check_numel(op, "weight", weight, m.cols);
  check_numel(op, "rstd", rstd, m.rows);
  if (dweight) {
    check_dtype(op, "dweight", *dweight, DType::kF32);
    check_numel(op, "dweight", *dweight, m.cols);
  }
  MAGIX_CHECK(m.rows == 0 || m.cols > 0, "{}: rows of 0 channels", op);
  cuda::rmsnorm_backward(f32(dinp), dweight ? f32(*dweight) : nullptr, f32(dout), f32(inp),
                         f32(weight), f32(rstd), m.rows, m.cols, offset, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::rope_table(Tensor& table, const Tensor& pos, const Tensor& inv_freq) const {
  const char* op = "rope_table";
  check_dtype(op, "table", table, DType::kF32);
  check_dtype(op, "pos", pos, DType::kI32);
  check_dtype(op, "inv_freq", inv_freq, DType::kF32);
  const int64_t D = 2 * inv_freq.numel(), N = pos.numel();
  MAGIX_CHECK(D > 0, "{}: no frequencies", op);
  check_numel(op, "table", table, N * D);
  cuda::rope_table(f32(table), i32(pos), f32(inv_freq), N, D, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

namespace {

// (N, H, D) of a rope operand against its table (N, D).
std::array<int64_t, 3> rope_dims(const char* op, const Tensor& x, const Tensor& table) {
  check_cuda(op, x);
  check_dtype(op, "table", table, DType::kF32);
  const Mat t = mat(table);
  MAGIX_CHECK(t.rows > 0 && t.cols > 0 && t.cols % 2 == 0 && x.numel() % (t.rows * t.cols) == 0,
              "{}: x {} is not (N={}, H, D={}) for the table {}", op, shape_str(x.shape()), t.rows,
              t.cols, shape_str(table.shape()));
  return {t.rows, x.numel() / (t.rows * t.cols), t.cols};
}

}  // namespace

void CudaBackend::rope_forward(Tensor& x, const Tensor& table) const {
  const auto [N, H, D] = rope_dims("rope_forward", x, table);
  const bool bf16 = float_kind("rope_forward", "x", x);
  rope_rotate(raw(x), bf16, f32(table), N, H, D, 1.0f, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("rope_forward");
}

void CudaBackend::rope_backward(Tensor& dx, const Tensor& table) const {
  const auto [N, H, D] = rope_dims("rope_backward", dx, table);
  check_dtype("rope_backward", "dx", dx, DType::kF32);
  rope_rotate(raw(dx), false, f32(table), N, H, D, -1.0f, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH("rope_backward");
}

void CudaBackend::attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                                    const Tensor& v, float scale,
                                    const magix::AttentionMask& mask) const {
  const char* op = "attention_forward";
  for (const Tensor* t : std::initializer_list<const Tensor*>{&out, &q, &k, &v}) check_cuda(op, *t);
  const Heads hq = heads(op, "q", q), hk = heads(op, "k", k);
  MAGIX_CHECK(hk.B == hq.B && hk.T == hq.T && hk.D == hq.D && v.shape() == k.shape() &&
                  out.shape() == q.shape(),
              "{}: q {}, k {}, v {}, out {} do not match", op, shape_str(q.shape()),
              shape_str(k.shape()), shape_str(v.shape()), shape_str(out.shape()));
  check_dtype(op, "lse", lse, DType::kF32);
  check_numel(op, "lse", lse, hq.B * hq.H * hq.T);
  const bool all_f32 =
      is(q, DType::kF32) && is(k, DType::kF32) && is(v, DType::kF32) && is(out, DType::kF32);
  const bool all_bf16 =
      is(q, DType::kBF16) && is(k, DType::kBF16) && is(v, DType::kBF16) && is(out, DType::kBF16);
  if (!all_f32 && !all_bf16) unsupported(op, q, k);
  const AttentionArgs a = attention_args(op, mask, hq, hk.H, scale);
  cuda::attention_forward(raw(out), f32(lse), raw(q), raw(k), raw(v), all_bf16, a, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                                     const Tensor& out, const Tensor& lse, const Tensor& q,
                                     const Tensor& k, const Tensor& v, float scale,
                                     const magix::AttentionMask& mask) const {
  const char* op = "attention_backward";
  const Heads hq = heads(op, "q", q), hk = heads(op, "k", k);
  MAGIX_CHECK(hk.B == hq.B && hk.T == hq.T && hk.D == hq.D && v.shape() == k.shape() &&
                  out.shape() == q.shape() && dout.shape() == q.shape() &&
                  dq.shape() == q.shape() && dk.shape() == k.shape() && dv.shape() == k.shape(),
              "{}: q {}, k {}, v {} and their gradients do not match", op, shape_str(q.shape()),
              shape_str(k.shape()), shape_str(v.shape()));
  check_dtype(op, "lse", lse, DType::kF32);
  check_numel(op, "lse", lse, hq.B * hq.H * hq.T);
  bool all_f32 = true, inputs_bf16 = true;
  for (const Tensor* t :
       std::initializer_list<const Tensor*>{&dq, &dk, &dv, &dout, &out, &q, &k, &v}) {
    check_cuda(op, *t);
    all_f32 = all_f32 && is(*t, DType::kF32);
  }
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dout, &out, &q, &k, &v})
    inputs_bf16 = inputs_bf16 && is(*t, DType::kBF16);
  const bool grads_f32 = is(dq, DType::kF32) && is(dk, DType::kF32) && is(dv, DType::kF32);
  if (!all_f32 && !(inputs_bf16 && grads_f32)) unsupported(op, q, dout);
  const AttentionArgs a = attention_args(op, mask, hq, hk.H, scale);
  Tensor row_dot = empty({hq.B * hq.H * hq.T}, DType::kF32);
  cuda::attention_backward(f32(dq), f32(dk), f32(dv), raw(dout), raw(out), f32(lse), raw(q), raw(k),
                           raw(v), inputs_bf16, f32(row_dot), a, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache,
                                   const Tensor& v_cache, const Tensor& valid, int64_t slot,
                                   float scale, int64_t window, float softcap) const {
  const char* op = "attention_decode";
  check_dtype(op, "q", q, DType::kF32);
  check_dtype(op, "out", out, DType::kF32);
  check_cuda(op, k_cache);
  check_cuda(op, v_cache);
  MAGIX_CHECK(
      (is(k_cache, DType::kF32) || is(k_cache, DType::kBF16)) && v_cache.dtype() == k_cache.dtype(),
      "{}: the cache is {} / {}, must be F32 or BF16 (both)", op, dtype_name(k_cache.dtype()),
      dtype_name(v_cache.dtype()));
  check_dtype(op, "valid", valid, DType::kI32);
  const Heads c = heads(op, "k_cache", k_cache);  // (B, S, Hkv, D)
  MAGIX_CHECK(c.H > 0 && c.D > 0 && q.ndim() == 3 && q.dim(1) > 0,
              "{}: empty heads: q {}, cache {}", op, shape_str(q.shape()),
              shape_str(k_cache.shape()));
  MAGIX_CHECK(q.ndim() == 3 && q.dim(0) == c.B && q.dim(2) == c.D && out.shape() == q.shape() &&
                  v_cache.shape() == k_cache.shape() && q.dim(1) % c.H == 0,
              "{}: q {} (B, Hq, D) does not match the cache {} (B, S, Hkv, D)", op,
              shape_str(q.shape()), shape_str(k_cache.shape()));
  check_numel(op, "valid", valid, c.B * c.T);
  MAGIX_CHECK(slot >= 0 && slot < c.T, "{}: slot {} outside the cache's {} slots", op, slot, c.T);
  check_attention_sizes(op, 1, q.dim(1), c.H, c.D);
  cuda::attention_decode(f32(out), f32(q), raw(k_cache), raw(v_cache), is(k_cache, DType::kBF16),
                         i32(valid), c.B, c.T, q.dim(1), c.H, c.D, slot, scale, window, softcap,
                         s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::softcap_forward(Tensor& x, float cap) const {
  const char* op = "softcap_forward";
  const bool bf16 = float_kind(op, "x", x);
  MAGIX_CHECK(cap > 0, "{}: cap must be positive, got {}", op, cap);
  cuda::softcap_forward(raw(x), bf16, x.numel(), cap, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::softcap_backward(Tensor& dx, const Tensor& y, float cap) const {
  const char* op = "softcap_backward";
  check_cuda(op, dx);
  check_cuda(op, y);
  MAGIX_CHECK(cap > 0, "{}: cap must be positive, got {}", op, cap);
  check_numel(op, "y", y, dx.numel());
  const bool f = is(dx, DType::kF32) && is(y, DType::kF32);
  const bool h = is(dx, DType::kBF16) && is(y, DType::kBF16);
  if (!f && !h) unsupported(op, dx, y);
  cuda::softcap_backward(raw(dx), raw(y), h, dx.numel(), cap, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::glu_forward(Tensor& out, const Tensor& gate, const Tensor& up,
                              Activation act) const {
  const char* op = "glu_forward";
  check_cuda(op, out);
  check_cuda(op, gate);
  check_cuda(op, up);
  check_numel(op, "up", up, gate.numel());
  check_numel(op, "out", out, gate.numel());
  const bool f = is(gate, DType::kF32) && is(up, DType::kF32) && is(out, DType::kF32);
  const bool h = is(gate, DType::kBF16) && is(up, DType::kBF16) && is(out, DType::kBF16);
  if (!f && !h) unsupported(op, gate, out);
  cuda::glu_forward(raw(out), raw(gate), raw(up), h, gate.numel(), act == Activation::kGeluTanh,
                    s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::glu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                               const Tensor& up, Activation act) const {
  const char* op = "glu_backward";
  check_dtype(op, "dout", dout, DType::kF32);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dgate, &dup, &gate, &up}) {
    check_cuda(op, *t);
    check_numel(op, "gate/up and their gradients", *t, dout.numel());
  }
  const bool f = is(dgate, DType::kF32) && is(dup, DType::kF32) && is(gate, DType::kF32) &&
                 is(up, DType::kF32);
  const bool h = is(dgate, DType::kBF16) && is(dup, DType::kBF16) && is(gate, DType::kBF16) &&
                 is(up, DType::kBF16);
  if (!f && !h) unsupported(op, gate, dgate);
  cuda::glu_backward(raw(dgate), raw(dup), f32(dout), raw(gate), raw(up), h, dout.numel(),
                     act == Activation::kGeluTanh, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::embedding_forward(Tensor& out, const Tensor& ids, const Tensor& table,
                                    int64_t row_start, float scale) const {
  const char* op = "embedding_forward";
  check_dtype(op, "out", out, DType::kF32);
  check_dtype(op, "ids", ids, DType::kI32);
  check_dtype(op, "table", table, DType::kF32);
  const Mat t = mat(table);
  check_numel(op, "out", out, ids.numel() * t.cols);
  MAGIX_CHECK(row_start >= 0, "{}: row_start {} < 0", op, row_start);
  cuda::embedding_forward(f32(out), i32(ids), f32(table), ids.numel(), t.cols, row_start, t.rows,
                          scale, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& ids,
                                     int64_t row_start, float scale) const {
  const char* op = "embedding_backward";
  check_dtype(op, "dtable", dtable, DType::kF32);
  check_dtype(op, "dout", dout, DType::kF32);
  check_dtype(op, "ids", ids, DType::kI32);
  const Mat t = mat(dtable);
  check_numel(op, "dout", dout, ids.numel() * t.cols);
  MAGIX_CHECK(row_start >= 0, "{}: row_start {} < 0", op, row_start);
  cuda::embedding_backward(f32(dtable), f32(dout), i32(ids), ids.numel(), t.cols, row_start, t.rows,
                           scale, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::cross_entropy_max(Tensor& row_max, const Tensor& logits) const {
  const char* op = "cross_entropy_max";
  const bool bf16 = float_kind(op, "logits", logits);
  check_dtype(op, "row_max", row_max, DType::kF32);
  const Mat l = mat(logits);
  check_numel(op, "row_max", row_max, l.rows);
  MAGIX_CHECK(l.cols > 0, "{}: bad sizes N={} V={}", op, l.rows, l.cols);
  cuda::cross_entropy_max(f32(row_max), raw(logits), bf16, l.rows, l.cols, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::cross_entropy_sumexp(Tensor& sumexp, Tensor& target_logit, const Tensor& logits,
                                       const Tensor& row_max, const Tensor& targets,
                                       int64_t v0) const {
  const char* op = "cross_entropy_sumexp";
  const bool bf16 = float_kind(op, "logits", logits);
  check_dtype(op, "targets", targets, DType::kI32);
  const Mat l = mat(logits);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&sumexp, &target_logit, &row_max}) {
    check_dtype(op, "row statistics", *t, DType::kF32);
    check_numel(op, "row statistics", *t, l.rows);
  }
  check_numel(op, "targets", targets, l.rows);
  MAGIX_CHECK(l.cols > 0, "{}: bad sizes N={} V={}", op, l.rows, l.cols);
  cuda::cross_entropy_sumexp(f32(sumexp), f32(target_logit), raw(logits), bf16, f32(row_max),
                             i32(targets), v0, l.rows, l.cols, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::cross_entropy_loss(Tensor& losses, const Tensor& row_max, const Tensor& sumexp,
                                     const Tensor& target_logit, const Tensor& targets) const {
  const char* op = "cross_entropy_loss";
  check_dtype(op, "targets", targets, DType::kI32);
  for (const Tensor* t :
       std::initializer_list<const Tensor*>{&losses, &row_max, &sumexp, &target_logit}) {
    check_dtype(op, "row statistics", *t, DType::kF32);
    check_numel(op, "row statistics", *t, targets.numel());
  }
  cuda::cross_entropy_loss(f32(losses), f32(row_max), f32(sumexp), f32(target_logit), i32(targets),
                           targets.numel(), s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::cross_entropy_backward(Tensor& dlogits, const Tensor& logits,
                                         const Tensor& row_max, const Tensor& sumexp,
                                         const Tensor& targets, float dloss, int64_t v0) const {
  const char* op = "cross_entropy_backward";
  const bool bf16 = float_kind(op, "logits", logits);
  check_dtype(op, "dlogits", dlogits, logits.dtype());
  check_dtype(op, "targets", targets, DType::kI32);
  const Mat l = mat(logits);
  check_numel(op, "dlogits", dlogits, logits.numel());
  for (const Tensor* t : std::initializer_list<const Tensor*>{&row_max, &sumexp}) {
    check_dtype(op, "row statistics", *t, DType::kF32);
    check_numel(op, "row statistics", *t, l.rows);
  }
  check_numel(op, "targets", targets, l.rows);
  MAGIX_CHECK(l.cols > 0, "{}: bad sizes N={} V={}", op, l.rows, l.cols);
  cuda::cross_entropy_backward(raw(dlogits), raw(logits), bf16, f32(row_max), f32(sumexp),
                               i32(targets), dloss, v0, l.rows, l.cols, s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

void CudaBackend::adamw_update(Tensor& w, const Tensor& g, Tensor& m, Tensor& v,
                               const AdamWScalars& k) const {
  const char* op = "adamw_update";
  check_dtype(op, "g", g, DType::kF32);
  check_dtype(op, "m", m, DType::kF32);
  check_dtype(op, "v", v, DType::kF32);
  check_cuda(op, w);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&g, &m, &v})
    check_numel(op, "g/m/v", *t, w.numel());
  MAGIX_CHECK(is(w, DType::kF32) || is(w, DType::kBF16), "{}: parameters are F32 or BF16, not {}",
              op, dtype_name(w.dtype()));
  const AdamWArgs args{k.grad_scale, k.beta1, k.beta2, k.bias1,
                       k.bias2,      k.eps,   k.lr,    k.weight_decay};
  cuda::adamw_update(raw(w), is(w, DType::kBF16), f32(g), f32(m), f32(v), w.numel(), args,
                     s_->stream);
  MAGIX_CUDA_CHECK_LAUNCH(op);
}

double CudaBackend::sum_of_squares(const Tensor& g) const {
  check_dtype("sum_of_squares", "g", g, DType::kF32);
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

void CudaBackend::lora_merge(Tensor& w, const Tensor& a, const Tensor& b, float scale,
                             const Tensor* base) const {
  const char* op = "lora_merge";
  check_dtype(op, "w", w, DType::kF32);
  check_dtype(op, "a", a, DType::kF32);
  check_dtype(op, "b", b, DType::kF32);
  MAGIX_CHECK(w.ndim() == 2 && a.ndim() == 2 && b.ndim() == 2 && a.dim(1) == w.dim(1) &&
                  b.dim(0) == w.dim(0) && a.dim(0) == b.dim(1),
              "{}: w {}, a {}, b {} are not (O, I), (r, I), (O, r)", op, shape_str(w.shape()),
              shape_str(a.shape()), shape_str(b.shape()));
  if (base) {
    float_kind(op, "base", *base);
    check_numel(op, "base", *base, w.numel());
    copy(w, *base);  // w = base (converted), then w += scale · b · a
  }
  const int64_t O = w.dim(0), I = w.dim(1), r = a.dim(0);
  s_->gemm->run({false, false, O, I, r, scale, raw(b), r, raw(a), I, 1.0f, raw(w), I,
                 GemmType::kF32, GemmType::kF32, nullptr});
}

void CudaBackend::lora_project(Tensor& da, Tensor& db, const Tensor& dw, const Tensor& a,
                               const Tensor& b, float scale) const {
  const char* op = "lora_project";
  for (const Tensor* t : std::initializer_list<const Tensor*>{&da, &db, &dw, &a, &b})
    check_dtype(op, "every tensor", *t, DType::kF32);
  MAGIX_CHECK(dw.ndim() == 2 && a.ndim() == 2 && b.ndim() == 2 && a.dim(1) == dw.dim(1) &&
                  b.dim(0) == dw.dim(0) && a.dim(0) == b.dim(1) && da.shape() == a.shape() &&
                  db.shape() == b.shape(),
              "{}: dw {}, a {}, b {} are not (O, I), (r, I), (O, r)", op, shape_str(dw.shape()),
              shape_str(a.shape()), shape_str(b.shape()));
  const int64_t O = dw.dim(0), I = dw.dim(1), r = a.dim(0);
  // da (r, I) += scale · bᵀ (r, O) · dw (O, I)
  s_->gemm->run({true, false, r, I, O, scale, raw(b), r, raw(dw), I, 1.0f, raw(da), I,
                 GemmType::kF32, GemmType::kF32, nullptr});
  // db (O, r) = scale · dw (O, I) · aᵀ (I, r)
  s_->gemm->run({false, true, O, r, I, scale, raw(dw), I, raw(a), I, 0.0f, raw(db), r,
                 GemmType::kF32, GemmType::kF32, nullptr});
}

const CudaBackend& cuda_backend() {
  static const CudaBackend backend;
  return backend;
}

}  // namespace magix::cuda
