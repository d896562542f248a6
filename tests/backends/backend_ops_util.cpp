#include "backend_ops_util.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <random>

#include "magix/error.hpp"

namespace magix::test {
namespace {

// The worst error seen per key, printed after the last test (the numbers docs/kernels.md quotes
// and a new backend is compared by).
class ErrorSummary : public ::testing::Environment {
 public:
  static ErrorSummary& get() {
    static ErrorSummary* summary = [] {
      auto* s = new ErrorSummary;  // owned by GoogleTest once registered
      ::testing::AddGlobalTestEnvironment(s);
      return s;
    }();
    return *summary;
  }

  void record(const std::string& key, double err, double tol) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto [it, fresh] = worst_.try_emplace(key, err, tol);
    if (!fresh && !(it->second.first >= err)) it->second = {err, tol};
  }

  void TearDown() override {
    if (worst_.empty()) return;
    std::printf("\nworst error per op and dtype (metric of the check / its threshold):\n");
    for (const auto& [key, e] : worst_) {
      std::printf("  %-58s %10.3g / %-10.3g\n", key.c_str(), e.first, e.second);
    }
  }

 private:
  std::mutex mutex_;
  std::map<std::string, std::pair<double, double>> worst_;
};

// Registers the summary before main runs the tests (GoogleTest calls TearDown at the end).
[[maybe_unused]] const ErrorSummary& kRegisterSummary = ErrorSummary::get();

std::string show(const std::vector<double>& got, const std::vector<double>& want, size_t i) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "[%zu] got %.9g, want %.9g", i, got[i], want[i]);
  return buf;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v)
    if (std::isfinite(x)) m = std::max(m, std::fabs(x));
  return m;
}

// |g - w|, 0 where equal (also equal infinities), infinite where either is NaN.
double diff(double g, double w) {
  if (g == w) return 0;
  const double d = std::fabs(g - w);
  return std::isnan(d) ? std::numeric_limits<double>::infinity() : d;
}

}  // namespace

std::vector<Device> swept_devices() {
  std::vector<Device> devices;
  for (Device d : {Device::kCpu, Device::kCuda}) {
    try {
      (void)backend_for(d);
      devices.push_back(d);
    } catch (const Error&) {
      // this build has no backend for d
    }
  }
  return devices;
}

std::string device_param_name(const ::testing::TestParamInfo<Device>& info) {
  return std::string(device_name(info.param));
}

uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  if (std::isnan(x)) return static_cast<uint16_t>(sign | 0x7fc0u);
  // The two bf16 magnitudes around |x|: truncated (lo) and one ulp up (lo + 1), compared in
  // double. Above the largest finite bf16 the next value is 2^128, which encodes as inf.
  const uint16_t lo = static_cast<uint16_t>((u >> 16) & 0x7fffu);
  const double ax = std::fabs(static_cast<double>(x));
  const double vlo = bf16_value(lo);
  const double vhi = lo == 0x7f7f ? std::ldexp(1.0, 128) : bf16_value(lo + 1);
  const double dlo = ax - vlo, dhi = vhi - ax;
  const bool up = dhi < dlo || (dhi == dlo && (lo & 1u) != 0);
  return static_cast<uint16_t>(sign | (up ? lo + 1 : lo));
}

float bf16_value(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

double bf16_ulp(double x) {
  int e = 0;
  (void)std::frexp(x, &e);  // |x| in [2^(e-1), 2^e): 8 significant bits, spacing 2^(e-8)
  return std::max(std::ldexp(1.0, e - 8), std::ldexp(1.0, -133));
}

std::vector<float> uniform(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<int32_t> uniform_ints(size_t n, uint32_t seed, int32_t lo, int32_t hi) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

std::string BackendOpsTest::dev_name() const {
  return std::string(device_name(GetParam()));
}

Input BackendOpsTest::put(const Shape& shape, DType dtype, const std::vector<float>& values) const {
  Tensor host = Tensor::empty(shape, dtype);
  MAGIX_CHECK(host.numel() == std::ssize(values), "put: {} values for shape {}", values.size(),
              shape_str(shape));
  Input in;
  in.ref.resize(values.size());
  if (dtype == DType::kF32) {
    std::copy(values.begin(), values.end(), host.data<float>());
    std::copy(values.begin(), values.end(), in.ref.begin());
  } else {
    MAGIX_CHECK(dtype == DType::kBF16, "put: {} is not F32 or BF16", dtype_name(dtype));
    uint16_t* h = host.data<uint16_t>();
    for (size_t i = 0; i < values.size(); ++i) {
      h[i] = bf16_bits(values[i]);
      in.ref[i] = bf16_value(h[i]);
    }
  }
  in.dev = be().empty(shape, dtype);
  be().copy(in.dev, host);
  return in;
}

Input BackendOpsTest::random(const Shape& shape, DType dtype, uint32_t seed, float lo,
                             float hi) const {
  return put(shape, dtype, uniform(static_cast<size_t>(shape_numel(shape)), seed, lo, hi));
}

Tensor BackendOpsTest::put_i32(const Shape& shape, const std::vector<int32_t>& values) const {
  Tensor host = Tensor::empty(shape, DType::kI32);
  MAGIX_CHECK(host.numel() == std::ssize(values), "put_i32: {} values for shape {}", values.size(),
              shape_str(shape));
  std::copy(values.begin(), values.end(), host.data<int32_t>());
  Tensor t = be().empty(shape, DType::kI32);
  be().copy(t, host);
  return t;
}

Tensor BackendOpsTest::garbage(const Shape& shape, DType dtype) const {
  Tensor host = Tensor::empty(shape, dtype);
  if (dtype == DType::kF32) {
    std::fill_n(host.data<float>(), host.numel(), std::numeric_limits<float>::quiet_NaN());
  } else if (dtype == DType::kBF16) {
    std::fill_n(host.data<uint16_t>(), host.numel(), uint16_t{0x7fc0});
  } else {
    std::fill_n(host.data<int32_t>(), host.numel(), int32_t{0x5a5a5a5a});
  }
  Tensor t = be().empty(shape, dtype);
  be().copy(t, host);
  return t;
}

Tensor BackendOpsTest::foreign(const Shape& shape, DType dtype) const {
  if (GetParam() != Device::kCpu) return Tensor(shape, dtype);
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  return Tensor::from_storage(shape, dtype, Device::kCuda, std::make_shared<std::byte[]>(bytes));
}

std::vector<double> BackendOpsTest::get(const Tensor& dev) const {
  Tensor host = Tensor::empty(dev.shape(), dev.dtype());
  be().copy(host, dev);
  std::vector<double> v(static_cast<size_t>(host.numel()));
  switch (host.dtype()) {
    case DType::kF32:
      std::copy_n(host.data<float>(), host.numel(), v.begin());
      break;
    case DType::kBF16:
      for (size_t i = 0; i < v.size(); ++i) v[i] = bf16_value(host.data<uint16_t>()[i]);
      break;
    case DType::kI32:
      std::copy_n(host.data<int32_t>(), host.numel(), v.begin());
      break;
    default:
      MAGIX_FAIL("get: {} tensors are not swept", dtype_name(host.dtype()));
  }
  return v;
}

std::vector<uint16_t> BackendOpsTest::get_bits(const Tensor& dev) const {
  Tensor host = Tensor::empty(dev.shape(), dev.dtype());
  be().copy(host, dev);
  const uint16_t* h = host.data<uint16_t>();
  return std::vector<uint16_t>(h, h + host.numel());
}

double scaled_max_error(const std::vector<double>& got, const std::vector<double>& want) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, diff(got[i], want[i]));
  return worst / std::max(max_abs(want), 1e-30);
}

void expect_close(const std::string& key, const std::string& what, const std::vector<double>& got,
                  const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const double scale = std::max(max_abs(want), 1e-30);
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = diff(got[i], want[i]);
    if (d > worst) worst = d, at = i;
  }
  const double err = worst / scale;
  record_error(key, err, tol);
  EXPECT_LE(err, tol) << key << " | " << what << ": error " << err << " of the scale " << scale
                      << ", worst " << show(got, want, at);
}

void expect_bf16_close(const std::string& key, const std::string& what,
                       const std::vector<double>& got, const std::vector<double>& want,
                       double tol) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const double scale = std::max(max_abs(want), 1e-30);
  // The worst element as a fraction of its own bound (<= 1 passes).
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double bound = kBf16OutHalfUlps * bf16_ulp(want[i]) + tol * scale;
    const double f = diff(got[i], want[i]) / bound;
    if (f > worst) worst = f, at = i;
  }
  record_error(key + " (of 1/2 ulp + fp32 bound)", worst, 1.0);
  EXPECT_LE(worst, 1.0) << key << " | " << what << ": " << worst
                        << " of the bound (half a bf16 ulp + " << tol << " of the scale " << scale
                        << "), worst " << show(got, want, at);
}

void expect_same(const std::string& key, const std::string& what, const std::vector<double>& got,
                 const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool same = got[i] == want[i] || (std::isnan(got[i]) && std::isnan(want[i]));
    if (!same && bad++ == 0) first = i;
  }
  record_error(key + " (elements differing)", static_cast<double>(bad), 0);
  EXPECT_EQ(bad, 0u) << key << " | " << what << ": " << bad << " of " << got.size()
                     << " elements differ, first " << show(got, want, first);
}

void record_error(const std::string& key, double err, double tol) {
  ErrorSummary::get().record(key, std::isnan(err) ? std::numeric_limits<double>::infinity() : err,
                             tol);
}

void expect_error(const std::string& what, const std::function<void()>& op,
                  const std::string& needle) {
  try {
    op();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << what << ": the message \"" << e.what() << "\" does not name " << needle;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": threw " << e.what() << ", not magix::Error";
    return;
  }
  ADD_FAILURE() << what << ": did not throw";
}

std::vector<double> widen(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

std::vector<double> plus(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> c(a.size());
  for (size_t i = 0; i < a.size(); ++i) c[i] = a[i] + b[i];
  return c;
}

}  // namespace magix::test
