// A batch of token rows as the decoder consumes it: the contract between the data loader
// (src/data) and the model (src/model).
#pragma once

#include <cstdint>
#include <vector>

namespace magix {

// All arrays are row-major (B, T). Row b, position t is element b * T + t.
struct TokenBatch {
  int64_t batch = 0;               // B: rows on this rank
  int64_t seq = 0;                 // T: positions per row
  std::vector<int32_t> input_ids;  // token at each position (pad positions hold the pad id)
  std::vector<int32_t> targets;    // token to predict at each position, or kIgnore
  std::vector<int32_t> key_valid;  // 1 for a real token, 0 for padding (attention mask)
  std::vector<int32_t> positions;  // position id (restarts at 0 for each packed example)
  std::vector<int32_t> segments;   // packed example index within the row; empty = no packing

  static constexpr int32_t kIgnore = -1;

  // Number of targets that count towards the loss on this rank.
  int64_t count_targets() const {
    int64_t n = 0;
    for (int32_t t : targets) n += (t != kIgnore);
    return n;
  }
};

}  // namespace magix
