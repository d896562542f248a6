// The MPI engine behind Communicator, and the Runtime that owns the MPI world. The only file
// that includes mpi.h.
// The C API only: no MPI C++ bindings.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "backends/backend.hpp"
#include "magix/distributed.hpp"
#include "magix/error.hpp"

namespace magix {

namespace {

// What this rank is doing in MPI, for the message printed if a peer's failure gets this rank
// killed while it waits. Written before and cleared after every collective; read only by the
// signal handler (hence plain static storage).
char g_current_op[128] = "";
int g_world_rank = 0;

void on_terminate(int sig) {
  char buf[256];
  int n;
  if (g_current_op[0] != '\0') {
    n = std::snprintf(buf, sizeof buf,
                      "magix: rank %d stopped while waiting in %s: another rank failed "
                      "(see its message)\n",
                      g_world_rank, g_current_op);
  } else {
    n = std::snprintf(buf, sizeof buf, "magix: rank %d stopped by signal %d\n", g_world_rank, sig);
  }
  if (n > 0) (void)!::write(STDERR_FILENO, buf, static_cast<size_t>(n));
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

#define MAGIX_CHECK_MPI(call)                                               \
  do {                                                                      \
    int rc_ = (call);                                                       \
    if (rc_ != MPI_SUCCESS) {                                               \
      char msg_[MPI_MAX_ERROR_STRING];                                      \
      int len_ = 0;                                                         \
      MPI_Error_string(rc_, msg_, &len_);                                   \
      MAGIX_FAIL("MPI call {} failed: {}", #call, std::string(msg_, len_)); \
    }                                                                       \
  } while (0)

// Marks the collective in progress for on_terminate, and adds its wall time to `seconds`.
class OpScope {
 public:
  OpScope(const char* op, const std::string& group, double& seconds)
      : seconds_(seconds), start_(MPI_Wtime()) {
    std::snprintf(g_current_op, sizeof g_current_op, "%s over the %s axis", op, group.c_str());
  }
  ~OpScope() {
    g_current_op[0] = '\0';
    seconds_ += MPI_Wtime() - start_;
  }

 private:
  double& seconds_;
  double start_;
};

// MPI counts are int: large buffers go in chunks.
constexpr size_t kMaxChunk = size_t{1} << 30;

MPI_Op to_mpi(ReduceOp op) {
  return op == ReduceOp::kSum ? MPI_SUM : MPI_MAX;
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, std::string name) : comm_(comm), name_(std::move(name)) {
    MAGIX_CHECK_MPI(MPI_Comm_rank(comm_, &rank_));
    MAGIX_CHECK_MPI(MPI_Comm_size(comm_, &size_));
  }
  ~MpiCommunicator() override {
    if (comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  double seconds_in_collectives() const override { return seconds_; }

  void all_reduce(std::span<float> data, ReduceOp op) override {
    OpScope scope("all_reduce", name_, seconds_);
    for (size_t i = 0; i < data.size(); i += kMaxChunk) {
      int n = static_cast<int>(std::min(kMaxChunk, data.size() - i));
      MAGIX_CHECK_MPI(
          MPI_Allreduce(MPI_IN_PLACE, data.data() + i, n, MPI_FLOAT, to_mpi(op), comm_));
    }
  }
  void all_reduce(std::span<double> data, ReduceOp op) override {
    OpScope scope("all_reduce", name_, seconds_);
    for (size_t i = 0; i < data.size(); i += kMaxChunk) {
      int n = static_cast<int>(std::min(kMaxChunk, data.size() - i));
      MAGIX_CHECK_MPI(
          MPI_Allreduce(MPI_IN_PLACE, data.data() + i, n, MPI_DOUBLE, to_mpi(op), comm_));
    }
  }
  void all_gather(std::span<const float> in, std::span<float> out) override {
    MAGIX_CHECK(out.size() == in.size() * static_cast<size_t>(size_),
                "all_gather over {}: output has {} elements, expected {} x {}", name_, out.size(),
                size_, in.size());
    MAGIX_CHECK(in.size() <= std::numeric_limits<int>::max(),
                "all_gather over {}: {} elements per rank is too many", name_, in.size());
    OpScope scope("all_gather", name_, seconds_);
    int n = static_cast<int>(in.size());
    MAGIX_CHECK_MPI(MPI_Allgather(in.data(), n, MPI_FLOAT, out.data(), n, MPI_FLOAT, comm_));
  }
  void reduce_scatter(std::span<const float> in, std::span<float> out) override {
    MAGIX_CHECK(in.size() == out.size() * static_cast<size_t>(size_),
                "reduce_scatter over {}: input has {} elements, expected {} x {}", name_, in.size(),
                size_, out.size());
    MAGIX_CHECK(out.size() <= std::numeric_limits<int>::max(),
                "reduce_scatter over {}: {} elements per rank is too many", name_, out.size());
    OpScope scope("reduce_scatter", name_, seconds_);
    MAGIX_CHECK_MPI(MPI_Reduce_scatter_block(in.data(), out.data(), static_cast<int>(out.size()),
                                             MPI_FLOAT, MPI_SUM, comm_));
  }
  void broadcast(std::span<std::byte> data, int root) override {
    OpScope scope("broadcast", name_, seconds_);
    for (size_t i = 0; i < data.size(); i += kMaxChunk) {
      int n = static_cast<int>(std::min(kMaxChunk, data.size() - i));
      MAGIX_CHECK_MPI(MPI_Bcast(data.data() + i, n, MPI_BYTE, root, comm_));
    }
  }
  void barrier() override {
    OpScope scope("barrier", name_, seconds_);
    MAGIX_CHECK_MPI(MPI_Barrier(comm_));
  }

 private:
  MPI_Comm comm_;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  double seconds_ = 0.0;
};

bool mpi_is_initialized() {
  int flag = 0;
  MPI_Initialized(&flag);
  int finalized = 0;
  MPI_Finalized(&finalized);
  return flag && !finalized;
}

}  // namespace

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

int local_rank() {
  if (const std::optional<int> r = local_rank_from_env()) return *r;
  if (!mpi_is_initialized()) return 0;
  MPI_Comm node;
  MAGIX_CHECK_MPI(
      MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  int rank = 0;
  const int rc = MPI_Comm_rank(node, &rank);
  MPI_Comm_free(&node);
  MAGIX_CHECK_MPI(rc);
  return rank;
}

std::string processor_name() {
  if (mpi_is_initialized()) {
    char name[MPI_MAX_PROCESSOR_NAME];
    int len = 0;
    if (MPI_Get_processor_name(name, &len) == MPI_SUCCESS && len > 0) return std::string(name, len);
  }
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) return "(unknown host)";
  return host;
}

Runtime::Runtime(int* argc, char*** argv) {
  if (!launched_by_mpi()) return;
  if (!mpi_is_initialized()) {
    int provided = 0;
    MAGIX_CHECK_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
  }
  mpi_ = true;
  MAGIX_CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  MAGIX_CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  // Errors come back as return codes so that they become magix::Error with a message.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  g_world_rank = rank_;
  std::signal(SIGTERM, on_terminate);
  std::signal(SIGINT, on_terminate);
}

Runtime::~Runtime() {
  if (mpi_ && mpi_is_initialized()) MPI_Finalize();
}

void Runtime::abort(const std::string& message, int code) {
  if (mpi_ && size_ > 1) {
    std::fflush(stdout);
    std::fprintf(stderr, "magix: error on rank %d of %d: %s\n", rank_, size_, message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
  } else {
    std::fflush(stdout);
    std::fprintf(stderr, "magix: error: %s\n", message.c_str());
    std::fflush(stderr);
  }
  std::_Exit(code);
}

Mesh create_device_mesh(std::vector<int> shape, const std::vector<std::string>& names) {
  MAGIX_CHECK(shape.size() == 2, "mesh shape must have 2 entries (data, model), got {}",
              shape.size());
  MAGIX_CHECK(names == (std::vector<std::string>{"data", "model"}),
              "mesh axes must be named (\"data\", \"model\")");
  if (!mpi_is_initialized()) {
    shape = resolve_mesh_shape(shape, 1);
    return Mesh();
  }
  int world_rank = 0, world_size = 1;
  MAGIX_CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
  MAGIX_CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &world_size));
  shape = resolve_mesh_shape(shape, world_size);
  int data_size = shape[0], model_size = shape[1];
  int data_rank = world_rank / model_size, model_rank = world_rank % model_size;
  MPI_Comm data_comm, model_comm;
  // Ranks with the same model rank form a data group (and the other way round).
  MAGIX_CHECK_MPI(MPI_Comm_split(MPI_COMM_WORLD, model_rank, data_rank, &data_comm));
  MAGIX_CHECK_MPI(MPI_Comm_split(MPI_COMM_WORLD, data_rank, model_rank, &model_comm));
  MPI_Comm_set_errhandler(data_comm, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(model_comm, MPI_ERRORS_RETURN);
  return Mesh(data_size, model_size, std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world"),
              std::make_unique<MpiCommunicator>(data_comm, "data"),
              std::make_unique<MpiCommunicator>(model_comm, "model"));
}

}  // namespace magix
