// Hugging Face model folders: finding them in the local cache, reading their (possibly
// sharded) safetensors weights, and writing weights in the layout transformers loads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "magix/safetensors.hpp"
#include "magix/tensor.hpp"

namespace magix {

// An existing folder, or a hub name "ORG/NAME" found in the local HF cache:
// $HF_HUB_CACHE/models--ORG--NAME/snapshots/<rev>/ if HF_HUB_CACHE is set, else
// $HF_HOME/hub/... (HF_HOME defaults to ~/.cache/huggingface). <rev> comes from refs/main if
// present, else the only snapshot (several without refs/main: an error listing them).
// Never downloads; a clear error saying where it looked. With a revision set (set_hub_revision,
// the CLI's --revision), hub names resolve to that revision instead: refs/<revision> (a branch
// or tag) or snapshots/<revision> (a commit hash); a folder path is used as it is.
// The files of a snapshot are relative symlinks into the repository's blobs/ (huggingface_hub's
// layout); HfWeights accepts links that resolve inside models--ORG--NAME/ and nowhere else.
std::filesystem::path resolve_model_dir(const std::string& name_or_path);

// The revision resolve_model_dir uses for hub names, for the whole process; empty (the default):
// refs/main, else the only snapshot. Errors: a revision with "..", a leading '/', or characters
// outside [A-Za-z0-9._/-].
void set_hub_revision(std::string revision);
const std::string& hub_revision();

// Datasets by hub name (docs/data.md) resolve to this revision (the CLI's --dataset_revision);
// empty: refs/main, else the only snapshot. Same rules as set_hub_revision.
void set_dataset_revision(std::string revision);
const std::string& dataset_revision();

enum class HubRepoType { kModel, kDataset };

// "ORG/NAME" or "NAME": letters, digits, '-', '_', '.', no "..", no leading '.'.
bool is_hub_repo_name(const std::string& name);

// The cache folder of a hub repository (it may not exist): models--ORG--NAME or
// datasets--ORG--NAME under $HF_HUB_CACHE, else $HF_HOME/hub (HF_HOME defaulting to
// ~/.cache/huggingface).
std::filesystem::path hub_repo_folder(const std::string& name, HubRepoType type);

// The snapshot folder of `name` in the local cache: `revision` (refs/<revision> or
// snapshots/<revision>) when non-empty, else refs/main, else the only snapshot. Never downloads:
// the error says where it looked and the `huggingface-cli download` command that fetches it.
std::filesystem::path resolve_hub_snapshot(const std::string& name, HubRepoType type,
                                           const std::string& revision);

// `file` (a path under `dir`) checked to resolve inside `dir`, or, when `dir` is a hub cache
// snapshot (models--*/snapshots/<rev> or datasets--*/snapshots/<rev>), inside its repository
// folder (the snapshot's symlinks point into blobs/). Returns `file`; throws on a symlink escape.
std::filesystem::path checked_folder_file(const std::filesystem::path& dir,
                                          const std::filesystem::path& file);

// The tensors of an HF model folder: model.safetensors, or model.safetensors.index.json + its
// shards (paths must stay inside the folder: no absolute paths, no "..", no symlink escape).
// Every shard is opened and validated on construction; every tensor of the index must be in
// its shard, and no tensor may appear in two files.
class HfWeights {
 public:
  explicit HfWeights(const std::filesystem::path& model_dir);
  ~HfWeights();
  HfWeights(HfWeights&&) noexcept;
  HfWeights& operator=(HfWeights&&) noexcept;

  const std::filesystem::path& dir() const { return dir_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(std::string_view name) const;
  // Throws naming the tensor and the folder when absent.
  const SafetensorsEntry& entry(std::string_view name) const;
  Tensor read(std::string_view name) const;                    // in its stored dtype
  std::filesystem::path file_of(std::string_view name) const;  // the shard file holding it
  Tensor read_f32(std::string_view name) const;
  Tensor read_box_f32(std::string_view name, const Shape& start, const Shape& extent) const;

 private:
  const SafetensorsReader& reader_of(std::string_view name) const;

  std::filesystem::path dir_;
  std::vector<SafetensorsReader> shards_;
  std::map<std::string, size_t, std::less<>> shard_of_;  // tensor name -> index into shards_
};

// HF layout: model.safetensors, or model-00001-of-0000N.safetensors files +
// model.safetensors.index.json ({"metadata": {"total_size": ...}, "weight_map": {...}}) when the
// total exceeds max_shard_bytes. Tensors converted to `dtype` (F32 or BF16). metadata
// {"format": "pt"} as transformers writes. Index written last; nothing half-written left
// looking valid (each file is written atomically; stale weight files of another layout in
// `dir` are removed first). Creates `dir` if needed.
void write_hf_weights(const std::filesystem::path& dir, std::span<const NamedTensor> tensors,
                      DType dtype, uint64_t max_shard_bytes = 5'000'000'000ull);

}  // namespace magix
