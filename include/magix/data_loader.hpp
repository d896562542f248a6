// Batches for training: examples -> rows of max_length + 1 tokens -> shuffled global batches ->
// this data rank's slice, as TokenBatch (batch.hpp). See docs/data.md.
//
// Invariants:
//  - the global batch at (epoch, step) depends only on (rows, seed, epoch, step, global_batch),
//    never on the mesh: data rank r of D gets rows [r*B/D, (r+1)*B/D) of it;
//  - the order of an epoch is shuffle_permutation(num_rows, seed, epoch) (a documented PRNG,
//    identical across standard libraries); the last incomplete batch is dropped;
//  - a row of L = max_length + 1 tokens gives T = max_length positions: input_ids = row[:-1],
//    targets = row[1:] where both positions are real tokens (not padding), of the same packed
//    example, and the target token's loss_mask is 1; otherwise TokenBatch::kIgnore.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "magix/batch.hpp"
#include "magix/dataset.hpp"
#include "magix/hash.hpp"

namespace magix {

// The permutation of [0, n) for an epoch. Generator: std::mt19937_64 (its output sequence is
// fixed by the C++ standard) seeded with splitmix64(seed ^ splitmix64(epoch)); Fisher-Yates from
// the last element down: for i = n-1 .. 1, j = uniform in [0, i] drawn by rejection (draw x until
// x >= (2^64 - (i+1)) mod (i+1), then j = x mod (i+1)); swap(p[i], p[j]).
std::vector<int64_t> shuffle_permutation(int64_t n, uint64_t seed, int64_t epoch);

// A row: consecutive examples [first, first + count) of the example list laid end to end.
struct RowSpan {
  int64_t first = 0;
  int64_t count = 0;
};

// Greedy packing in order: each example goes whole into the current row if it fits in the
// `row_length` tokens left, else it starts a new row (the current one is right-padded).
// Examples longer than row_length are an error (load_examples already cuts them).
std::vector<RowSpan> pack_rows(const std::vector<Example>& examples, int64_t row_length);

struct LoaderOptions {
  int64_t global_batch = 16;  // rows per step over all data ranks (the reference's batch_size)
  uint64_t seed = 42;
  int64_t data_rank = 0;      // this rank's index on the mesh's data axis
  int64_t data_size = 1;      // size of the data axis; must divide global_batch
  int64_t max_length = 1024;  // T; rows hold max_length + 1 tokens
  int32_t pad_id = 0;         // token id at pad positions (masked everywhere)
  bool pack = false;          // pack several examples per row (segments, positions restart)
  bool shuffle = true;        // false: rows in file order every epoch
};

class DataLoader {
 public:
  // Takes the examples (each at most max_length + 1 tokens). Throws when there are fewer rows
  // than one global batch or data_size does not divide global_batch.
  DataLoader(std::vector<Example> examples, const LoaderOptions& options);

  int64_t num_examples() const { return static_cast<int64_t>(examples_.size()); }
  int64_t num_rows() const { return static_cast<int64_t>(rows_.size()); }
  int64_t steps_per_epoch() const { return num_rows() / options_.global_batch; }
  int64_t local_batch() const { return options_.global_batch / options_.data_size; }
  const LoaderOptions& options() const { return options_; }

  // Position of the next batch.
  int64_t epoch() const { return epoch_; }
  int64_t step() const { return step_; }  // within the epoch
  int64_t global_step() const { return epoch_ * steps_per_epoch() + step_; }
  void seek(int64_t epoch, int64_t step);
  void seek_global_step(int64_t global_step);

  // This rank's slice of the batch at the current position; then advances (to the next epoch
  // after the last step of an epoch).
  TokenBatch next();
  // Any position, without moving: rows = this rank's slice (or the whole global batch).
  TokenBatch batch_at(int64_t epoch, int64_t step) const;
  TokenBatch global_batch_at(int64_t epoch, int64_t step) const;
  // The row indices (into the packed/unpacked row list) of the global batch at a position.
  std::vector<int64_t> global_rows(int64_t epoch, int64_t step) const;

  // The position and what it depends on, as JSON (saved with checkpoints). restore() takes a
  // state from a loader over the same data, seed, global batch, max_length and packing, on any
  // data_rank/data_size, and continues with exactly the batches the saved one would have given.
  // `where` names the state in error messages (`.../trainer_state.json: "data"`).
  nlohmann::json state() const;
  void restore(const nlohmann::json& state, const std::string& where = "data loader state");

  // FNV-1a 64 over the rows' tokens, masks and boundaries: identifies the data in the state.
  uint64_t fingerprint() const { return fingerprint_; }

 private:
  void fill_row(int64_t row, TokenBatch& batch, int64_t b) const;
  TokenBatch make_batch(const std::vector<int64_t>& rows) const;

  std::vector<Example> examples_;
  std::vector<RowSpan> rows_;
  // The permutation of the last epoch asked for (a cache: a DataLoader is not for concurrent use).
  mutable int64_t perm_epoch_ = -1;
  mutable std::vector<int64_t> perm_;
  LoaderOptions options_;
  uint64_t fingerprint_ = 0;
  int64_t epoch_ = 0;
  int64_t step_ = 0;
};

}  // namespace magix
