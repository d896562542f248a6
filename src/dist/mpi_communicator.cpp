// The MPI engine behind Communicator, and the Runtime that owns the MPI world. The only file
// that includes mpi.h.
// The C API only: no MPI C++ bindings.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

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
// Whether MPI_Init_thread gave MPI_THREAD_MULTIPLE: communication threads need it (their calls
// run beside the main thread's).
bool g_thread_multiple = false;

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

// Marks the collective in progress for on_terminate (main thread only: `mark`), and adds its
// wall time to `seconds`.
class OpScope {
 public:
  OpScope(const char* op, const std::string& group, double& seconds, bool mark = true)
      : seconds_(seconds), start_(MPI_Wtime()), mark_(mark) {
    if (mark_) {
      std::snprintf(g_current_op, sizeof g_current_op, "%s over the %s axis", op, group.c_str());
    }
  }
  ~OpScope() {
    if (mark_) g_current_op[0] = '\0';
    seconds_ += MPI_Wtime() - start_;
  }

 private:
  double& seconds_;
  double start_;
  bool mark_;
};

// How often a communication thread tests its request. Open MPI moves bytes of a non-blocking
// collective only inside MPI calls, so the thread must call in; a blocking call would spin a
// core the compute needs, a sleep between tests leaves it free (docs/multihost.md measures it).
constexpr auto kPollInterval = std::chrono::microseconds(50);

// MPI counts are int: large buffers go in chunks.
constexpr size_t kMaxChunk = size_t{1} << 30;

MPI_Op to_mpi(ReduceOp op) {
  return op == ReduceOp::kSum ? MPI_SUM : MPI_MAX;
}

class CommThread;

class MpiCommunicator final : public Communicator {
 public:
  // on_thread: the communicator of a communication thread (CommThread): non-blocking calls
  // waited by polling, and on_terminate's marker left to the main thread.
  MpiCommunicator(MPI_Comm comm, std::string name, bool on_thread = false)
      : comm_(comm), name_(std::move(name)), on_thread_(on_thread) {
    MAGIX_CHECK_MPI(MPI_Comm_rank(comm_, &rank_));
    MAGIX_CHECK_MPI(MPI_Comm_size(comm_, &size_));
  }
  ~MpiCommunicator() override;
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
    OpScope scope("all_gather", name_, seconds_, !on_thread_);
    int n = static_cast<int>(in.size());
    if (!on_thread_) {
      MAGIX_CHECK_MPI(MPI_Allgather(in.data(), n, MPI_FLOAT, out.data(), n, MPI_FLOAT, comm_));
      return;
    }
    MPI_Request req;
    MAGIX_CHECK_MPI(
        MPI_Iallgather(in.data(), n, MPI_FLOAT, out.data(), n, MPI_FLOAT, comm_, &req));
    poll(req);
  }
  // Every rank's chunks go to their owners (an all-to-all, no arithmetic), then each rank sums
  // the chunks it received in rank order: the same sum whichever algorithm MPI picks, and on the
  // communication thread (non-blocking all-to-all) the same bits as here.
  void reduce_scatter(std::span<const float> in, std::span<float> out) override {
    MAGIX_CHECK(in.size() == out.size() * static_cast<size_t>(size_),
                "reduce_scatter over {}: input has {} elements, expected {} x {}", name_, in.size(),
                size_, out.size());
    MAGIX_CHECK(out.size() <= std::numeric_limits<int>::max(),
                "reduce_scatter over {}: {} elements per rank is too many", name_, out.size());
    OpScope scope("reduce_scatter", name_, seconds_, !on_thread_);
    const int n = static_cast<int>(out.size());
    std::vector<float> chunks(in.size());
    if (!on_thread_) {
      MAGIX_CHECK_MPI(
          MPI_Alltoall(in.data(), n, MPI_FLOAT, chunks.data(), n, MPI_FLOAT, comm_));
    } else {
      MPI_Request req;
      MAGIX_CHECK_MPI(
          MPI_Ialltoall(in.data(), n, MPI_FLOAT, chunks.data(), n, MPI_FLOAT, comm_, &req));
      poll(req);
    }
    std::copy_n(chunks.data(), out.size(), out.data());
    for (int r = 1; r < size_; ++r) {
      const float* c = chunks.data() + static_cast<size_t>(r) * out.size();
      for (size_t i = 0; i < out.size(); ++i) out[i] += c[i];
    }
  }
  void broadcast(std::span<std::byte> data, int root) override {
    OpScope scope("broadcast", name_, seconds_);
    for (size_t i = 0; i < data.size(); i += kMaxChunk) {
      int n = static_cast<int>(std::min(kMaxChunk, data.size() - i));
      MAGIX_CHECK_MPI(MPI_Bcast(data.data() + i, n, MPI_BYTE, root, comm_));
    }
  }
  void barrier() override {
    OpScope scope("barrier", name_, seconds_, !on_thread_);
    MAGIX_CHECK_MPI(MPI_Barrier(comm_));
  }
  PendingCollective run_async(std::function<void(Communicator&)> task) override;

 private:
  // Waits for `req` by testing it every kPollInterval (communication thread).
  void poll(MPI_Request& req) {
    for (;;) {
      int done = 0;
      MAGIX_CHECK_MPI(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
      if (done) return;
      std::this_thread::sleep_for(kPollInterval);
    }
  }

  MPI_Comm comm_;
  std::string name_;
  bool on_thread_;
  int rank_ = 0;
  int size_ = 1;
  double seconds_ = 0.0;
  std::unique_ptr<CommThread> thread_;  // started by the first run_async
};

// One thread running a group's background collectives in submission order, on a duplicate of the
// group's communicator (MPI_Comm_dup: its messages never match the main thread's).
class CommThread {
 public:
  CommThread(MPI_Comm comm, const std::string& name) {
    MPI_Comm dup;
    MAGIX_CHECK_MPI(MPI_Comm_dup(comm, &dup));  // collective over the group, on the main thread
    MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
    comm_ = std::make_unique<MpiCommunicator>(dup, name, /*on_thread=*/true);
    thread_ = std::thread([this] { loop(); });
  }
  // Tasks not started are dropped (their waits report it); a running one finishes.
  ~CommThread() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
      queue_.clear();
    }
    cv_.notify_one();
    thread_.join();
  }
  std::future<void> submit(std::function<void(Communicator&)> task) {
    std::packaged_task<void()> job([this, task = std::move(task)] { task(*comm_); });
    std::future<void> done = job.get_future();
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(job));
    }
    cv_.notify_one();
    return done;
  }

 private:
  void loop() {
    for (;;) {
      std::packaged_task<void()> job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job();  // errors go to the task's future
    }
  }

  std::unique_ptr<MpiCommunicator> comm_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::packaged_task<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

MpiCommunicator::~MpiCommunicator() {
  thread_.reset();  // before the communicator it duplicated goes
  if (comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

PendingCollective MpiCommunicator::run_async(std::function<void(Communicator&)> task) {
  // Without MPI_THREAD_MULTIPLE (or within a communication thread) the task runs here.
  if (on_thread_ || !g_thread_multiple || size_ == 1) return Communicator::run_async(std::move(task));
  if (!thread_) thread_ = std::make_unique<CommThread>(comm_, name_);
  auto done = std::make_shared<std::future<void>>(thread_->submit(std::move(task)));
  return PendingCollective([this, done] {
    OpScope scope("a collective of the communication thread", name_, seconds_);
    done->get();
  });
}

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
    // MULTIPLE: a communication thread (Communicator::run_async) calls MPI beside the main
    // thread. Where the library gives less, run_async runs its tasks on the calling thread.
    MAGIX_CHECK_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
    g_thread_multiple = provided >= MPI_THREAD_MULTIPLE;
  } else {
    int provided = 0;
    MPI_Query_thread(&provided);
    g_thread_multiple = provided >= MPI_THREAD_MULTIPLE;
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
