// The next-token rule: HF's logits processors in HF's order (repetition penalty; when sampling,
// temperature, top-k, top-p), then argmax or one draw from a counter-based RNG.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "magix/error.hpp"
#include "magix/generate.hpp"
#include "magix/hash.hpp"

namespace magix {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// HF TopKLogitsWarper: logits below the k-th largest become -inf (ties with it are kept).
void apply_top_k(std::vector<float>& logits, int64_t top_k) {
  const size_t k = static_cast<size_t>(std::min<int64_t>(top_k, std::ssize(logits)));
  if (k == 0 || k >= logits.size()) return;
  std::vector<float> sorted = logits;
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(k - 1),
                   sorted.end(), std::greater<float>());
  const float kth = sorted[k - 1];
  for (float& l : logits) {
    if (l < kth) l = kNegInf;
  }
}

// HF TopPLogitsWarper: sort ascending, softmax, cumulative sum (fp32); tokens whose cumulative
// probability is <= 1 - top_p are removed, the largest one always kept.
void apply_top_p(std::vector<float>& logits, float top_p) {
  if (top_p >= 1.0f) return;
  const size_t V = logits.size();
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] < logits[b]; });
  const float mx = logits[order[V - 1]];
  std::vector<float> p(V);
  float sum = 0;
  for (size_t i = 0; i < V; ++i) {
    p[i] = std::exp(logits[order[i]] - mx);
    sum += p[i];
  }
  float cum = 0;
  for (size_t i = 0; i + 1 < V; ++i) {
    cum += p[i] / sum;
    if (cum <= 1.0f - top_p) logits[order[i]] = kNegInf;
  }
}

int32_t argmax(const std::vector<float>& logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace

std::string_view finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
  }
  return "?";
}

double sampling_uniform(uint64_t seed, int64_t prompt_index, int64_t token_index) {
  uint64_t x = splitmix64(seed);
  x = splitmix64(x ^ static_cast<uint64_t>(prompt_index));
  x = splitmix64(x ^ (static_cast<uint64_t>(token_index) * 0xd6e8feb86659fd93ull));
  return static_cast<double>(x >> 11) * 0x1.0p-53;  // 53 random bits in [0, 1)
}

int32_t choose_token(std::vector<float>& logits, const std::vector<int32_t>& previous,
                     const SamplingOptions& o, int64_t prompt_index, int64_t token_index) {
  MAGIX_CHECK(!logits.empty(), "choose_token: empty logits");
  const int64_t V = std::ssize(logits);
  if (o.repetition_penalty != 1.0f) {
    // Each distinct previous id once (HF gathers and scatters, so duplicates act once).
    std::vector<char> seen(static_cast<size_t>(V), 0);
    for (int32_t id : previous) {
      if (id < 0 || id >= V || seen[id]) continue;
      seen[id] = 1;
      float& l = logits[id];
      l = l < 0 ? l * o.repetition_penalty : l / o.repetition_penalty;
    }
  }
  if (!o.sample) return argmax(logits);
  for (float& l : logits) l /= o.temperature;
  if (o.top_k > 0) apply_top_k(logits, o.top_k);
  apply_top_p(logits, o.top_p);
  // softmax and one inverse-CDF draw over ids in ascending order (tokens at -inf have p = 0)
  const float mx = logits[argmax(logits)];
  std::vector<double> p(static_cast<size_t>(V));
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) {
    p[i] = logits[i] == kNegInf ? 0.0 : std::exp(static_cast<double>(logits[i] - mx));
    sum += p[i];
  }
  const double target = sampling_uniform(o.seed, prompt_index, token_index) * sum;
  double cum = 0;
  int32_t last = 0;
  for (int64_t i = 0; i < V; ++i) {
    if (p[i] == 0.0) continue;
    cum += p[i];
    last = static_cast<int32_t>(i);
    if (target < cum) return last;
  }
  return last;  // rounding put the draw past the end: the last token with p > 0
}

}  // namespace magix
