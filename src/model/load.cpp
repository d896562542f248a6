// Loading a decoder from an HF folder, and building HF-style causal batches.
#include <algorithm>

#include "magix/error.hpp"
#include "magix/hf_files.hpp"
#include "magix/memory_check.hpp"
#include "magix/model.hpp"

namespace magix {

Decoder load_decoder(const std::string& name_or_path, const Mesh& mesh, DecoderOptions options,
                     const PartitionRules* rules) {
  const std::filesystem::path dir = resolve_model_dir(name_or_path);
  ModelConfig config = load_model_config(dir / "config.json");
  // Read into host memory, then (on another device) moved there.
  const auto fits_on = [&](Device where) {
    check_model_fits_in_memory(config, (dir / "config.json").string(),
                               static_cast<double>(dtype_size(options.weight_dtype)), 0,
                               mesh.world_size(), where);
  };
  fits_on(Device::kCpu);
  if (options.device != Device::kCpu) fits_on(options.device);
  std::vector<ParamInfo> infos = expected_parameters(config);
  if (rules) apply_partition_rules(infos, *rules, config);
  shard_parameters(infos, mesh);
  HfWeights weights(dir);
  ParameterSet params = load_parameters(infos, weights, options.weight_dtype);
  return Decoder(std::move(config), mesh, std::move(params), options);
}

TokenBatch make_causal_batch(const std::vector<std::vector<int32_t>>& ids, int32_t pad_id) {
  MAGIX_CHECK(!ids.empty(), "make_causal_batch: no rows");
  TokenBatch b;
  b.batch = static_cast<int64_t>(ids.size());
  for (const auto& row : ids) {
    MAGIX_CHECK(!row.empty(), "make_causal_batch: an empty row");
    b.seq = std::max<int64_t>(b.seq, static_cast<int64_t>(row.size()));
  }
  const size_t n = static_cast<size_t>(b.batch * b.seq);
  b.input_ids.assign(n, pad_id);
  b.targets.assign(n, TokenBatch::kIgnore);
  b.key_valid.assign(n, 0);
  b.positions.resize(n);
  for (int64_t r = 0; r < b.batch; ++r) {
    const auto& row = ids[static_cast<size_t>(r)];
    const int64_t len = static_cast<int64_t>(row.size());
    for (int64_t t = 0; t < b.seq; ++t) {
      const size_t i = static_cast<size_t>(r * b.seq + t);
      b.positions[i] = static_cast<int32_t>(t);
      if (t >= len) continue;
      b.input_ids[i] = row[static_cast<size_t>(t)];
      b.key_valid[i] = 1;
      if (t + 1 < len) b.targets[i] = row[static_cast<size_t>(t + 1)];
    }
  }
  return b;
}

TokenBatch random_causal_batch(int64_t vocab, int64_t rows, int64_t len, uint64_t seed,
                               int data_rank, int data_size) {
  MAGIX_CHECK(data_size > 0 && rows % data_size == 0,
              "{} rows cannot be split evenly over {} data ranks", rows, data_size);
  const int64_t per_rank = rows / data_size;
  std::vector<std::vector<int32_t>> mine;
  uint64_t x = seed;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int32_t> row;
    for (int64_t t = 0; t < len; ++t) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      row.push_back(static_cast<int32_t>((x >> 33) % static_cast<uint64_t>(vocab)));
    }
    if (r / per_rank == data_rank) mine.push_back(std::move(row));
  }
  return make_causal_batch(mine);
}

}  // namespace magix
