// evaluate_examples: the loss of a model over examples, one example per row, over the mesh.
#include "magix/evaluate.hpp"

#include <algorithm>
#include <limits>

#include "magix/error.hpp"

namespace magix {

TokenBatch make_example_batch(std::span<const Example> examples, int32_t pad_id) {
  MAGIX_CHECK(!examples.empty(), "make_example_batch: no examples");
  int64_t longest = 1;
  for (const Example& ex : examples) {
    MAGIX_CHECK(!ex.ids.empty() && ex.ids.size() == ex.loss_mask.size(),
                "make_example_batch: an example needs ids and a mask of the same length");
    longest = std::max<int64_t>(longest, std::ssize(ex.ids));
  }
  const int64_t T = std::max<int64_t>(1, longest - 1), B = std::ssize(examples);
  TokenBatch batch;
  batch.batch = B;
  batch.seq = T;
  batch.input_ids.assign(B * T, pad_id);
  batch.targets.assign(B * T, TokenBatch::kIgnore);
  batch.key_valid.assign(B * T, 0);
  batch.positions.assign(B * T, 0);
  for (int64_t b = 0; b < B; ++b) {
    const Example& ex = examples[b];
    const int64_t n = std::ssize(ex.ids);
    for (int64_t i = 0; i < T; ++i) {
      const int64_t k = b * T + i;
      batch.positions[k] = static_cast<int32_t>(i);
      if (i >= n) continue;
      batch.input_ids[k] = ex.ids[i];
      batch.key_valid[k] = 1;
      if (i + 1 < n && ex.loss_mask[i + 1] != 0) batch.targets[k] = ex.ids[i + 1];
    }
  }
  return batch;
}

double EvalResult::mean_nll() const {
  return tokens > 0 ? nll_sum / static_cast<double>(tokens)
                    : std::numeric_limits<double>::quiet_NaN();
}

EvalResult evaluate_examples(Decoder& model, const std::vector<Example>& examples,
                             int64_t per_rank_batch, int32_t pad_id) {
  MAGIX_CHECK(per_rank_batch > 0, "the evaluation batch size must be positive, got {}",
              per_rank_batch);
  const Mesh& mesh = model.mesh();
  const int64_t n = std::ssize(examples), D = mesh.data_size(), B = per_rank_batch;
  const Example filler{{pad_id}, {0}};  // rows past the end: one key, no target
  std::vector<double> nll(n, 0.0), tokens(n, 0.0);
  std::vector<Example> rows;
  for (int64_t pass = 0; pass * D * B < n; ++pass) {
    const int64_t first = (pass * D + mesh.data_rank()) * B;
    rows.clear();
    for (int64_t i = first; i < first + B; ++i) rows.push_back(i < n ? examples[i] : filler);
    const LossResult res = model.loss(make_example_batch(rows, pad_id), 1.0);
    if (mesh.model_rank() != 0) continue;  // model ranks hold the same rows' results
    for (int64_t r = 0; r < B && first + r < n; ++r) {
      nll[first + r] = res.nll_per_row[r];
      tokens[first + r] = static_cast<double>(res.tokens_per_row[r]);
    }
  }
  mesh.world().all_reduce(nll, ReduceOp::kSum);
  mesh.world().all_reduce(tokens, ReduceOp::kSum);
  EvalResult out;
  out.nll_per_example = std::move(nll);
  out.tokens_per_example.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    out.tokens_per_example.push_back(static_cast<int64_t>(tokens[i]));
    out.nll_sum += out.nll_per_example[i];
    out.tokens += out.tokens_per_example[i];
  }
  return out;
}

}  // namespace magix
