// Sharded, asynchronous, atomic checkpoints that restore onto any mesh (DESIGN.md §4,
// docs/checkpoints.md).
//
// Layout of a committed step (`dir/000200/`):
//   index.json          per item, per tensor: dtype, global shape, shards (file, byte offset,
//                       box start/extent, checksum); the format version; written last
//   trainer_state.json  what the caller passed as trainer state (step, RNG, data position, args)
//   <item>/rank-NNNNN.bin   the shards rank NNNNN owns of that item, concatenated
//   config.json, tokenizer files ...   the `extra_files` of save(), copied by world rank 0
// A step is written under `dir/.tmp-000200/` and renamed into place once every rank's files are
// fsynced: a directory without index.json, or any `.tmp-*` directory, is never read and is
// removed by the next CheckpointManager of that dir (world rank 0).
//
// Ownership: a tensor's shard replicated over a mesh axis (its spec does not use the axis) is
// written by the rank with coordinate 0 on that axis only, so every element is written once.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "magix/mesh.hpp"
#include "magix/model.hpp"
#include "magix/sharding.hpp"
#include "magix/tensor.hpp"

namespace magix {

// One tensor of an item as this rank holds it: its box of the global tensor.
struct ShardedTensor {
  std::string name;
  Shape global_shape;
  PartitionSpec spec;  // decides which rank writes a replicated box
  Shape box_start;     // this rank's box; extent = local.shape()
  Tensor local;        // F32 or BF16 (written in its dtype; restored converted to the target's)
};

// The tensors of a ParameterSet (model weights, gradients, optimizer moments) as ShardedTensors
// sharing storage with it. `prefix` is prepended to the names (e.g. "mu/"). A fused tensor whose
// rank holds several boxes (ParamInfo::pieces) gives one ShardedTensor per box, all of its name.
std::vector<ShardedTensor> sharded_tensors(const ParameterSet& params,
                                           const std::string& prefix = "");
// The same for one tensor `local` laid out as `info` (e.g. an optimizer moment), named `name`.
void append_sharded_tensors(std::vector<ShardedTensor>& out, const ParamInfo& info,
                            const std::string& name, const Tensor& local);

// Items of one save: item name ("model", "optimizer", "lora") -> its tensors.
using CheckpointItems = std::map<std::string, std::vector<ShardedTensor>>;

struct CheckpointOptions {
  int max_to_keep = 3;  // <= 0: keep all
  bool async = true;    // false: save() returns after the commit
  // Async saves: keep the host copies between saves and reuse them when the next save has the
  // same shard sizes (a training run's saves do): the copy then costs a memcpy, not fresh page
  // faults, at the price of holding this rank's owned state once more in host memory.
  bool keep_host_buffers = true;
};

class CheckpointManager {
 public:
  // Collective over mesh.world(). Creates `dir`; world rank 0 removes uncommitted step
  // directories left by a crash.
  CheckpointManager(std::filesystem::path dir, const Mesh& mesh, CheckpointOptions options = {});
  ~CheckpointManager();  // waits for a save in flight (errors are reported, not thrown)

  const std::filesystem::path& dir() const;
  // Committed steps, ascending (read from the directory).
  std::vector<int64_t> steps() const;
  std::optional<int64_t> latest_step() const;
  std::filesystem::path step_dir(int64_t step) const;  // dir/000200 (6 digits, more if needed)

  // Collective. Copies this rank's owned shards into host buffers, then returns while a
  // background thread writes and fsyncs them (async) — or writes them now (sync). A save in
  // flight is finished (committed) first. `trainer_state` and `extra_files` are written by
  // world rank 0.
  void save(int64_t step, const CheckpointItems& items, const nlohmann::json& trainer_state,
            const std::vector<std::filesystem::path>& extra_files = {});
  // Collective; cheap when nothing is in flight. Commits a save whose files every rank has
  // finished writing (checks with one small all-reduce); call it once per training step.
  void poll();
  // Collective. Waits for the save in flight, commits it, applies max_to_keep. Rethrows a
  // writer error (disk full...) as magix::Error on every rank.
  void wait();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reading a committed step (any mesh): each rank reads, whole, the shards that intersect its
// boxes (checksums are per shard), verifies them, then copies the intersections. A truncated or
// altered file is an error naming the file, never loaded.
class CheckpointReader {
 public:
  explicit CheckpointReader(std::filesystem::path step_dir);  // throws unless committed
  ~CheckpointReader();
  CheckpointReader(CheckpointReader&&) noexcept;

  const std::filesystem::path& dir() const;
  int64_t step() const;
  nlohmann::json trainer_state() const;
  std::vector<std::string> items() const;
  bool has_tensor(const std::string& item, const std::string& name) const;
  Shape global_shape(const std::string& item, const std::string& name) const;
  // Fills each target's local tensor (its box: box_start + local.shape()) from the item; a
  // missing tensor or a global shape mismatch is an error naming it.
  void read(const std::string& item, std::vector<ShardedTensor>& targets) const;

  // The names of the extra_files saved with the step (config.json, tokenizer files...).
  std::vector<std::string> extra_files() const;
  // dir()/name for trainer_state.json or an extra file, after checking its size and checksum
  // against the index; throws naming the file if it is missing, truncated or altered.
  std::filesystem::path checked_file(const std::string& name) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// True when `path` is a committed checkpoint step directory (has index.json).
bool is_checkpoint_step(const std::filesystem::path& path);

// When `path` is a committed checkpoint step: checks every file the step's index lists besides
// the shards (config.json, tokenizer files, trainer state) against its recorded size and XXH3,
// throwing naming the first that does not match. Call it before reading a step's files by path
// (Tokenizer::load(step_dir), ...); CheckpointReader's constructor does the same check.
void verify_if_checkpoint_step(const std::filesystem::path& path);

// A decoder from a committed step's config.json and item "model", placed on `mesh` by `rules`
// (null: the family defaults).
Decoder load_checkpoint_decoder(const std::filesystem::path& step_dir, const Mesh& mesh,
                                DecoderOptions options = {}, const PartitionRules* rules = nullptr);

// ---------------------------------------------------------------------------------------------
// Export to a Hugging Face folder (magix export; docs/checkpoints.md)

// The whole tensors (a 1x1 layout, fp32) of a committed step's item "model", with the config
// from its config.json.
ParameterSet load_checkpoint_parameters(const std::filesystem::path& step_dir, ModelConfig* config);

// "5GB", "500MB", "2GiB", "1000000" (bytes) -> bytes; units as transformers' max_shard_size
// (KB/MB/GB decimal, KiB/MiB/GiB binary). Errors name max_shard_size and the text.
uint64_t parse_max_shard_size(const std::string& text);

struct HfExportOptions {
  DType dtype = DType::kF32;  // F32 or BF16
  uint64_t max_shard_bytes = 5'000'000'000ull;
  bool overwrite = false;  // false: a non-empty output folder is an error
};

// Writes an HF folder that transformers loads: the weights of `params` (whole tensors, HF
// names; write_hf_weights: shards <= max_shard_bytes + index), copies of `files` (tokenizer
// files...; a generation_config.json among them is copied as it is, else one is made from the
// config's ids as transformers makes it: generation_config_from_model_config), and last
// `config_json` with its torch_dtype set to the export dtype. A folder left
// by a failed run has no config.json (an overwritten folder's config.json is removed first).
void write_hf_folder(const std::filesystem::path& out_dir, const std::filesystem::path& config_json,
                     const std::vector<std::filesystem::path>& files, const ParameterSet& params,
                     const HfExportOptions& options);

// A committed step -> an HF folder: item "model", config.json and the other extra files saved
// with the step (checked against their checksums).
void export_checkpoint(const std::filesystem::path& step_dir, const std::filesystem::path& out_dir,
                       const HfExportOptions& options = {});

}  // namespace magix
