// Internal to src/io/checkpoint*.cpp: names, checksums and the JSON records of the checkpoint
// format (docs/checkpoints.md).
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "magix/tensor.hpp"

namespace magix::ckpt {

inline constexpr std::string_view kFormatName = "magix-checkpoint";
inline constexpr int kFormatVersion = 1;
inline constexpr std::string_view kIndexFile = "index.json";
inline constexpr std::string_view kTrainerStateFile = "trainer_state.json";
inline constexpr std::string_view kTmpPrefix = ".tmp-";

// "000200" (at least 6 digits); a step must be >= 0.
std::string step_name(int64_t step);
// The step of a committed directory's name (digits only), or none.
std::optional<int64_t> parse_step_name(std::string_view name);

// XXH3-64 of a byte range, and its index.json spelling (16 lowercase hex digits).
uint64_t checksum(const void* data, size_t n);
std::string checksum_hex(uint64_t h);
std::optional<uint64_t> parse_checksum_hex(std::string_view s);

// "model/rank-00003.bin": the file world rank `rank` writes for `item`, relative to the step.
std::string rank_file(const std::string& item, int rank);
// ".shards-rank-00003.json": the list of shards a rank wrote (removed before the commit).
std::string rank_list_file(int rank);

// Item names become folder names: [A-Za-z0-9_-]+, not starting with '-'. Throws otherwise.
void check_item_name(const std::string& item);

// One shard as written: a box of one tensor of one item, stored contiguously (row-major, its
// own dtype) at `offset` of `file` (relative to the step dir).
struct ShardRecord {
  std::string item;
  std::string tensor;
  DType dtype = DType::kF32;
  Shape global_shape;
  Shape start;
  Shape extent;
  std::string file;
  uint64_t offset = 0;
  uint64_t nbytes = 0;
  uint64_t xxh3 = 0;
};

nlohmann::json shard_to_json(const ShardRecord& s);  // without item/tensor/dtype/shape
nlohmann::json shard_list_to_json(const std::vector<ShardRecord>& shards);
// Throws (message without a file name: callers add it) on any malformed field.
std::vector<ShardRecord> shard_list_from_json(const nlohmann::json& j);

// The shards of one tensor in an index, validated: every shard inside the tensor, nbytes =
// numel(extent) x dtype size, no two shards overlapping and together covering every element.
// `where` names the tensor for errors.
void check_tiling(const Shape& global, DType dtype, const std::vector<ShardRecord>& shards,
                  const std::string& where);

// A step's index.json, parsed and validated (format, version, files, extra_files, and per
// tensor its dtype, shape and shards, each shard's path checked and the shards tiling the
// tensor). Throws magix::Error (message without the file name: the reader adds it) on anything
// malformed. The libFuzzer target fuzz_checkpoint_index runs it on arbitrary input.
struct IndexTensor {
  DType dtype = DType::kF32;
  Shape shape;
  std::vector<ShardRecord> shards;
};
struct StepIndex {
  int64_t step = 0;
  std::map<std::string, std::pair<uint64_t, uint64_t>> files;  // name -> nbytes, xxh3
  std::vector<std::string> extra_files;
  std::map<std::string, std::map<std::string, IndexTensor>> items;  // item -> tensor -> entry
};
StepIndex parse_index(std::string_view text);

// A path inside a step directory from the index: relative, no "..", no empty parts.
void check_relative_path(const std::string& file, const std::string& where);

// Reads a whole small file into a string; throws naming it.
std::string read_text_file(const std::filesystem::path& path);
// Writes a new file with `data` and fsyncs it (not atomic: used inside an uncommitted dir).
void write_file_synced(const std::filesystem::path& path, const void* data, size_t n);

}  // namespace magix::ckpt
