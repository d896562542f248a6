// Helpers of the op-table sweep (tests/backends/, in the spirit of ggml's test-backend-ops):
// the backends to sweep, host <-> device transfers through Backend::copy, inputs rounded to bf16
// by the test itself, the error metrics and their thresholds, and the table of worst errors
// printed after the run.
//
// Every op is compared with an fp64 reference written in the test files. A reference takes the
// inputs exactly as the backend holds them (bf16 inputs already rounded), so the error measured
// is the backend's own arithmetic: fp32 accumulation, and half a bf16 ulp where it writes bf16.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "magix/tensor.hpp"

namespace magix {

// GoogleTest shows a Device parameter by its name ("cpu").
inline void PrintTo(Device device, std::ostream* os) {
  *os << device_name(device);
}

}  // namespace magix

namespace magix::test {

// ---- thresholds (error metric: max |got - want| over max |want|, the reference's scale) -----

// fp32 ops: each output is an fp32 evaluation of a few dozen roundings of 2^-24 (sums of at most
// 256 terms of random sign, exp/log, a few products): measured <= 1.4e-6 of the output scale on
// the CPU backend (glu_backward's tanh-GELU dgate; <= 5.3e-7 elsewhere); 1e-5 leaves room for
// other summation orders (tree reductions, FMA) while a wrong index, mask or formula shows as
// 1e-3..1.
inline constexpr double kF32Tol = 1e-5;
// bf16 inputs with fp32 outputs (bf16 GEMMs): a product of two bf16 values is exact in fp32 and
// the reference uses the same bf16-rounded inputs, so only the fp32 accumulation remains.
inline constexpr double kBf16InputTol = kF32Tol;
// bf16 outputs: rounded once from the fp32 result, so each element is within half a bf16 ulp
// (2^-8 relative) of the fp32 result, itself within kF32Tol of the output scale.
inline constexpr double kBf16OutHalfUlps = 0.5;
// bf16 attention (BF16 q, k, v, out, dout): besides the bf16 inputs, the kernel rounds P, dS and
// out to bf16 (2^-8 relative each) before they meet the next product, and sums of rounded terms
// keep that relative size: 2^-7 of the output scale bounds it with a factor 2 to spare (measured
// below 2^-8), while a wrong index or mask still shows as 1e-1..1.
inline constexpr double kBf16AttentionTol = 0x1p-7;
// Reductions in double of fp32 data (sum_of_squares): the squares are exact in double and n - 1
// additions of positive terms lose at most (n - 1) 2^-53 relative: 7.8e-12 for n = 70001.
inline constexpr double kF64Tol = 1e-11;
// Central differences through the fp32 ops with a step of 1e-2: the fp32 noise in f (about
// 2^-24 sqrt(outputs) of its terms) over 2h, plus the h^2 f''' / 6 truncation, stay below 1e-4
// of the gradient scale for these O(1) inputs (measured <= 4e-5); a missing term or a wrong
// sign gives O(1).
inline constexpr double kFiniteDiffTol = 1e-3;

// ---- backends -------------------------------------------------------------------------------

// The devices whose backend this build has (backend_for does not throw for them): today the
// CPU; a CUDA backend registered in backend_for is swept with no change here.
std::vector<Device> swept_devices();
// "cpu", "cuda": the parameter's name in test names.
std::string device_param_name(const ::testing::TestParamInfo<Device>& info);

// ---- bf16 in the test (independent of the backend's conversions) ----------------------------

// Bits of x rounded to the nearest bf16, ties to even; NaN -> a quiet NaN; past the largest
// bf16 -> inf.
uint16_t bf16_bits(float x);
float bf16_value(uint16_t bits);  // exact widening
// One bf16 ulp at |x| (the spacing of bf16 values around x; the denormal spacing near 0).
double bf16_ulp(double x);

// ---- random data ----------------------------------------------------------------------------

std::vector<float> uniform(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f);
std::vector<int32_t> uniform_ints(size_t n, uint32_t seed, int32_t lo, int32_t hi);  // [lo, hi]

// An input on the device and the values the reference computes with (bf16-rounded for BF16).
struct Input {
  Tensor dev;
  std::vector<double> ref;
};

// The fixture of every sweep: GetParam() is the device; helpers move data through be().copy.
class BackendOpsTest : public ::testing::TestWithParam<Device> {
 protected:
  const Backend& be() const { return backend_for(GetParam()); }
  std::string dev_name() const;

  // A device tensor holding `values` converted to dtype (F32 or BF16, rounded by bf16_bits).
  Input put(const Shape& shape, DType dtype, const std::vector<float>& values) const;
  Input random(const Shape& shape, DType dtype, uint32_t seed, float lo = -1.0f,
               float hi = 1.0f) const;
  Tensor put_i32(const Shape& shape, const std::vector<int32_t>& values) const;
  // A device tensor of NaNs (F32, BF16) or of 0x5a5a5a5a (I32): the garbage an op that writes
  // (=) must overwrite.
  Tensor garbage(const Shape& shape, DType dtype) const;
  // A zero tensor of a device the backend does not own: for a device backend a host tensor;
  // for the CPU backend one that claims the CUDA device over host memory (so that a backend
  // that reads it anyway computes garbage instead of crashing).
  Tensor foreign(const Shape& shape, DType dtype = DType::kF32) const;
  // The tensor brought to the host and widened to double (F32, BF16, I32).
  std::vector<double> get(const Tensor& dev) const;
  std::vector<uint16_t> get_bits(const Tensor& dev) const;  // BF16 raw bits
};

// ---- comparisons (each records its error in the summary under `key`) ------------------------

// max |got - want| / max(max |want|, 1e-30); NaN anywhere counts as infinite.
double scaled_max_error(const std::vector<double>& got, const std::vector<double>& want);

// got within tol of want's scale; `key` names the op and dtypes ("matmul_forward BF16->F32"),
// `what` the case (shapes, options, device), shown on failure.
void expect_close(const std::string& key, const std::string& what, const std::vector<double>& got,
                  const std::vector<double>& want, double tol = kF32Tol);
// A bf16 output: each |got - want| <= kBf16OutHalfUlps * bf16_ulp(want) + tol * scale.
void expect_bf16_close(const std::string& key, const std::string& what,
                       const std::vector<double>& got, const std::vector<double>& want,
                       double tol = kF32Tol);
// Bit-for-bit equality (copies, conversions, zeros); NaN matches NaN.
void expect_same(const std::string& key, const std::string& what, const std::vector<double>& got,
                 const std::vector<double>& want);

// Records an error measured elsewhere (finite differences, double reductions).
void record_error(const std::string& key, double err, double tol);

// op(); expects it to throw magix::Error (not another exception, not nothing) whose message
// contains `needle` (when not empty).
void expect_error(const std::string& what, const std::function<void()>& op,
                  const std::string& needle = "");

// ---- small fp64 helpers for the references ---------------------------------------------------

// Widened copy of a float vector.
std::vector<double> widen(const std::vector<float>& v);
// a + b elementwise.
std::vector<double> plus(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace magix::test
