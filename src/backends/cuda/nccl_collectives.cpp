// NCCL collectives of CUDA tensors, with the results of the host path (src/shard/shard_ops.cpp):
// - gather: ncclAllGather of the shards into (n, rows, cols) blocks, then the dim-1 interleave
//   into the columns of the full tensor (blocks_to_columns; dim 0 needs none);
// - reduce-scatter: the blocks in rank-major order (columns_to_blocks for dim 1), an all-to-all
//   of grouped ncclSend/ncclRecv (no arithmetic in NCCL), then local += the received blocks summed
//   in rank order (rank_order_sum_add): the host path's sum, bit for bit, whatever NCCL's
//   algorithm;
// - all-reduce (sum, max): ncclAllReduce. Sums of more than two ranks round in NCCL's order
//   (ring or tree), not MPI's: equal to the host path within rounding; every rank gets the same
//   bits.
// Scratch buffers come from the backend's caching allocator; everything is on the backend's
// stream, so the host returns at once and the GPU runs the collectives in program order with
// the kernels around them.
#include "backends/cuda/nccl_collectives.hpp"

#include <cuda_runtime_api.h>

#include <span>
#include <thread>

#include "backends/cuda/cuda_backend.hpp"
#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/kernels.hpp"
#include "backends/cuda/nccl_library.hpp"
#include "magix/error.hpp"

namespace magix::cuda {
namespace {

std::string nccl_message(const NcclApi& api, ncclResult_t rc, ncclComm_t comm) {
  std::string msg = api.error_string(rc);
  const char* last = api.last_error(comm);
  if (last != nullptr && *last != '\0') msg += fmt::format(" ({})", last);
  return msg;
}

#define MAGIX_NCCL_CHECK(api, comm, call)                                           \
  do {                                                                              \
    const ncclResult_t magix_nccl_rc_ = (call);                                     \
    if (magix_nccl_rc_ != ncclSuccess) {                                            \
      ::magix::throw_error(__FILE__, __LINE__,                                      \
                           ::fmt::format("NCCL call {} failed: {}", #call,          \
                                         nccl_message(api, magix_nccl_rc_, comm))); \
    }                                                                               \
  } while (0)

struct Split {
  int64_t rows, cols;  // of one rank's block
};

Split split_of(const char* op, const Tensor& local, int dim) {
  MAGIX_CHECK(local.ndim() >= 1 && local.ndim() <= 2 && dim >= 0 && dim < local.ndim(),
              "{}: unsupported tensor rank {} / dim {}", op, local.ndim(), dim);
  if (dim == 0) return {1, local.numel()};
  return {local.dim(0), local.dim(1)};
}

void check_f32(const char* op, const Tensor& t) {
  MAGIX_CHECK(t.device() == Device::kCuda && t.dtype() == DType::kF32,
              "{}: NCCL collectives take F32 cuda tensors, got {} {}", op, device_name(t.device()),
              dtype_name(t.dtype()));
}

float* f32(const Tensor& t) {
  return reinterpret_cast<float*>(const_cast<std::byte*>(t.device_bytes()));
}

class NcclCollectives final : public DeviceCollectives {
 public:
  NcclCollectives(const NcclApi& api, Communicator& group)
      : api_(api),
        backend_(cuda_backend()),
        stream_(static_cast<cudaStream_t>(backend_.stream())),
        n_(group.size()),
        rank_(group.rank()),
        owner_(std::this_thread::get_id()) {
    ncclUniqueId id{};
    if (rank_ == 0) MAGIX_NCCL_CHECK(api_, nullptr, api_.get_unique_id(&id));
    group.broadcast(std::as_writable_bytes(std::span<ncclUniqueId>(&id, 1)), 0);
    int device = -1;
    MAGIX_CUDA_CHECK(cudaGetDevice(&device));
    const ncclResult_t rc = api_.comm_init_rank(&comm_, n_, id, rank_);
    if (rc != ncclSuccess) {
      comm_ = nullptr;
      MAGIX_FAIL(
          "NCCL cannot start a communicator for rank {} of a group of {} on GPU {}: {}. Each rank "
          "needs a GPU of its own (NCCL refuses two ranks of a group on one GPU: give the node as "
          "many GPUs as ranks); MAGIX_NCCL=0 moves the collectives of cuda tensors through host "
          "memory instead",
          rank_, n_, device, nccl_message(api_, rc, nullptr));
    }
  }
  ~NcclCollectives() override {
    if (comm_ != nullptr) (void)api_.comm_destroy(comm_);
  }

  void gather(const Tensor& local, int dim, Tensor& full) override {
    check("gather", local, full);
    check_sizes("gather", full.numel(), local.numel());
    const Split s = split_of("gather", local, dim);
    const size_t count = static_cast<size_t>(local.numel());
    if (s.rows == 1 || n_ == 1) {
      MAGIX_NCCL_CHECK(api_, comm_,
                       api_.all_gather(f32(local), f32(full), count, ncclFloat32, comm_, stream_));
      return;
    }
    Tensor blocks = backend_.empty({static_cast<int64_t>(n_) * local.numel()}, DType::kF32);
    MAGIX_NCCL_CHECK(api_, comm_,
                     api_.all_gather(f32(local), f32(blocks), count, ncclFloat32, comm_, stream_));
    blocks_to_columns(f32(full), f32(blocks), s.rows, s.cols, n_, stream_);
    MAGIX_CUDA_CHECK_LAUNCH("gather");
  }

  void reduce_scatter_add(const Tensor& full, int dim, Tensor& local) override {
    check("reduce_scatter", local, full);
    check_sizes("reduce_scatter", full.numel(), local.numel());
    const Split s = split_of("reduce_scatter", local, dim);
    const int64_t m = local.numel();
    Tensor send = full;
    if (s.rows > 1 && n_ > 1) {
      send = backend_.empty({full.numel()}, DType::kF32);
      columns_to_blocks(f32(send), f32(full), s.rows, s.cols, n_, stream_);
      MAGIX_CUDA_CHECK_LAUNCH("reduce_scatter");
    }
    Tensor chunks = backend_.empty({full.numel()}, DType::kF32);  // (n, m): block r from rank r
    MAGIX_NCCL_CHECK(api_, comm_, api_.group_start());
    for (int r = 0; r < n_; ++r) {
      const size_t off = static_cast<size_t>(r) * static_cast<size_t>(m);
      MAGIX_NCCL_CHECK(
          api_, comm_,
          api_.send(f32(send) + off, static_cast<size_t>(m), ncclFloat32, r, comm_, stream_));
      MAGIX_NCCL_CHECK(
          api_, comm_,
          api_.recv(f32(chunks) + off, static_cast<size_t>(m), ncclFloat32, r, comm_, stream_));
    }
    MAGIX_NCCL_CHECK(api_, comm_, api_.group_end());
    rank_order_sum_add(f32(local), f32(chunks), m, n_, stream_);
    MAGIX_CUDA_CHECK_LAUNCH("reduce_scatter");
  }

  void all_reduce_add(const Tensor& full, Tensor& local) override {
    check("all_reduce_add", local, full);
    MAGIX_CHECK(full.numel() == local.numel(), "all_reduce_add: sizes do not match");
    Tensor sum = backend_.empty({full.numel()}, DType::kF32);
    MAGIX_NCCL_CHECK(api_, comm_,
                     api_.all_reduce(f32(full), f32(sum), static_cast<size_t>(full.numel()),
                                     ncclFloat32, ncclSum, comm_, stream_));
    backend_.add(local, sum);
  }

  void all_reduce(Tensor& x, ReduceOp op) override {
    check("all_reduce", x, x);
    MAGIX_NCCL_CHECK(api_, comm_,
                     api_.all_reduce(f32(x), f32(x), static_cast<size_t>(x.numel()), ncclFloat32,
                                     op == ReduceOp::kSum ? ncclSum : ncclMax, comm_, stream_));
  }

 private:
  // F32 cuda tensors, and the thread that made the communicator: NCCL calls of one group come in
  // one order from one thread (the overlap's communication thread never issues them:
  // src/shard/param_stream.cpp), so that every rank enqueues them in the same stream order.
  void check(const char* op, const Tensor& a, const Tensor& b) const {
    check_f32(op, a);
    check_f32(op, b);
    MAGIX_CHECK(std::this_thread::get_id() == owner_,
                "{}: NCCL collectives of a group issued from a thread other than the one that made "
                "its communicator",
                op);
  }

  // full holds n blocks of local's size.
  void check_sizes(const char* op, int64_t full, int64_t local) const {
    MAGIX_CHECK(full == static_cast<int64_t>(n_) * local,
                "{}: the whole tensor has {} elements, expected {} ranks x {}", op, full, n_,
                local);
  }

  const NcclApi& api_;
  const CudaBackend& backend_;
  cudaStream_t stream_;
  int n_, rank_;
  std::thread::id owner_;
  ncclComm_t comm_ = nullptr;
};

class NcclEngine final : public DeviceCollectivesEngine {
 public:
  std::string name() const override { return "NCCL"; }
  std::string unavailable_reason() const override {
    std::string why;
    return nccl_library(&why) != nullptr ? std::string() : why;
  }
  std::unique_ptr<DeviceCollectives> create(Communicator& group) const override {
    std::string why;
    const NcclApi* api = nccl_library(&why);
    MAGIX_CHECK(api != nullptr, "{}", why);
    return std::make_unique<NcclCollectives>(*api, group);
  }
};

}  // namespace

const DeviceCollectivesEngine& nccl_engine() {
  static const NcclEngine engine;
  return engine;
}

}  // namespace magix::cuda
