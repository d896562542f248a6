// CheckpointManager: sharded, asynchronous, atomic saves (docs/checkpoints.md).
//
// One save: (calling thread, collective) world rank 0 creates dir/.tmp-STEP/; every rank copies
// the shards it owns into host buffers; then (background thread, no MPI) each rank writes
// <item>/rank-R.bin + its shard list .shards-rank-R.json and fsyncs them; then (poll()/wait() on
// the calling thread, collective) an all-reduce of "done"/"failed" flags, a barrier, and world
// rank 0 merges the lists into index.json, renames .tmp-STEP to STEP, fsyncs the parent and
// applies max_to_keep.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <functional>
#include <map>
#include <thread>

#include "io/checkpoint_format.hpp"
#include "io/safetensors_util.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"

namespace magix {

namespace fs = std::filesystem;
using nlohmann::json;

void append_sharded_tensors(std::vector<ShardedTensor>& out, const ParamInfo& info,
                            const std::string& name, const Tensor& local) {
  if (info.pieces.empty()) {
    out.push_back(ShardedTensor{name, info.global_shape, info.spec, info.box_start, local});
    return;
  }
  int64_t row = 0;  // the pieces are stacked along dim 0 of the local tensor
  for (const ShardBox& box : info.pieces) {
    out.push_back(
        ShardedTensor{name, info.global_shape, info.spec, box.start, local.rows(row, box.extent[0])});
    row += box.extent[0];
  }
}

std::vector<ShardedTensor> sharded_tensors(const ParameterSet& params, const std::string& prefix) {
  std::vector<ShardedTensor> out;
  out.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    append_sharded_tensors(out, params.info(i), prefix + params.info(i).name,
                           params.tensor(i));  // shares storage
  }
  return out;
}

namespace {

// A shard this rank writes: async, a private host copy of its bytes taken at save() time; sync,
// the caller's tensor itself (it cannot change during the call).
// Host memory for shard copies: large buffers 2 MiB-aligned with transparent huge pages advised
// (first-touch page faults dominate a fresh copy's cost).
struct FreeDeleter {
  void operator()(std::byte* p) const { std::free(p); }
};
using HostBuffer = std::unique_ptr<std::byte, FreeDeleter>;

HostBuffer allocate_host(size_t n) {
  constexpr size_t kHuge = size_t{2} << 20;
  void* p = nullptr;
  if (n >= kHuge) {
    const size_t rounded = (n + kHuge - 1) / kHuge * kHuge;
    p = std::aligned_alloc(kHuge, rounded);
    if (p != nullptr) ::madvise(p, rounded, MADV_HUGEPAGE);
  } else {
    p = std::malloc(std::max<size_t>(n, 1));
  }
  MAGIX_CHECK(p != nullptr, "checkpoint: cannot allocate {} bytes of host memory", n);
  return HostBuffer(static_cast<std::byte*>(p));
}

struct PendingShard {
  ckpt::ShardRecord record;  // offset/nbytes/xxh3 filled by the writer
  HostBuffer copy;           // async: the values at save() time
  Tensor source;             // sync: the caller's storage
  size_t nbytes = 0;
  const std::byte* bytes() const { return copy ? copy.get() : source.bytes(); }
};

// Runs `fn` on world rank 0 and makes its success or failure known to every rank (broadcast):
// rank 0 rethrows its own error, the others throw one that points at rank 0.
void on_root(const Mesh& mesh, const std::string& what, const std::function<void()>& fn) {
  std::string error;
  if (mesh.world_rank() == 0) {
    try {
      fn();
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  std::byte failed{error.empty() ? uint8_t{0} : uint8_t{1}};
  mesh.world().broadcast(std::span<std::byte>(&failed, 1), 0);
  if (failed == std::byte{0}) return;
  if (mesh.world_rank() == 0) MAGIX_FAIL("{}", error);
  MAGIX_FAIL("{}: failed on world rank 0 (see its error)", what);
}

constexpr const char* kLockFile = ".lock";

void remove_tree(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  MAGIX_CHECK(!ec, "cannot remove {}: {}", p.string(), ec.message());
}

}  // namespace

struct CheckpointManager::Impl {
  // World rank 0: the advisory lock on dir/.lock, held for the manager's life (declared first,
  // released last). The kernel drops it when the process dies, however it dies.
  io::FileHandle lock;
  fs::path dir;
  const Mesh* mesh;
  CheckpointOptions options;

  // The save in flight (one at most).
  struct Pending {
    int64_t step = 0;
    fs::path tmp;
    std::vector<PendingShard> shards;
    std::string trainer_state;                                       // world rank 0
    std::vector<std::pair<std::string, std::string>> extras;         // world rank 0: name, contents
    std::map<std::string, std::pair<uint64_t, uint64_t>> file_sums;  // rank 0: nbytes, xxh3
    std::thread thread;
    std::atomic<int> state{0};  // 0 writing, 1 written, 2 failed
    std::string error;          // set before state becomes 2
  };
  std::unique_ptr<Pending> pending;
  // keep_host_buffers: the host copies of the last save, by size, reused by the next one.
  std::multimap<size_t, HostBuffer> spare;

  void write_files(Pending& p);
  void finish(bool block);
  void commit(Pending& p);
  void apply_retention(int64_t newest);
  void clean_debris();
  void lock_dir();

  // World rank 0: removes the steps retention renamed to .tmp-delete-* off the calling thread
  // (deleting GBs would stall training in poll()). No MPI; joined before the next retention
  // and by the destructor; what it leaves is debris the next manager removes.
  std::thread janitor;
  void join_janitor() {
    if (janitor.joinable()) janitor.join();
  }
};

// Background (or inline) part of a save: this rank's files, fsynced. Never touches MPI.
void CheckpointManager::Impl::write_files(Pending& p) {
  try {
    const int rank = mesh->world_rank();
    std::map<std::string, std::vector<PendingShard*>> by_item;
    for (PendingShard& s : p.shards) by_item[s.record.item].push_back(&s);
    for (auto& [item, shards] : by_item) {
      const fs::path path = p.tmp / ckpt::rank_file(item, rank);
      int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      MAGIX_CHECK(fd >= 0, "cannot create {}: {}", path.string(), std::strerror(errno));
      io::FileHandle handle(fd);
      uint64_t offset = 0;
      for (PendingShard* s : shards) {
        const size_t n = s->nbytes;
        s->record.file = ckpt::rank_file(item, rank);
        s->record.offset = offset;
        s->record.nbytes = n;
        s->record.xxh3 = ckpt::checksum(s->bytes(), n);
        io::write_all(fd, s->bytes(), n, path);
        offset += n;
        if (!options.keep_host_buffers) s->copy.reset();  // release it once written
        s->source = Tensor();
      }
      MAGIX_CHECK(::fsync(fd) == 0, "cannot fsync {}: {}", path.string(), std::strerror(errno));
    }
    std::vector<ckpt::ShardRecord> records;
    for (const PendingShard& s : p.shards) records.push_back(s.record);
    const std::string list = ckpt::shard_list_to_json(records).dump();
    ckpt::write_file_synced(p.tmp / ckpt::rank_list_file(rank), list.data(), list.size());
    if (rank == 0) {
      auto write = [&](const std::string& name, const std::string& contents) {
        ckpt::write_file_synced(p.tmp / name, contents.data(), contents.size());
        p.file_sums[name] = {contents.size(), ckpt::checksum(contents.data(), contents.size())};
      };
      write(std::string(ckpt::kTrainerStateFile), p.trainer_state);
      for (const auto& [name, contents] : p.extras) write(name, contents);
    }
    p.state.store(1);
  } catch (const std::exception& e) {
    p.error =
        fmt::format("checkpoint step {}: world rank {}: {}", p.step, mesh->world_rank(), e.what());
    p.state.store(2);
  }
}

// World rank 0: merge every rank's shard list into index.json, then rename into place.
void CheckpointManager::Impl::commit(Pending& p) {
  const int world = mesh->world_size();
  // item -> tensor -> (dtype, shape, shards)
  std::map<std::string, std::map<std::string, std::vector<ckpt::ShardRecord>>> tensors;
  for (int r = 0; r < world; ++r) {
    const fs::path list = p.tmp / ckpt::rank_list_file(r);
    std::vector<ckpt::ShardRecord> records;
    try {
      records = ckpt::shard_list_from_json(io::parse_json_strict(ckpt::read_text_file(list), 64));
    } catch (const Error& e) {
      MAGIX_FAIL("checkpoint step {}: {}: {}", p.step, list.string(), e.what());
    }
    for (ckpt::ShardRecord& s : records) tensors[s.item][s.tensor].push_back(std::move(s));
  }
  json items = json::object();
  for (auto& [item, by_name] : tensors) {
    json jt = json::object();
    for (auto& [name, shards] : by_name) {
      const ckpt::ShardRecord& first = shards.front();
      for (const ckpt::ShardRecord& s : shards) {
        MAGIX_CHECK(s.dtype == first.dtype && s.global_shape == first.global_shape,
                    "checkpoint step {}: ranks disagree on the dtype or shape of {}/{}", p.step,
                    item, name);
      }
      // Every element written exactly once (ownership of replicated boxes is consistent).
      ckpt::check_tiling(first.global_shape, first.dtype, shards,
                         fmt::format("checkpoint step {}: tensor {}/{}", p.step, item, name));
      json js = json::array();
      for (const ckpt::ShardRecord& s : shards) js.push_back(ckpt::shard_to_json(s));
      jt[name] = json{{"dtype", std::string(dtype_name(first.dtype))},
                      {"shape", first.global_shape},
                      {"shards", std::move(js)}};
    }
    items[item] = std::move(jt);
  }
  json extra = json::array();
  for (const auto& e : p.extras) extra.push_back(e.first);
  json files = json::object();
  for (const auto& [name, sum] : p.file_sums) {
    files[name] = json{{"nbytes", sum.first}, {"xxh3", ckpt::checksum_hex(sum.second)}};
  }
  const json index{{"format", std::string(ckpt::kFormatName)},
                   {"version", ckpt::kFormatVersion},
                   {"step", p.step},
                   {"world_size", world},
                   {"mesh", {{"data", mesh->data_size()}, {"model", mesh->model_size()}}},
                   {"extra_files", extra},
                   {"files", files},
                   {"items", std::move(items)}};
  for (int r = 0; r < world; ++r) fs::remove(p.tmp / ckpt::rank_list_file(r));
  for (const auto& [item, unused] : tensors) io::fsync_dir(p.tmp / item);
  const std::string text = index.dump(1);
  io::write_file_atomically(p.tmp / ckpt::kIndexFile, [&](int fd, const fs::path& tmp) {
    io::write_all(fd, text.data(), text.size(), tmp);
  });  // fsyncs the file and p.tmp
  const fs::path final_dir = dir / ckpt::step_name(p.step);
  MAGIX_CHECK(::rename(p.tmp.c_str(), final_dir.c_str()) == 0, "cannot rename {} to {}: {}",
              p.tmp.string(), final_dir.string(), std::strerror(errno));
  io::fsync_dir(dir);
}

// World rank 0, after a commit: removes the oldest committed steps beyond max_to_keep, only
// older than `newest`. A step is first renamed to .tmp-delete-STEP (so that a crash halfway
// through never leaves a half-deleted step looking committed), then removed.
void CheckpointManager::Impl::apply_retention(int64_t newest) {
  join_janitor();
  if (options.max_to_keep <= 0) return;
  std::vector<int64_t> all;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    auto s = ckpt::parse_step_name(e.path().filename().string());
    if (s && fs::is_regular_file(e.path() / ckpt::kIndexFile)) all.push_back(*s);
  }
  std::sort(all.begin(), all.end());
  const size_t keep = static_cast<size_t>(options.max_to_keep);
  if (all.size() <= keep) return;
  bool renamed = false;
  for (size_t i = 0; i + keep < all.size(); ++i) {
    if (all[i] >= newest) break;
    const fs::path from = dir / ckpt::step_name(all[i]);
    const fs::path to = dir / fmt::format("{}delete-{}", ckpt::kTmpPrefix, ckpt::step_name(all[i]));
    MAGIX_CHECK(::rename(from.c_str(), to.c_str()) == 0, "cannot rename {} to {}: {}",
                from.string(), to.string(), std::strerror(errno));
    renamed = true;
  }
  if (!renamed) return;
  io::fsync_dir(dir);
  std::vector<fs::path> doomed;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with(fmt::format("{}delete-", ckpt::kTmpPrefix))) doomed.push_back(e.path());
  }
  janitor = std::thread([doomed = std::move(doomed)] {
    for (const fs::path& p : doomed) {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  });
}

// World rank 0: removes .tmp-* entries and step-named directories without index.json.
// flock(LOCK_EX | LOCK_NB) on dir/.lock; refused at once, naming the holder, while another
// process holds it. The file's content (pid, host, start time) is only informational: a stale
// file left by a killed run does not block, as its lock died with it.
void CheckpointManager::Impl::lock_dir() {
  const fs::path path = dir / kLockFile;
  io::FileHandle fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  MAGIX_CHECK(fd.get() >= 0, "cannot open the lock file {}: {}", path.string(),
              std::strerror(errno));
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    MAGIX_CHECK(err == EWOULDBLOCK, "cannot lock {}: {}", path.string(), std::strerror(err));
    char buf[256] = {};
    const ssize_t n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
    std::string holder(buf, n > 0 ? static_cast<size_t>(n) : 0);
    for (char& c : holder) {
      if (c == '\n') c = ' ';
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    }
    while (!holder.empty() && holder.back() == ' ') holder.pop_back();
    MAGIX_FAIL(
        "checkpoint dir {} is in use by another run ({}; lock file {}): wait for it to finish, "
        "or use another --checkpoint_dir",
        dir.string(), holder.empty() ? "holder unknown" : holder, path.string());
  }
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "?");
  const std::string info = fmt::format("pid {} host {} since {}\n", ::getpid(), host,
                                       static_cast<long long>(::time(nullptr)));
  if (::ftruncate(fd.get(), 0) == 0) {
    [[maybe_unused]] const ssize_t w = ::pwrite(fd.get(), info.data(), info.size(), 0);
  }
  lock = std::move(fd);
}

void CheckpointManager::Impl::clean_debris() {
  std::vector<fs::path> debris;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with(ckpt::kTmpPrefix)) {
      debris.push_back(e.path());
    } else if (ckpt::parse_step_name(name) && e.is_directory() &&
               !fs::is_regular_file(e.path() / ckpt::kIndexFile)) {
      debris.push_back(e.path());
    }
  }
  for (const fs::path& p : debris) remove_tree(p);
  if (!debris.empty()) io::fsync_dir(dir);
}

// Collective. Finishes the save in flight if every rank has written its files (block: wait
// for this rank's writer first). Commits, or cleans up and throws on a writer error.
void CheckpointManager::Impl::finish(bool block) {
  if (!pending) return;
  Pending& p = *pending;
  if (block && p.thread.joinable()) p.thread.join();
  const int state = p.state.load();
  double flags[2] = {state == 0 ? 1.0 : 0.0, state == 2 ? 1.0 : 0.0};
  mesh->world().all_reduce(std::span<double>(flags, 2), ReduceOp::kMax);
  if (flags[1] == 0.0 && flags[0] != 0.0) return;  // still writing somewhere
  // Every rank is done (or some failed): join the writers (they have finished or will soon).
  if (p.thread.joinable()) p.thread.join();
  std::unique_ptr<Pending> done = std::move(pending);
  if (options.keep_host_buffers) {
    for (PendingShard& s : done->shards) {
      if (s.copy) spare.emplace(s.nbytes, std::move(s.copy));
    }
  }
  mesh->world().barrier();
  if (flags[1] != 0.0) {
    try {
      on_root(*mesh, "checkpoint cleanup", [&] { remove_tree(done->tmp); });
    } catch (const Error&) {
      // The writer's error below is the one to report.
    }
    if (done->state.load() == 2) MAGIX_FAIL("{}", done->error);
    MAGIX_FAIL("checkpoint step {}: another rank failed to write its shards (see its error)",
               done->step);
  }
  on_root(*mesh, fmt::format("checkpoint step {} commit", done->step), [&] {
    commit(*done);
    apply_retention(done->step);
  });
}

CheckpointManager::CheckpointManager(fs::path dir, const Mesh& mesh, CheckpointOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->dir = std::move(dir);
  impl_->mesh = &mesh;
  impl_->options = options;
  on_root(mesh, "checkpoint manager", [&] {
    std::error_code ec;
    fs::create_directories(impl_->dir, ec);
    MAGIX_CHECK(!ec, "cannot create checkpoint dir {}: {}", impl_->dir.string(), ec.message());
    impl_->lock_dir();  // before touching anything another run may be writing
    impl_->clean_debris();
  });
}

CheckpointManager::~CheckpointManager() {
  if (!impl_) return;
  struct JoinJanitor {
    Impl* impl;
    ~JoinJanitor() { impl->join_janitor(); }
  } join_janitor{impl_.get()};  // after the commit below, which may start it
  if (!impl_->pending) return;
  if (impl_->pending->thread.joinable()) impl_->pending->thread.join();
  if (std::uncaught_exceptions() > 0) return;  // unwinding: no collectives; left uncommitted
  try {
    impl_->finish(/*block=*/true);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "magix: checkpoint: %s\n", e.what());
  }
}

const fs::path& CheckpointManager::dir() const {
  return impl_->dir;
}

std::vector<int64_t> CheckpointManager::steps() const {
  std::vector<int64_t> out;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(impl_->dir, ec)) {
    auto s = ckpt::parse_step_name(e.path().filename().string());
    if (s && fs::is_regular_file(e.path() / ckpt::kIndexFile)) out.push_back(*s);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<int64_t> CheckpointManager::latest_step() const {
  auto s = steps();
  if (s.empty()) return std::nullopt;
  return s.back();
}

fs::path CheckpointManager::step_dir(int64_t step) const {
  return impl_->dir / ckpt::step_name(step);
}

void CheckpointManager::save(int64_t step, const CheckpointItems& items,
                             const nlohmann::json& trainer_state,
                             const std::vector<fs::path>& extra_files) {
  impl_->finish(/*block=*/true);
  const Mesh& mesh = *impl_->mesh;
  const fs::path final_dir = step_dir(step);
  MAGIX_CHECK(!fs::exists(final_dir), "checkpoint step {} already exists: {}", step,
              final_dir.string());

  auto p = std::make_unique<Impl::Pending>();
  p->step = step;
  p->tmp = impl_->dir / (std::string(ckpt::kTmpPrefix) + ckpt::step_name(step));
  // Validate, and pick the shards this rank owns: a box replicated over an axis (the spec does
  // not use it) is written by coordinate 0 of that axis only.
  std::vector<std::string> reserved = {std::string(ckpt::kIndexFile),
                                       std::string(ckpt::kTrainerStateFile)};
  for (const auto& [item, tensors] : items) {
    ckpt::check_item_name(item);
    reserved.push_back(item);
    // A tensor may come in several boxes (a fused tensor's parts), never the same box twice.
    std::vector<std::pair<std::string, Shape>> names;
    for (const ShardedTensor& t : tensors) {
      const std::string where = fmt::format("checkpoint item '{}' tensor '{}'", item, t.name);
      MAGIX_CHECK(!t.name.empty(), "checkpoint item '{}': a tensor without a name", item);
      names.emplace_back(t.name, t.box_start);
      MAGIX_CHECK(t.local.defined(), "{}: no local tensor", where);
      MAGIX_CHECK(t.box_start.size() == t.global_shape.size() &&
                      t.local.shape().size() == t.global_shape.size(),
                  "{}: box start {} / local shape {} do not match the global shape {}", where,
                  shape_str(t.box_start), shape_str(t.local.shape()), shape_str(t.global_shape));
      for (size_t d = 0; d < t.global_shape.size(); ++d) {
        MAGIX_CHECK(t.box_start[d] >= 0 && t.box_start[d] + t.local.shape()[d] <= t.global_shape[d],
                    "{}: box start {} extent {} lies outside the shape {}", where,
                    shape_str(t.box_start), shape_str(t.local.shape()), shape_str(t.global_shape));
      }
      bool owner = true;
      for (const char* axis : {"data", "model"}) {
        if (!t.spec.uses(axis) && mesh.axis_rank(axis) != 0) owner = false;
      }
      if (!owner) continue;
      PendingShard s;
      s.record.item = item;
      s.record.tensor = t.name;
      s.record.dtype = t.local.dtype();
      s.record.global_shape = t.global_shape;
      s.record.start = t.box_start;
      s.record.extent = t.local.shape();
      s.nbytes = t.local.nbytes();
      if (impl_->options.async) {
        auto spare = impl_->spare.find(s.nbytes);  // a buffer of the previous save
        if (spare != impl_->spare.end()) {
          s.copy = std::move(spare->second);
          impl_->spare.erase(spare);
        } else {
          s.copy = allocate_host(s.nbytes);
        }
        // The values at save() time. One thread: memcpy is bound by memory bandwidth, and
        // OpenMP threads competing with busy cores made it 3x slower in bench_checkpoint.
        if (s.nbytes > 0) std::memcpy(s.copy.get(), t.local.bytes(), s.nbytes);
      } else {
        s.source = t.local;  // shares storage; written before save() returns
      }
      p->shards.push_back(std::move(s));
    }
    std::sort(names.begin(), names.end());
    auto dup = std::adjacent_find(names.begin(), names.end());
    MAGIX_CHECK(dup == names.end(), "checkpoint item '{}': tensor '{}' given twice", item,
                dup == names.end() ? std::string() : dup->first);
  }
  impl_->spare.clear();  // buffers of shapes this save no longer has
  Impl::Pending& pr0 = *p;
  const fs::path tmp = p->tmp;
  on_root(mesh, fmt::format("checkpoint step {}", step), [&] {
    pr0.trainer_state = trainer_state.dump(1);
    for (const fs::path& f : extra_files) {
      const std::string name = f.filename().string();
      MAGIX_CHECK(!name.empty() && !name.starts_with(".") &&
                      std::find(reserved.begin(), reserved.end(), name) == reserved.end(),
                  "checkpoint extra file '{}' has a reserved name", f.string());
      for (const auto& e : pr0.extras) {
        MAGIX_CHECK(e.first != name, "checkpoint extra files: '{}' given twice", name);
      }
      pr0.extras.emplace_back(name, ckpt::read_text_file(f));
    }
    remove_tree(tmp);  // a failed earlier attempt at this step
    fs::create_directories(tmp);
    for (const auto& [item, unused] : items) fs::create_directories(tmp / item);
    // Not fsynced here: the commit fsyncs the step directory and its parent.
  });
  impl_->pending = std::move(p);
  Impl::Pending& pr = *impl_->pending;
  if (impl_->options.async) {
    pr.thread = std::thread([impl = impl_.get(), &pr] { impl->write_files(pr); });
  } else {
    impl_->write_files(pr);
    impl_->finish(/*block=*/true);
  }
}

void CheckpointManager::poll() {
  impl_->finish(/*block=*/false);
}

void CheckpointManager::wait() {
  impl_->finish(/*block=*/true);
}

}  // namespace magix
