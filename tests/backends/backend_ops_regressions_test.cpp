// Regressions: defects the op-table sweep found in a backend, fixed, and kept as tests (each
// states the expected behaviour; the defect is described above it).
#include <cstdlib>

#include "backend_ops_util.hpp"
#include "magix/error.hpp"

namespace magix::test {
namespace {

class OpRegressions : public BackendOpsTest {};

// Was (cpu): CpuBackend::attention_forward checked the dtypes of q, k, v and out but not their
// device, so tensors of another device were read as host memory: with real CUDA storage a
// segfault instead of magix::Error.
TEST_P(OpRegressions, AttentionForwardRejectsQKVOutOfAnotherDevice) {
  const Backend& b = be();
  Tensor q = be().zeros({1, 2, 2, 4}, DType::kF32), kv = be().zeros({1, 2, 1, 4}, DType::kF32);
  Tensor lse = be().zeros({1, 2, 2}, DType::kF32);
  Tensor xq = foreign(q.shape()), xkv = foreign(kv.shape());
  expect_error("attention_forward q of another device on " + dev_name(),
               [&] { b.attention_forward(q, lse, xq, kv, kv, 1, {}); });
  expect_error("attention_forward k of another device on " + dev_name(),
               [&] { b.attention_forward(q, lse, q, xkv, kv, 1, {}); });
  expect_error("attention_forward v of another device on " + dev_name(),
               [&] { b.attention_forward(q, lse, q, kv, xkv, 1, {}); });
  expect_error("attention_forward out of another device on " + dev_name(),
               [&] { b.attention_forward(xq, lse, q, kv, kv, 1, {}); });
}

// Was (cpu): CpuBackend::attention_decode computed `q.dim(1) % Hkv` before checking Hkv > 0, so a
// cache of shape (B, S, 0, D) divided by zero: SIGFPE instead of magix::Error. The call runs in
// a child process, so that a crash fails only this test.

// Runs that call and exits 0 if it threw magix::Error, 1 if it returned.
[[noreturn]] void exit_by_decode_with_zero_kv_heads(const Backend& b) {
  Tensor out = b.zeros({1, 2, 4}, DType::kF32);
  const Tensor q = b.zeros({1, 2, 4}, DType::kF32), cache = b.zeros({1, 3, 0, 4}, DType::kF32);
  const Tensor valid = b.zeros({1, 3}, DType::kI32);
  try {
    b.attention_decode(out, q, cache, cache, valid, 0, 1.0f, 0, 0);
  } catch (const Error&) {
    std::_Exit(0);
  }
  std::_Exit(1);
}

// In a child process (a death test), so that the crash fails this test only.
TEST_P(OpRegressions, AttentionDecodeRejectsACacheWithZeroKvHeads) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(exit_by_decode_with_zero_kv_heads(be()), ::testing::ExitedWithCode(0), "")
      << "attention_decode with a (1, 3, 0, 4) cache on " << dev_name()
      << " must throw magix::Error (exit 0), not crash (a signal) or run (exit 1)";
}

INSTANTIATE_TEST_SUITE_P(Backends, OpRegressions, ::testing::ValuesIn(swept_devices()),
                         device_param_name);

}  // namespace
}  // namespace magix::test
