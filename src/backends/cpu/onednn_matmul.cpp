#include "backends/cpu/onednn_matmul.hpp"

#include <omp.h>

#include <bit>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>

#include "magix/error.hpp"

namespace magix::cpu {

namespace {

using dnnl::memory;

// Everything a primitive depends on. threads is the OpenMP team the primitive is created for:
// oneDNN sizes its work split and scratchpad by it, and runs on one thread inside a parallel
// region, so a primitive made for 2 threads is not reused there.
struct Key {
  bool trans_a, trans_b;
  int64_t M, N, K;
  uint32_t alpha_bits;
  bool bias, accumulate, c_bf16;
  bool f32;  // fp32 operands and C (onednn_matmul_f32), else bf16 operands
  int threads;
  bool operator==(const Key&) const = default;
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = std::hash<int64_t>()(k.M);
    auto mix = [&h](uint64_t v) {
      h ^= std::hash<uint64_t>()(v) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    };
    mix(static_cast<uint64_t>(k.N));
    mix(static_cast<uint64_t>(k.K));
    mix(k.alpha_bits);
    mix((k.trans_a ? 1u : 0u) | (k.trans_b ? 2u : 0u) | (k.bias ? 4u : 0u) |
        (k.accumulate ? 8u : 0u) | (k.c_bf16 ? 16u : 0u) | (k.f32 ? 32u : 0u));
    mix(static_cast<uint64_t>(k.threads));
    return h;
  }
};

// A created primitive and the descriptors its arguments are wrapped with. Immutable once made.
struct Entry {
  dnnl::matmul primitive;
  memory::desc a, b, bias, c, scratchpad;
};

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Creation inside an OpenMP parallel region: oneDNN will run the primitive on one thread there,
// so it is created for one thread (omp_set_num_threads applies to this thread's region only).
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int threads) : saved_(omp_get_max_threads()) {
    if (threads != saved_) omp_set_num_threads(threads);
  }
  ~ScopedOmpThreads() {
    if (omp_get_max_threads() != saved_) omp_set_num_threads(saved_);
  }
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  int saved_;
};

std::shared_ptr<const Entry> create(const Key& k) {
  using dt = memory::data_type;
  // Row-major (rows, cols) operands as oneDNN's logical (M, K) and (K, N) with strides.
  const memory::dims a_strides = k.trans_a ? memory::dims{1, k.M} : memory::dims{k.K, 1};
  const memory::dims b_strides = k.trans_b ? memory::dims{1, k.K} : memory::dims{k.N, 1};
  const dt in = k.f32 ? dt::f32 : dt::bf16;
  const memory::desc a({k.M, k.K}, in, a_strides);
  const memory::desc b({k.K, k.N}, in, b_strides);
  const memory::desc c({k.M, k.N}, k.c_bf16 ? dt::bf16 : dt::f32, memory::dims{k.N, 1});
  const memory::desc bias =
      k.bias ? memory::desc({1, k.N}, dt::f32, memory::dims{k.N, 1}) : memory::desc();

  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const float alpha = std::bit_cast<float>(k.alpha_bits);
  // alpha scales A·B before the post-ops: oneDNN 2.x as a constant output scale, 3.x as a
  // runtime scale of the weights (passed by run()); both compute alpha·(A·B) in fp32.
#if DNNL_VERSION_MAJOR >= 3
  if (alpha != 1.0f) attr.set_scales_mask(DNNL_ARG_WEIGHTS, 0);
#else
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
#endif
  // Post-ops run after the scale, in order: + C, then + bias. (matmul's own bias argument would
  // be scaled by alpha too on 2.x, which computes alpha (A·B + bias).)
  dnnl::post_ops ops;
  if (k.accumulate) ops.append_sum(1.0f);
  if (k.bias) ops.append_binary(dnnl::algorithm::binary_add, bias);
  attr.set_post_ops(ops);
  ScopedOmpThreads threads(k.threads);
#if DNNL_VERSION_MAJOR >= 3
  const dnnl::matmul::primitive_desc pd(cpu_engine(), a, b, c, attr);
#else
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), attr, cpu_engine());
#endif
  return std::make_shared<const Entry>(
      Entry{dnnl::matmul(pd), a, b, bias, c, pd.scratchpad_desc()});
}

class PrimitiveCache {
 public:
  std::shared_ptr<const Entry> get(const Key& key) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = entries_.find(key);
      if (it != entries_.end()) return it->second;
    }
    // Created outside the lock (milliseconds); a concurrent creator of the same key loses.
    std::shared_ptr<const Entry> entry = create(key);
    std::lock_guard<std::mutex> lock(mutex_);
    if (entries_.size() >= kCapacity) entries_.clear();  // bounded; in-flight users keep theirs
    return entries_.try_emplace(key, std::move(entry)).first->second;
  }
  int64_t size() {
    std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<int64_t>(entries_.size());
  }

 private:
  static constexpr size_t kCapacity = 1024;  // a training run uses a few dozen shapes
  std::mutex mutex_;
  std::unordered_map<Key, std::shared_ptr<const Entry>, KeyHash> entries_;
};

PrimitiveCache& cache() {
  static PrimitiveCache cache;
  return cache;
}

// This thread's scratchpad, 64-byte aligned, grown on demand and kept.
void* thread_scratchpad(size_t bytes) {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  thread_local std::unique_ptr<void, Free> buffer;
  thread_local size_t capacity = 0;
  if (bytes > capacity) {
    const size_t rounded = (bytes + 4095) / 4096 * 4096;
    capacity = 0;  // stays 0 if the allocation fails
    buffer.reset(std::aligned_alloc(64, rounded));
    MAGIX_CHECK(buffer != nullptr, "oneDNN matmul: cannot allocate a {}-byte scratchpad", bytes);
    capacity = rounded;
  }
  return buffer.get();
}

unsigned effective_isa() {
  return static_cast<unsigned>(dnnl::get_effective_cpu_isa());
}

// Runs the cached primitive of `key` on A, B, bias and C (oneDNN only reads A, B and bias).
void run(const Key& key, const void* A, const void* B, const float* bias, void* C) {
  try {
    const std::shared_ptr<const Entry> entry = cache().get(key);
    dnnl::engine& engine = cpu_engine();
    thread_local dnnl::stream stream(engine);
    // oneDNN only reads A, B and bias; its memory objects take non-const handles.
    memory a(entry->a, engine, const_cast<void*>(A));
    memory b(entry->b, engine, const_cast<void*>(B));
    memory c(entry->c, engine, C);
    memory scratchpad(entry->scratchpad, engine, thread_scratchpad(entry->scratchpad.get_size()));
    std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, a},
                                            {DNNL_ARG_WEIGHTS, b},
                                            {DNNL_ARG_DST, c},
                                            {DNNL_ARG_SCRATCHPAD, scratchpad}};
#if DNNL_VERSION_MAJOR >= 3
    float alpha = std::bit_cast<float>(key.alpha_bits);
    if (alpha != 1.0f) {
      args.emplace(
          DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS,
          memory(memory::desc({1}, memory::data_type::f32, memory::dims{1}), engine, &alpha));
    }
#endif
    if (bias != nullptr) {
      const int post_op = key.accumulate ? 1 : 0;  // the bias's index among the post-ops
      args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(post_op) | DNNL_ARG_SRC_1,
                   memory(entry->bias, engine, const_cast<float*>(bias)));
    }
    entry->primitive.execute(stream, args);
    stream.wait();
  } catch (const dnnl::error& e) {
    MAGIX_FAIL("oneDNN matmul ({}, M={} N={} K={}, {}{}, ISA {}) failed: {} (status {})",
               key.f32 ? "f32" : "bf16", key.M, key.N, key.K, key.trans_a ? 'T' : 'N',
               key.trans_b ? 'T' : 'N', onednn_isa_name(), e.what(), static_cast<int>(e.status));
  }
}

int team_threads() {
  return omp_in_parallel() ? 1 : omp_get_max_threads();
}

}  // namespace

void onednn_matmul_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const uint16_t* A, const uint16_t* B, const float* bias, bool accumulate,
                        void* C, bool c_bf16) {
  MAGIX_CHECK(!(accumulate && c_bf16), "oneDNN matmul: accumulating into a bf16 C");
  run(Key{trans_a, trans_b, M, N, K, std::bit_cast<uint32_t>(alpha), bias != nullptr, accumulate,
          c_bf16, /*f32=*/false, team_threads()},
      A, B, bias, C);
}

void onednn_matmul_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                       const float* B, bool accumulate, float* C) {
  run(Key{trans_a, trans_b, M, N, K, std::bit_cast<uint32_t>(1.0f), false, accumulate, false,
          /*f32=*/true, team_threads()},
      A, B, nullptr, C);
}

std::string onednn_isa_name() {
  const unsigned isa = effective_isa();
  switch (isa) {
    case static_cast<unsigned>(dnnl::cpu_isa::avx512_core_amx):
      return "avx512_core_amx";
    case static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16):
      return "avx512_core_bf16";
    case static_cast<unsigned>(dnnl::cpu_isa::avx512_core_vnni):
      return "avx512_core_vnni";
    case static_cast<unsigned>(dnnl::cpu_isa::avx512_core):
      return "avx512_core";
    case static_cast<unsigned>(dnnl::cpu_isa::avx2_vnni):
      return "avx2_vnni";
    case static_cast<unsigned>(dnnl::cpu_isa::avx2):
      return "avx2";
    default:
      return fmt::format("isa {:#x}", isa);
  }
}

bool onednn_uses_amx() {
  const unsigned amx = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_amx);
  return (effective_isa() & amx) == amx;
}

std::string onednn_matmul_name() {
  const dnnl_version_t* v = dnnl::version();
  return fmt::format("oneDNN {}.{}.{} matmul ({})", v->major, v->minor, v->patch,
                     onednn_isa_name());
}

int64_t onednn_cached_primitives() {
  return cache().size();
}

}  // namespace magix::cpu
