// The op-table sweep, vocab-sharded ops: embedding forward/backward with ids outside the shard,
// and the cross-entropy stages run on two vocab shards (v0 > 0) combined on the host as the
// all-reduces would, with ignored targets, against fp64 references, on every backend.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend_ops_util.hpp"

namespace magix::test {
namespace {

class VocabOps : public BackendOpsTest {};

// ---- embedding over the shard [row_start, row_start + rows) ----------------------------------

struct EmbeddingCase {
  int64_t N, C, rows, row_start;
  float scale;
};

const std::vector<EmbeddingCase> kEmbeddingCases = {
    {1, 1, 1, 0, 1.0f},   {17, 33, 9, 0, 1.0f},  {17, 33, 9, 5, std::sqrt(33.0f)},
    {65, 1, 3, 70, 1.0f}, {65, 33, 40, 7, 0.5f}, {300, 129, 50, 10, 1.0f},
};

// Ids below, inside and above the shard (negative ones too), with repeats.
std::vector<int32_t> embedding_ids(const EmbeddingCase& e, uint32_t seed) {
  const int32_t lo = -3, hi = static_cast<int32_t>(e.row_start + e.rows + 3);
  std::vector<int32_t> ids = uniform_ints(e.N, seed, lo, hi);
  if (e.N > 2) ids[1] = ids[0];
  return ids;
}

std::string show(const EmbeddingCase& e) {
  return fmt::format("N={} C={} shard rows [{}, {}) scale {}", e.N, e.C, e.row_start,
                     e.row_start + e.rows, e.scale);
}

TEST_P(VocabOps, EmbeddingForwardZeroesIdsOutsideTheShard) {
  for (const EmbeddingCase& e : kEmbeddingCases) {
    for (const DType table_dtype : {DType::kF32, DType::kBF16}) {  // BF16: rows widened exactly
      const std::vector<int32_t> ids = embedding_ids(e, 301);
      const Input table = random({e.rows, e.C}, table_dtype, 302);
      Tensor out = garbage({e.N, e.C}, DType::kF32);
      be().embedding_forward(out, put_i32({e.N}, ids), table.dev, e.row_start, e.scale);
      // One fp32 product per element: the double product of two floats rounded to float is it.
      std::vector<double> want(e.N * e.C, 0.0);
      for (int64_t n = 0; n < e.N; ++n) {
        const int64_t row = ids[n] - e.row_start;
        if (row < 0 || row >= e.rows) continue;
        for (int64_t c = 0; c < e.C; ++c)
          want[n * e.C + c] = static_cast<float>(e.scale * table.ref[row * e.C + c]);
      }
      expect_same(fmt::format("embedding_forward {} table", dtype_name(table_dtype)),
                  show(e) + " on " + dev_name(), get(out), want);
    }
  }
}

TEST_P(VocabOps, EmbeddingBackwardAccumulatesInsideTheShard) {
  for (const EmbeddingCase& e : kEmbeddingCases) {
    const std::vector<int32_t> ids = embedding_ids(e, 311);
    const Input dout = random({e.N, e.C}, DType::kF32, 312);
    Input dtable = random({e.rows, e.C}, DType::kF32, 313);
    be().embedding_backward(dtable.dev, dout.dev, put_i32({e.N}, ids), e.row_start, e.scale);
    std::vector<double> want = dtable.ref;
    for (int64_t n = 0; n < e.N; ++n) {
      const int64_t row = ids[n] - e.row_start;
      if (row < 0 || row >= e.rows) continue;
      for (int64_t c = 0; c < e.C; ++c) want[row * e.C + c] += e.scale * dout.ref[n * e.C + c];
    }
    expect_close("embedding_backward F32", show(e) + " on " + dev_name(), get(dtable.dev), want);
  }
}

// ---- cross-entropy over vocab shards --------------------------------------------------------

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct CrossEntropyCase {
  int64_t N, V;
  std::vector<int64_t> cuts;  // shard s holds vocab entries [cuts[s], cuts[s + 1])
};

const std::vector<CrossEntropyCase> kCrossEntropyCases = {{1, 1, {0, 1}},
                                                          {17, 33, {0, 33}},
                                                          {17, 33, {0, 13, 33}},
                                                          {9, 65, {0, 1, 40, 65}},
                                                          {65, 1000, {0, 400, 1000}}};

// Logits (N, V) in [-6, 6], row 0 shifted by +60 (the max must be subtracted); targets in
// [0, V) with every third row ignored (-1 or -100).
struct CrossEntropyData {
  std::vector<float> logits;
  std::vector<int32_t> targets;
};

CrossEntropyData cross_entropy_data(const CrossEntropyCase& c, uint32_t seed) {
  CrossEntropyData d{uniform(c.N * c.V, seed, -6, 6), uniform_ints(c.N, seed + 1, 0, c.V - 1)};
  for (int64_t v = 0; v < c.V; ++v) d.logits[v] += 60.0f;
  for (int64_t n = 2; n < c.N; n += 3) d.targets[n] = n % 2 ? -1 : -100;
  return d;
}

// Columns [v0, v1) of the (N, V) logits.
std::vector<float> shard_columns(const std::vector<float>& l, int64_t N, int64_t V, int64_t v0,
                                 int64_t v1) {
  std::vector<float> s;
  for (int64_t n = 0; n < N; ++n) s.insert(s.end(), l.begin() + n * V + v0, l.begin() + n * V + v1);
  return s;
}

// F32 logits, and BF16 logits (the LM head's output in bf16 mixed precision: the reference uses
// the bf16 values; the gradient is written as bf16).
TEST_P(VocabOps, CrossEntropyStagesOverShards) {
  for (const DType dtype : {DType::kF32, DType::kBF16})
    for (const CrossEntropyCase& c : kCrossEntropyCases) {
      const bool bf16 = dtype == DType::kBF16;
      const std::string dt = bf16 ? " BF16" : " F32";
      CrossEntropyData d = cross_entropy_data(c, 321);
      if (bf16) {
        for (float& x : d.logits) x = bf16_value(bf16_bits(x));
      }
      const Tensor targets = put_i32({c.N}, d.targets);
      const int64_t shards = std::ssize(c.cuts) - 1;
      const std::string what =
          fmt::format("N={} V={} in {} shards on {}", c.N, c.V, shards, dev_name());
      std::vector<Input> logits;
      for (int64_t s = 0; s < shards; ++s) {
        const int64_t v0 = c.cuts[s], v1 = c.cuts[s + 1];
        logits.push_back(put({c.N, v1 - v0}, dtype, shard_columns(d.logits, c.N, c.V, v0, v1)));
      }
      // Stage 1 per shard, then the max over shards (the all-reduce, on the host).
      std::vector<float> row_max(c.N, kNegInf);
      for (int64_t s = 0; s < shards; ++s) {
        Tensor m = garbage({c.N}, DType::kF32);
        be().cross_entropy_max(m, logits[s].dev);
        const int64_t Vs = c.cuts[s + 1] - c.cuts[s];
        std::vector<double> want(c.N, -INFINITY);
        for (int64_t i = 0; i < c.N * Vs; ++i)
          want[i / Vs] = std::max(want[i / Vs], logits[s].ref[i]);
        const std::vector<double> got = get(m);
        expect_same("cross_entropy_max" + dt, fmt::format("shard {} of {}", s, what), got, want);
        for (int64_t n = 0; n < c.N; ++n) row_max[n] = std::max(row_max[n], float(got[n]));
      }
      const Input max_all = put({c.N}, DType::kF32, row_max);
      // Stage 2 per shard, then the sums over shards.
      std::vector<double> sumexp(c.N, 0.0), target_logit(c.N, 0.0);
      for (int64_t s = 0; s < shards; ++s) {
        const int64_t v0 = c.cuts[s], Vs = c.cuts[s + 1] - v0;
        Tensor se = garbage({c.N}, DType::kF32), tl = garbage({c.N}, DType::kF32);
        be().cross_entropy_sumexp(se, tl, logits[s].dev, max_all.dev, targets, v0);
        std::vector<double> want_se(c.N, 0.0), want_tl(c.N, 0.0);
        for (int64_t n = 0; n < c.N; ++n) {
          for (int64_t v = 0; v < Vs; ++v)
            want_se[n] += std::exp(logits[s].ref[n * Vs + v] - row_max[n]);
          const int64_t t = d.targets[n] - v0;
          if (d.targets[n] >= 0 && t >= 0 && t < Vs) want_tl[n] = logits[s].ref[n * Vs + t];
        }
        const std::string shard = fmt::format("shard {} (v0 = {}) of {}", s, v0, what);
        const std::vector<double> got_se = get(se), got_tl = get(tl);
        expect_close("cross_entropy_sumexp sumexp" + dt, shard, got_se, want_se);
        expect_same("cross_entropy_sumexp target_logit" + dt, shard, got_tl, want_tl);
        sumexp = plus(sumexp, got_se);
        target_logit = plus(target_logit, got_tl);
      }
      // Stage 3 once, on the reduced statistics; against the loss of the whole row in double.
      const Input se_all =
          put({c.N}, DType::kF32, std::vector<float>(sumexp.begin(), sumexp.end()));
      const Input tl_all =
          put({c.N}, DType::kF32, std::vector<float>(target_logit.begin(), target_logit.end()));
      Tensor losses = garbage({c.N}, DType::kF32);
      be().cross_entropy_loss(losses, max_all.dev, se_all.dev, tl_all.dev, targets);
      std::vector<double> want_loss(c.N, 0.0), lse(c.N);
      for (int64_t n = 0; n < c.N; ++n) {
        double m = -INFINITY, sum = 0;
        for (int64_t v = 0; v < c.V; ++v) m = std::max(m, double(d.logits[n * c.V + v]));
        for (int64_t v = 0; v < c.V; ++v) sum += std::exp(d.logits[n * c.V + v] - m);
        lse[n] = m + std::log(sum);
        if (d.targets[n] >= 0) want_loss[n] = lse[n] - d.logits[n * c.V + d.targets[n]];
      }
      expect_close("cross_entropy_loss" + dt, what, get(losses), want_loss);
      // Backward per shard, written into garbage and in place over a copy of the logits.
      for (int64_t s = 0; s < shards; ++s) {
        const int64_t v0 = c.cuts[s], Vs = c.cuts[s + 1] - v0;
        const float dloss = 0.37f;
        std::vector<double> want(c.N * Vs, 0.0);
        for (int64_t n = 0; n < c.N; ++n) {
          if (d.targets[n] < 0) continue;
          for (int64_t v = 0; v < Vs; ++v) {
            const double p = std::exp(logits[s].ref[n * Vs + v] - lse[n]);
            want[n * Vs + v] = dloss * (p - (d.targets[n] == v0 + v ? 1.0 : 0.0));
          }
        }
        for (bool in_place : {false, true}) {
          Tensor dl =
              in_place ? put({c.N, Vs}, dtype, shard_columns(d.logits, c.N, c.V, v0, v0 + Vs)).dev
                       : garbage({c.N, Vs}, dtype);
          const Tensor& l = in_place ? dl : logits[s].dev;
          be().cross_entropy_backward(dl, l, max_all.dev, se_all.dev, targets, dloss, v0);
          const std::string where = fmt::format("shard {} (v0 = {}) {} of {}", s, v0,
                                                in_place ? "in place" : "into garbage", what);
          if (bf16) {
            expect_bf16_close("cross_entropy_backward BF16", where, get(dl), want);
          } else {
            expect_close("cross_entropy_backward F32", where, get(dl), want);
          }
        }
      }
    }
}

INSTANTIATE_TEST_SUITE_P(Backends, VocabOps, ::testing::ValuesIn(swept_devices()),
                         device_param_name);

}  // namespace
}  // namespace magix::test
