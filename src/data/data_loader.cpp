// DataLoader: shuffled, mesh-independent global batches of padded or packed rows.
#include "magix/data_loader.hpp"

#include <random>

#include "magix/error.hpp"
#include "magix/json_parse.hpp"

namespace magix {
namespace {

constexpr int kStateVersion = 1;
constexpr const char* kStateFormat = "magix.data_loader";

uint64_t fnv1a(uint64_t h, uint64_t v) {
  for (int k = 0; k < 8; ++k) {
    h ^= (v >> (8 * k)) & 0xFF;
    h *= 0x100000001B3ull;
  }
  return h;
}

// Uniform in [0, m) from a 64-bit generator, unbiased by rejection (m >= 1).
uint64_t uniform_below(std::mt19937_64& gen, uint64_t m) {
  const uint64_t threshold = (0 - m) % m;  // (2^64 - m) mod m: the size of the biased low range
  while (true) {
    const uint64_t x = gen();
    if (x >= threshold) return x % m;
  }
}

}  // namespace

std::vector<int64_t> shuffle_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  MAGIX_CHECK(n >= 0 && epoch >= 0, "shuffle_permutation: n={} and epoch={} must be >= 0", n,
              epoch);
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  std::mt19937_64 gen(splitmix64(seed ^ splitmix64(static_cast<uint64_t>(epoch))));
  for (int64_t i = n - 1; i >= 1; --i) {
    const auto j = static_cast<int64_t>(uniform_below(gen, static_cast<uint64_t>(i) + 1));
    std::swap(p[i], p[j]);
  }
  return p;
}

std::vector<RowSpan> pack_rows(const std::vector<Example>& examples, int64_t row_length) {
  MAGIX_CHECK(row_length >= 2, "pack_rows: row length {} must be >= 2", row_length);
  std::vector<RowSpan> rows;
  int64_t used = 0;
  for (size_t e = 0; e < examples.size(); ++e) {
    const auto len = static_cast<int64_t>(examples[e].ids.size());
    MAGIX_CHECK(len >= 1 && len <= row_length,
                "pack_rows: example {} has {} tokens; rows hold 1 to {}", e, len, row_length);
    if (rows.empty() || used + len > row_length) {
      rows.push_back(RowSpan{static_cast<int64_t>(e), 0});
      used = 0;
    }
    rows.back().count += 1;
    used += len;
  }
  return rows;
}

DataLoader::DataLoader(std::vector<Example> examples, const LoaderOptions& options)
    : examples_(std::move(examples)), options_(options) {
  const LoaderOptions& o = options_;
  MAGIX_CHECK(o.max_length >= 1, "data loader: max_length {} must be >= 1", o.max_length);
  MAGIX_CHECK(o.global_batch >= 1, "data loader: batch size {} must be >= 1", o.global_batch);
  MAGIX_CHECK(o.data_size >= 1 && o.data_rank >= 0 && o.data_rank < o.data_size,
              "data loader: data rank {} is outside a data axis of size {}", o.data_rank,
              o.data_size);
  MAGIX_CHECK(o.global_batch % o.data_size == 0,
              "batch size {} is not divisible by the data axis size {}: each data rank takes an "
              "equal slice of the global batch (choose a batch size that is a multiple of {})",
              o.global_batch, o.data_size, o.data_size);
  const int64_t row_length = o.max_length + 1;
  for (size_t e = 0; e < examples_.size(); ++e) {
    const Example& ex = examples_[e];
    MAGIX_CHECK(!ex.ids.empty() && static_cast<int64_t>(ex.ids.size()) <= row_length,
                "data loader: example {} has {} tokens; rows hold 1 to max_length + 1 = {}", e,
                ex.ids.size(), row_length);
    MAGIX_CHECK(ex.loss_mask.size() == ex.ids.size(),
                "data loader: example {} has {} ids but {} loss mask entries", e, ex.ids.size(),
                ex.loss_mask.size());
  }
  if (o.pack) {
    rows_ = pack_rows(examples_, row_length);
  } else {
    rows_.reserve(examples_.size());
    for (size_t e = 0; e < examples_.size(); ++e)
      rows_.push_back(RowSpan{static_cast<int64_t>(e), 1});
  }
  MAGIX_CHECK(num_rows() >= o.global_batch,
              "the training data gives {} rows{}, fewer than one batch of {}: nothing to train on "
              "(add data or lower the batch size)",
              num_rows(), o.pack ? " after packing" : "", o.global_batch);

  uint64_t h = 0xCBF29CE484222325ull;
  h = fnv1a(h, static_cast<uint64_t>(row_length));
  for (const RowSpan& row : rows_) {
    h = fnv1a(h, 0xFFFFFFFFFFFFFFFFull);  // row boundary
    for (int64_t e = row.first; e < row.first + row.count; ++e) {
      h = fnv1a(h, 0xFFFFFFFFFFFFFFFEull);  // example boundary
      const Example& ex = examples_[e];
      for (size_t i = 0; i < ex.ids.size(); ++i) {
        h = fnv1a(h,
                  (static_cast<uint64_t>(static_cast<uint32_t>(ex.ids[i])) << 1) | ex.loss_mask[i]);
      }
    }
  }
  fingerprint_ = h;
}

void DataLoader::seek(int64_t epoch, int64_t step) {
  MAGIX_CHECK(epoch >= 0 && step >= 0 && step < steps_per_epoch(),
              "data loader: position (epoch {}, step {}) is outside an epoch of {} steps", epoch,
              step, steps_per_epoch());
  epoch_ = epoch;
  step_ = step;
}

void DataLoader::seek_global_step(int64_t global_step) {
  MAGIX_CHECK(global_step >= 0, "data loader: global step {} must be >= 0", global_step);
  seek(global_step / steps_per_epoch(), global_step % steps_per_epoch());
}

std::vector<int64_t> DataLoader::global_rows(int64_t epoch, int64_t step) const {
  MAGIX_CHECK(epoch >= 0 && step >= 0 && step < steps_per_epoch(),
              "data loader: position (epoch {}, step {}) is outside an epoch of {} steps", epoch,
              step, steps_per_epoch());
  const int64_t b = options_.global_batch;
  std::vector<int64_t> rows(static_cast<size_t>(b));
  if (options_.shuffle) {
    if (perm_epoch_ != epoch) {
      perm_ = shuffle_permutation(num_rows(), options_.seed, epoch);
      perm_epoch_ = epoch;
    }
    for (int64_t i = 0; i < b; ++i) rows[i] = perm_[step * b + i];
  } else {
    for (int64_t i = 0; i < b; ++i) rows[i] = step * b + i;
  }
  return rows;
}

TokenBatch DataLoader::global_batch_at(int64_t epoch, int64_t step) const {
  return make_batch(global_rows(epoch, step));
}

TokenBatch DataLoader::batch_at(int64_t epoch, int64_t step) const {
  const std::vector<int64_t> all = global_rows(epoch, step);
  const int64_t local = local_batch();
  const auto begin = all.begin() + options_.data_rank * local;
  return make_batch(std::vector<int64_t>(begin, begin + local));
}

TokenBatch DataLoader::next() {
  TokenBatch batch = batch_at(epoch_, step_);
  step_ += 1;
  if (step_ == steps_per_epoch()) {
    step_ = 0;
    epoch_ += 1;
  }
  return batch;
}

TokenBatch DataLoader::make_batch(const std::vector<int64_t>& rows) const {
  TokenBatch batch;
  batch.batch = static_cast<int64_t>(rows.size());
  batch.seq = options_.max_length;
  const size_t n = static_cast<size_t>(batch.batch * batch.seq);
  batch.input_ids.assign(n, options_.pad_id);
  batch.targets.assign(n, TokenBatch::kIgnore);
  batch.key_valid.assign(n, 0);
  batch.positions.assign(n, 0);
  if (options_.pack) batch.segments.assign(n, 0);
  for (size_t b = 0; b < rows.size(); ++b) fill_row(rows[b], batch, static_cast<int64_t>(b));
  return batch;
}

// Lays the row's examples end to end in L = T + 1 slots, then reads inputs from slots [0, T)
// and targets from slots [1, T + 1). Pad slots after the last example continue its segment and
// positions (so that no query position is left without a key) but are never keys or targets.
void DataLoader::fill_row(int64_t row, TokenBatch& batch, int64_t b) const {
  const int64_t T = options_.max_length;
  const int64_t L = T + 1;
  std::vector<int32_t> tok(L, options_.pad_id), seg(L, 0), pos(L, 0);
  std::vector<uint8_t> real(L, 0), mask(L, 0);
  const RowSpan& span = rows_[row];
  int64_t t = 0;
  int32_t s = 0;
  for (int64_t e = span.first; e < span.first + span.count; ++e, ++s) {
    const Example& ex = examples_[e];
    for (size_t j = 0; j < ex.ids.size(); ++j, ++t) {
      tok[t] = ex.ids[j];
      real[t] = 1;
      mask[t] = ex.loss_mask[j];
      seg[t] = s;
      pos[t] = static_cast<int32_t>(j);
    }
  }
  for (int32_t next_pos = t > 0 ? pos[t - 1] + 1 : 0; t < L; ++t, ++next_pos) {
    seg[t] = s > 0 ? s - 1 : 0;
    pos[t] = next_pos;
  }
  const int64_t base = b * T;
  for (int64_t i = 0; i < T; ++i) {
    batch.input_ids[base + i] = tok[i];
    batch.key_valid[base + i] = real[i];
    batch.positions[base + i] = pos[i];
    if (options_.pack) batch.segments[base + i] = seg[i];
    const bool counts = real[i] && real[i + 1] && seg[i] == seg[i + 1] && mask[i + 1];
    batch.targets[base + i] = counts ? tok[i + 1] : TokenBatch::kIgnore;
  }
}

nlohmann::json DataLoader::state() const {
  return nlohmann::json{
      {"format", kStateFormat},
      {"version", kStateVersion},
      {"epoch", epoch_},
      {"step", step_},
      {"steps_per_epoch", steps_per_epoch()},
      {"seed", options_.seed},
      {"global_batch", options_.global_batch},
      {"max_length", options_.max_length},
      {"pack", options_.pack},
      {"shuffle", options_.shuffle},
      {"num_examples", num_examples()},
      {"num_rows", num_rows()},
      {"fingerprint", fmt::format("{:016x}", fingerprint_)},
  };
}

void DataLoader::restore(const nlohmann::json& state, const std::string& where) {
  json_expect_object(state, where);
  MAGIX_CHECK(json_value<std::string>(state, "format", "", where) == kStateFormat,
              "{}: not a '{}' object", where, kStateFormat);
  const int64_t version = json_get<int64_t>(state, "version", where);
  MAGIX_CHECK(version == kStateVersion,
              "{}: version {} is not supported (this build reads version {})", where, version,
              kStateVersion);
  const nlohmann::json mine = this->state();
  // Everything the batch order depends on must match; the mesh (data_rank/size) may differ.
  for (const char* key : {"seed", "global_batch", "max_length", "pack", "shuffle", "num_examples",
                          "num_rows", "fingerprint"}) {
    MAGIX_CHECK(state.contains(key), "{}: \"{}\" is missing", where, key);
    MAGIX_CHECK(state.at(key) == mine.at(key),
                "{}: saved {} = {} but this run has {} = {}; the saved position only makes "
                "sense over the same data, seed, batch size, max_length and packing",
                where, key, state.at(key).dump(), key, mine.at(key).dump());
  }
  seek(json_get<int64_t>(state, "epoch", where), json_get<int64_t>(state, "step", where));
}

}  // namespace magix
