// CheckpointReader: a committed step onto any mesh, every shard read verified by its checksum;
// load_checkpoint_decoder (docs/checkpoints.md).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "io/checkpoint_format.hpp"
#include "io/safetensors_util.hpp"
#include "magix/checkpoint.hpp"
#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"
#include "magix/json_parse.hpp"
#include "magix/memory_check.hpp"

namespace magix {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Converts n elements from `src` (dtype s) to `dst` (dtype d).
void convert_run(const std::byte* src, DType s, std::byte* dst, DType d, size_t n) {
  if (s == d) {
    std::memcpy(dst, src, n * dtype_size(s));
    return;
  }
  auto is_float = [](DType t) { return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16; };
  MAGIX_CHECK(is_float(s) && is_float(d), "cannot convert a stored {} tensor to {}", dtype_name(s),
              dtype_name(d));
  std::vector<float> tmp;
  const float* f = nullptr;
  if (s == DType::kF32) {
    f = reinterpret_cast<const float*>(src);
  } else {
    tmp.resize(n);
    std::span<const uint16_t> in(reinterpret_cast<const uint16_t*>(src), n);
    if (s == DType::kBF16) {
      bf16_to_float(in, tmp);
    } else {
      f16_to_float(in, tmp);
    }
    f = tmp.data();
  }
  if (d == DType::kF32) {
    std::memcpy(dst, f, n * sizeof(float));
  } else if (d == DType::kBF16) {
    float_to_bf16(std::span<const float>(f, n),
                  std::span<uint16_t>(reinterpret_cast<uint16_t*>(dst), n));
  } else {
    auto* out = reinterpret_cast<uint16_t*>(dst);
    for (size_t i = 0; i < n; ++i) out[i] = float_to_f16(f[i]);
  }
}

// Copies the intersection of a shard box (data `src`, box [s_start, s_start + s_ext)) and a
// target box (data `dst`, box [d_start, d_start + d_ext)), both row-major, with conversion.
void copy_intersection(const std::byte* src, DType s_dtype, const Shape& s_start,
                       const Shape& s_ext, std::byte* dst, DType d_dtype, const Shape& d_start,
                       const Shape& d_ext) {
  const size_t nd = s_start.size();
  if (nd == 0) {
    convert_run(src, s_dtype, dst, d_dtype, 1);
    return;
  }
  Shape lo(nd), hi(nd);
  for (size_t d = 0; d < nd; ++d) {
    lo[d] = std::max(s_start[d], d_start[d]);
    hi[d] = std::min(s_start[d] + s_ext[d], d_start[d] + d_ext[d]);
    if (lo[d] >= hi[d]) return;
  }
  const size_t ss = dtype_size(s_dtype), ds = dtype_size(d_dtype);
  const size_t run = static_cast<size_t>(hi[nd - 1] - lo[nd - 1]);
  Shape idx = lo;  // global index of the current run's first element (last dim fixed at lo)
  while (true) {
    int64_t so = 0, doff = 0;
    for (size_t d = 0; d < nd; ++d) {
      so = so * s_ext[d] + (idx[d] - s_start[d]);
      doff = doff * d_ext[d] + (idx[d] - d_start[d]);
    }
    convert_run(src + static_cast<size_t>(so) * ss, s_dtype, dst + static_cast<size_t>(doff) * ds,
                d_dtype, run);
    // Next run: increment dims nd-2 .. 0.
    int d = static_cast<int>(nd) - 2;
    for (; d >= 0; --d) {
      if (++idx[static_cast<size_t>(d)] < hi[static_cast<size_t>(d)]) break;
      idx[static_cast<size_t>(d)] = lo[static_cast<size_t>(d)];
    }
    if (d < 0) return;
  }
}

// dir/name after checking its size and XXH3 against the index's record.
fs::path verify_step_file(const fs::path& dir, const std::string& name, uint64_t nbytes,
                          uint64_t xxh3) {
  const fs::path path = dir / name;
  uint64_t size = 0;
  io::FileHandle fd = io::open_for_reading(path, &size);
  MAGIX_CHECK(size == nbytes,
              "checkpoint file {} does not match the step's index: it has {} bytes, the index "
              "says {}",
              path.string(), size, nbytes);
  std::string buf(size, '\0');
  io::read_exact(fd.get(), 0, buf.data(), size, path);
  MAGIX_CHECK(ckpt::checksum(buf.data(), size) == xxh3,
              "checkpoint file {} does not match the step's index: it fails its checksum "
              "(altered or corrupt)",
              path.string());
  return path;
}

}  // namespace

struct CheckpointReader::Impl {
  fs::path dir;
  int64_t step = 0;
  std::map<std::string, std::map<std::string, ckpt::IndexTensor>> items;
  std::vector<std::string> extra_files;
  std::map<std::string, std::pair<uint64_t, uint64_t>> files;  // name -> nbytes, xxh3

  fs::path index_path() const { return dir / ckpt::kIndexFile; }
};

CheckpointReader::CheckpointReader(fs::path step_dir) : impl_(std::make_unique<Impl>()) {
  impl_->dir = std::move(step_dir);
  const fs::path index_path = impl_->index_path();
  const std::string name = impl_->dir.filename().string();
  MAGIX_CHECK(fs::is_directory(impl_->dir), "checkpoint {} is not a directory",
              impl_->dir.string());
  MAGIX_CHECK(!name.starts_with(ckpt::kTmpPrefix),
              "checkpoint {} is an uncommitted (temporary) directory", impl_->dir.string());
  MAGIX_CHECK(fs::is_regular_file(index_path),
              "checkpoint {} is not committed (no {}): an interrupted save?", impl_->dir.string(),
              ckpt::kIndexFile);
  try {
    ckpt::StepIndex index = ckpt::parse_index(ckpt::read_text_file(index_path));
    impl_->step = index.step;
    impl_->files = std::move(index.files);
    impl_->extra_files = std::move(index.extra_files);
    impl_->items = std::move(index.items);
  } catch (const Error& e) {
    MAGIX_FAIL("checkpoint index {}: {}", index_path.string(), e.what());
  }
  // Every file of the step besides the shards (trainer state, config.json, tokenizer files...)
  // is checked here, once, before any reader uses it: a reader of a step (generate, score,
  // export, resume, --lora) never sees a file the index does not vouch for. Shards are checked
  // as they are read.
  for (const auto& [name, record] : impl_->files) {
    verify_step_file(impl_->dir, name, record.first, record.second);
  }
}

CheckpointReader::~CheckpointReader() = default;
CheckpointReader::CheckpointReader(CheckpointReader&&) noexcept = default;

const fs::path& CheckpointReader::dir() const {
  return impl_->dir;
}

int64_t CheckpointReader::step() const {
  return impl_->step;
}

std::vector<std::string> CheckpointReader::extra_files() const {
  return impl_->extra_files;
}

fs::path CheckpointReader::checked_file(const std::string& name) const {
  auto it = impl_->files.find(name);
  MAGIX_CHECK(it != impl_->files.end(), "checkpoint {} has no file '{}' in its index",
              impl_->dir.string(), name);
  return verify_step_file(impl_->dir, name, it->second.first, it->second.second);
}

json CheckpointReader::trainer_state() const {
  const fs::path path = checked_file(std::string(ckpt::kTrainerStateFile));
  json state;
  try {
    state = io::parse_json_strict(ckpt::read_text_file(path), 256);
  } catch (const Error& e) {
    MAGIX_FAIL("checkpoint trainer state {}: {}", path.string(), e.what());
  }
  json_expect_object(state, path.string());
  return state;
}

std::vector<std::string> CheckpointReader::items() const {
  std::vector<std::string> out;
  for (const auto& [item, unused] : impl_->items) out.push_back(item);
  return out;
}

bool CheckpointReader::has_tensor(const std::string& item, const std::string& name) const {
  auto it = impl_->items.find(item);
  return it != impl_->items.end() && it->second.count(name) > 0;
}

Shape CheckpointReader::global_shape(const std::string& item, const std::string& name) const {
  auto it = impl_->items.find(item);
  MAGIX_CHECK(it != impl_->items.end(), "checkpoint {} has no item '{}'", impl_->dir.string(),
              item);
  auto t = it->second.find(name);
  MAGIX_CHECK(t != it->second.end(), "checkpoint {} has no tensor '{}' in item '{}'",
              impl_->dir.string(), name, item);
  return t->second.shape;
}

void CheckpointReader::read(const std::string& item, std::vector<ShardedTensor>& targets) const {
  auto it = impl_->items.find(item);
  MAGIX_CHECK(it != impl_->items.end(), "checkpoint {} has no item '{}'", impl_->dir.string(),
              item);
  // Plan (single-threaded): validate the targets, list the (target, shard) pairs that
  // intersect, open their files.
  struct Work {
    ShardedTensor* target;
    const ckpt::ShardRecord* shard;
    DType stored;
    int file;
  };
  std::vector<Work> work;
  std::vector<io::FileHandle> files;
  std::map<std::string, int> file_index;  // relative path -> index into files
  for (ShardedTensor& t : targets) {
    auto e = it->second.find(t.name);
    MAGIX_CHECK(e != it->second.end(), "checkpoint {} has no tensor '{}' in item '{}'",
                impl_->dir.string(), t.name, item);
    const ckpt::IndexTensor& entry = e->second;
    MAGIX_CHECK(entry.shape == t.global_shape,
                "checkpoint {}: tensor {}/{} has shape {}, expected {}", impl_->dir.string(), item,
                t.name, shape_str(entry.shape), shape_str(t.global_shape));
    MAGIX_CHECK(t.local.defined() && t.local.shape().size() == t.global_shape.size() &&
                    t.box_start.size() == t.global_shape.size(),
                "checkpoint read of {}/{}: the target box does not match the shape {}", item,
                t.name, shape_str(t.global_shape));
    const Shape& ext = t.local.shape();
    for (size_t d = 0; d < t.global_shape.size(); ++d) {
      MAGIX_CHECK(t.box_start[d] >= 0 && t.box_start[d] + ext[d] <= t.global_shape[d],
                  "checkpoint read of {}/{}: box start {} extent {} lies outside the shape {}",
                  item, t.name, shape_str(t.box_start), shape_str(ext), shape_str(t.global_shape));
    }
    for (const ckpt::ShardRecord& s : entry.shards) {
      bool hit = shape_numel(s.extent) > 0 && shape_numel(ext) > 0;
      for (size_t d = 0; d < s.start.size() && hit; ++d) {
        hit = std::max(s.start[d], t.box_start[d]) <
              std::min(s.start[d] + s.extent[d], t.box_start[d] + ext[d]);
      }
      if (!hit) continue;
      auto f = file_index.find(s.file);
      if (f == file_index.end()) {
        const fs::path path = impl_->dir / s.file;
        uint64_t size = 0;
        files.push_back(io::open_for_reading(path, &size));
        f = file_index.emplace(s.file, static_cast<int>(files.size()) - 1).first;
        // Whole-file check up front: a truncated file fails before anything is copied.
        uint64_t end = 0;
        for (const auto& [name, other] : it->second) {
          for (const ckpt::ShardRecord& o : other.shards) {
            if (o.file == s.file) end = std::max(end, o.offset + o.nbytes);
          }
        }
        MAGIX_CHECK(end <= size, "checkpoint file {} is truncated: {} bytes, its shards end at {}",
                    path.string(), size, end);
      }
      work.push_back(Work{&t, &s, entry.dtype, f->second});
    }
  }

  // Execute: a few threads, each reading whole shards, verifying their checksums and copying
  // the intersection (shards are disjoint, so no two work items write the same bytes). A shard
  // that is exactly the target box in the target's dtype is read in place.
  std::atomic<size_t> next{0};
  std::mutex error_mutex;
  std::string error;
  auto worker = [&] {
    std::vector<std::byte> buf;
    for (size_t i = next++; i < work.size(); i = next++) {
      const Work& w = work[i];
      const ckpt::ShardRecord& s = *w.shard;
      ShardedTensor& t = *w.target;
      try {
        const fs::path path = impl_->dir / s.file;
        const bool in_place =
            s.start == t.box_start && s.extent == t.local.shape() && w.stored == t.local.dtype();
        std::byte* dst = in_place ? t.local.bytes() : nullptr;
        if (!in_place) {
          buf.resize(s.nbytes);
          dst = buf.data();
        }
        io::read_exact(files[static_cast<size_t>(w.file)].get(), s.offset, dst, s.nbytes, path);
        MAGIX_CHECK(ckpt::checksum(dst, s.nbytes) == s.xxh3,
                    "checkpoint file {} is corrupt: the shard of {}/{} at byte {} ({} bytes) "
                    "fails its checksum",
                    path.string(), item, t.name, s.offset, s.nbytes);
        // Non-finite weights or moments would silently poison every result: refused here, in
        // the stored dtype, while the shard is hot in cache.
        const int64_t bad = first_non_finite(dst, w.stored, s.nbytes / dtype_size(w.stored));
        MAGIX_CHECK(bad < 0,
                    "checkpoint file {}: tensor {}/{} has a non-finite value at {}: the "
                    "checkpoint holds NaN or infinity (a diverged run?)",
                    path.string(), item, t.name, box_coordinates(bad, s.start, s.extent));
        if (!in_place) {
          copy_intersection(dst, w.stored, s.start, s.extent, t.local.bytes(), t.local.dtype(),
                            t.box_start, t.local.shape());
        }
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (error.empty()) error = e.what();
        next = work.size();  // stop the others
      }
    }
  };
  const size_t n_threads = std::min<size_t>(work.size(), 4);
  std::vector<std::thread> threads;
  for (size_t k = 1; k < n_threads; ++k) threads.emplace_back(worker);
  worker();
  for (std::thread& th : threads) th.join();
  MAGIX_CHECK(error.empty(), "{}", error);
}

bool is_checkpoint_step(const fs::path& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && !path.filename().string().starts_with(ckpt::kTmpPrefix) &&
         fs::is_regular_file(path / ckpt::kIndexFile, ec);
}

void verify_if_checkpoint_step(const fs::path& path) {
  if (is_checkpoint_step(path)) CheckpointReader reader(path);  // its constructor checks
}

Decoder load_checkpoint_decoder(const fs::path& step_dir, const Mesh& mesh, DecoderOptions options,
                                const PartitionRules* rules) {
  CheckpointReader reader(step_dir);
  const fs::path config_json = reader.checked_file("config.json");
  ModelConfig config = load_model_config(config_json);
  check_model_fits_in_memory(config, config_json.string(),
                             static_cast<double>(dtype_size(options.weight_dtype)), 0,
                             mesh.world_size());
  std::vector<ParamInfo> infos = expected_parameters(config);
  if (rules) apply_partition_rules(infos, *rules, config);
  shard_parameters(infos, mesh);
  ParameterSet params(infos);
  if (options.weight_dtype != DType::kF32) {
    MAGIX_CHECK(options.weight_dtype == DType::kBF16,
                "load_checkpoint_decoder: weight dtype must be F32 or BF16, got {}",
                dtype_name(options.weight_dtype));
    for (size_t i = 0; i < params.size(); ++i) {
      params.tensor(i) = Tensor(params.info(i).box_extent, DType::kBF16);
    }
  }
  std::vector<ShardedTensor> targets = sharded_tensors(params);
  reader.read("model", targets);
  return Decoder(std::move(config), mesh, std::move(params), options);
}

}  // namespace magix
