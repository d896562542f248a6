// DataLoader: shuffle, batches, padding/targets as the reference, packing, slices, state.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <numeric>
#include <random>

#include "../common/json_wrong_types.hpp"
#include "magix/data_loader.hpp"
#include "magix/error.hpp"

namespace magix {
namespace {

const std::filesystem::path kDir = std::filesystem::path(MAGIX_FIXTURES_DIR) / "data";

Example make_example(std::vector<int32_t> ids) {
  Example ex;
  ex.loss_mask.assign(ids.size(), 1);
  ex.ids = std::move(ids);
  return ex;
}

// n examples of varied lengths in [1, max_len]; example e starts with token 1000 + e.
std::vector<Example> varied_examples(int n, int max_len, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<Example> out;
  for (int e = 0; e < n; ++e) {
    const int len = 1 + static_cast<int>(gen() % static_cast<uint32_t>(max_len));
    std::vector<int32_t> ids(len);
    ids[0] = 1000 + e;
    for (int i = 1; i < len; ++i) ids[i] = static_cast<int32_t>(3 + gen() % 500);
    out.push_back(make_example(std::move(ids)));
  }
  return out;
}

void expect_same(const TokenBatch& a, const TokenBatch& b) {
  EXPECT_EQ(a.batch, b.batch);
  EXPECT_EQ(a.seq, b.seq);
  EXPECT_EQ(a.input_ids, b.input_ids);
  EXPECT_EQ(a.targets, b.targets);
  EXPECT_EQ(a.key_valid, b.key_valid);
  EXPECT_EQ(a.positions, b.positions);
  EXPECT_EQ(a.segments, b.segments);
}

TEST(Shuffle, GeneratorIsTheStandardsMt19937_64) {
  std::mt19937_64 gen;  // default seed 5489
  gen.discard(9999);
  EXPECT_EQ(gen(), 9981545732273789042ull);  // [rand.predef] check value
}

TEST(Shuffle, MatchesIndependentImplementation) {
  std::ifstream in(kDir / "shuffle_golden.json");
  ASSERT_TRUE(in.good());
  const nlohmann::json golden = nlohmann::json::parse(in);
  ASSERT_GE(golden["cases"].size(), 6u);
  for (const auto& c : golden["cases"]) {
    const auto n = c["n"].get<int64_t>();
    const auto seed = c["seed"].get<uint64_t>();
    const auto epoch = c["epoch"].get<int64_t>();
    EXPECT_EQ(shuffle_permutation(n, seed, epoch), c["permutation"].get<std::vector<int64_t>>())
        << "n=" << n << " seed=" << seed << " epoch=" << epoch;
  }
}

TEST(Shuffle, PureFunctionOfSeedAndEpoch) {
  const auto p = shuffle_permutation(1000, 42, 0);
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(1000);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted, iota);
  EXPECT_EQ(p, shuffle_permutation(1000, 42, 0));
  EXPECT_NE(p, shuffle_permutation(1000, 42, 1));
  EXPECT_NE(p, shuffle_permutation(1000, 43, 0));
  EXPECT_NE(shuffle_permutation(1000, 42, 1), shuffle_permutation(1000, 43, 0));
  EXPECT_TRUE(shuffle_permutation(0, 1, 0).empty());
}

// The reference rule, written from train.py directly: the row is right-padded with an
// attention mask; inputs = row[:-1]; a target counts where mask[t] and mask[t+1].
TEST(Batches, PaddingAndTargetsFollowTheReferenceRule) {
  LoaderOptions o;
  o.global_batch = 2;
  o.max_length = 5;
  o.pad_id = 2;
  o.shuffle = false;
  std::vector<Example> examples = {make_example({1, 10, 11, 12}),           // shorter: padded
                                   make_example({1, 20, 21, 22, 23, 24})};  // exactly L = 6
  DataLoader loader(examples, o);
  const TokenBatch b = loader.next();
  ASSERT_EQ(b.batch, 2);
  ASSERT_EQ(b.seq, 5);
  const int32_t X = TokenBatch::kIgnore;
  EXPECT_EQ(b.input_ids, (std::vector<int32_t>{1, 10, 11, 12, 2, /**/ 1, 20, 21, 22, 23}));
  EXPECT_EQ(b.targets, (std::vector<int32_t>{10, 11, 12, X, X, /**/ 20, 21, 22, 23, 24}));
  EXPECT_EQ(b.key_valid, (std::vector<int32_t>{1, 1, 1, 1, 0, /**/ 1, 1, 1, 1, 1}));
  EXPECT_EQ(b.positions, (std::vector<int32_t>{0, 1, 2, 3, 4, /**/ 0, 1, 2, 3, 4}));
  EXPECT_TRUE(b.segments.empty());
  EXPECT_EQ(b.count_targets(), 8);

  // The same rule on many random examples.
  o.global_batch = 4;
  o.max_length = 9;
  o.shuffle = true;
  const auto many = varied_examples(40, 10, 7);
  DataLoader random_loader(many, o);
  for (int64_t s = 0; s < random_loader.steps_per_epoch(); ++s) {
    const auto rows = random_loader.global_rows(0, s);
    const TokenBatch got = random_loader.batch_at(0, s);
    for (int64_t r = 0; r < 4; ++r) {
      const auto& ids = many[rows[r]].ids;
      std::vector<int32_t> tokens(10, o.pad_id), mask(10, 0);
      for (size_t i = 0; i < ids.size(); ++i) tokens[i] = ids[i], mask[i] = 1;
      for (int t = 0; t < 9; ++t) {
        EXPECT_EQ(got.input_ids[r * 9 + t], tokens[t]);
        EXPECT_EQ(got.key_valid[r * 9 + t], mask[t]);
        EXPECT_EQ(got.targets[r * 9 + t], mask[t] && mask[t + 1] ? tokens[t + 1] : X);
      }
    }
  }
}

TEST(Batches, LossMaskSelectsTargets) {
  LoaderOptions o;
  o.global_batch = 1;
  o.max_length = 5;
  o.pad_id = 0;
  Example ex = make_example({1, 5, 6, 7, 8});
  ex.loss_mask = {0, 0, 1, 1, 0};  // only tokens 6 and 7 are targets
  DataLoader loader({ex}, o);
  const int32_t X = TokenBatch::kIgnore;
  EXPECT_EQ(loader.next().targets, (std::vector<int32_t>{X, 6, 7, X, X}));
}

TEST(Batches, EpochOrderDropsTheLastIncompleteBatch) {
  LoaderOptions o;
  o.global_batch = 3;
  o.max_length = 4;
  o.seed = 42;
  const auto examples = varied_examples(10, 5, 1);
  DataLoader loader(examples, o);
  EXPECT_EQ(loader.steps_per_epoch(), 3);  // 10 // 3
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    const auto perm = shuffle_permutation(10, 42, epoch);
    for (int64_t s = 0; s < 3; ++s) {
      EXPECT_EQ(loader.epoch(), epoch);
      EXPECT_EQ(loader.step(), s);
      const auto rows = loader.global_rows(epoch, s);
      EXPECT_EQ(rows, (std::vector<int64_t>{perm[3 * s], perm[3 * s + 1], perm[3 * s + 2]}));
      const TokenBatch b = loader.next();
      for (int r = 0; r < 3; ++r) EXPECT_EQ(b.input_ids[r * 4], 1000 + rows[r]);
    }
  }
  EXPECT_EQ(loader.epoch(), 2);
  EXPECT_EQ(loader.global_step(), 6);
}

TEST(Batches, RankSlicesConcatenateToTheGlobalBatch) {
  const auto examples = varied_examples(50, 9, 3);
  for (bool pack : {false, true}) {
    LoaderOptions o;
    o.global_batch = 8;
    o.max_length = 8;
    o.pack = pack;
    o.seed = 7;
    const DataLoader whole(examples, o);
    for (int64_t d : {1, 2, 4}) {
      std::vector<DataLoader> ranks;
      for (int64_t r = 0; r < d; ++r) {
        LoaderOptions ro = o;
        ro.data_rank = r;
        ro.data_size = d;
        ranks.emplace_back(examples, ro);
      }
      for (int64_t step = 0; step < whole.steps_per_epoch() + 2; ++step) {
        const int64_t e = step / whole.steps_per_epoch(), s = step % whole.steps_per_epoch();
        const TokenBatch global = whole.global_batch_at(e, s);
        TokenBatch joined;
        for (auto& rank : ranks) {
          const TokenBatch part = rank.next();
          EXPECT_EQ(part.batch, 8 / d);
          joined.input_ids.insert(joined.input_ids.end(), part.input_ids.begin(),
                                  part.input_ids.end());
          joined.targets.insert(joined.targets.end(), part.targets.begin(), part.targets.end());
          joined.key_valid.insert(joined.key_valid.end(), part.key_valid.begin(),
                                  part.key_valid.end());
          joined.positions.insert(joined.positions.end(), part.positions.begin(),
                                  part.positions.end());
          joined.segments.insert(joined.segments.end(), part.segments.begin(), part.segments.end());
        }
        joined.batch = global.batch;
        joined.seq = global.seq;
        SCOPED_TRACE(testing::Message() << "pack=" << pack << " D=" << d << " step=" << step);
        expect_same(joined, global);
      }
    }
  }
}

TEST(Batches, StateRestoresExactlyOnAnyDataAxis) {
  const auto examples = varied_examples(30, 7, 11);
  LoaderOptions o;
  o.global_batch = 4;
  o.max_length = 6;
  o.seed = 99;
  DataLoader first(examples, o);
  for (int i = 0; i < 9; ++i) first.next();  // into epoch 1 (7 steps per epoch)
  const std::string saved = first.state().dump();
  EXPECT_EQ(first.epoch(), 1);
  EXPECT_EQ(first.step(), 2);

  DataLoader resumed(examples, o);
  resumed.restore(nlohmann::json::parse(saved));
  LoaderOptions half = o;
  half.data_size = 2;
  half.data_rank = 1;
  DataLoader resumed_rank1(examples, half);
  resumed_rank1.restore(nlohmann::json::parse(saved));
  for (int i = 0; i < 10; ++i) {
    const TokenBatch expected = first.next();
    expect_same(resumed.next(), expected);
    const TokenBatch part = resumed_rank1.next();
    const size_t half_n = expected.input_ids.size() / 2;
    EXPECT_EQ(part.input_ids,
              std::vector<int32_t>(expected.input_ids.begin() + half_n, expected.input_ids.end()));
    EXPECT_EQ(part.targets,
              std::vector<int32_t>(expected.targets.begin() + half_n, expected.targets.end()));
  }
  EXPECT_EQ(resumed.state(), first.state());
}

TEST(Batches, StateFromOtherDataIsRefused) {
  const auto examples = varied_examples(30, 7, 11);
  LoaderOptions o;
  o.global_batch = 4;
  o.max_length = 6;
  DataLoader loader(examples, o);
  const nlohmann::json state = loader.state();

  LoaderOptions other_seed = o;
  other_seed.seed = 1;
  DataLoader a(examples, other_seed);
  EXPECT_THROW(a.restore(state), Error);
  auto changed = examples;
  changed[5].ids[0] += 1;
  DataLoader b(changed, o);
  try {
    b.restore(state);
    ADD_FAILURE() << "restore over different data succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fingerprint"), std::string::npos) << e.what();
  }
  nlohmann::json bad = state;
  bad["step"] = 100;
  EXPECT_THROW(loader.restore(bad), Error);
  bad = state;
  bad["version"] = 2;
  EXPECT_THROW(loader.restore(bad), Error);
  EXPECT_THROW(loader.restore(nlohmann::json::array()), Error);
}

// A saved position (trainer_state.json: "data") with fields of the wrong type: a magix::Error
// naming the state and the field, never a JSON library exception.
TEST(Batches, StateWithWrongTypesNamesTheField) {
  const auto examples = varied_examples(30, 7, 11);
  LoaderOptions o;
  o.global_batch = 4;
  o.max_length = 6;
  DataLoader loader(examples, o);
  loader.next();
  const nlohmann::json valid = loader.state();
  const std::string where = "ckpt/000001/trainer_state.json: \"data\"";
  const auto read = [&](const nlohmann::json& j) {
    DataLoader fresh(examples, o);
    fresh.restore(j, where);
  };
  std::vector<test::JsonField> fields = {{"/format", true}, {"/version"}, {"/epoch"}, {"/step"}};
  for (const char* key : {"seed", "global_batch", "max_length", "pack", "shuffle", "num_examples",
                          "num_rows", "fingerprint"}) {
    fields.push_back({std::string("/") + key, false, fmt::format("saved {} = ", key)});
  }
  test::expect_wrong_types_named(valid, fields, read);
  test::expect_only_magix_errors(valid, read);
  try {
    read(nlohmann::json::array());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(where + " must be an object, found list"),
              std::string::npos)
        << e.what();
  }
}

TEST(Packing, SegmentsPositionsAndBoundaryTargets) {
  // Rows of L = 7 tokens: [a(3) b(2)] then c(4) does not fit (5 + 4 > 7) -> [c(4) d(3)], [e(6)].
  std::vector<Example> examples = {make_example({10, 11, 12}), make_example({20, 21}),
                                   make_example({30, 31, 32, 33}), make_example({40, 41, 42}),
                                   make_example({50, 51, 52, 53, 54, 55})};
  examples[3].loss_mask = {1, 0, 1};  // token 41 is not a target
  const auto rows = pack_rows(examples, 7);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].first, 0);
  EXPECT_EQ(rows[0].count, 2);
  EXPECT_EQ(rows[1].first, 2);
  EXPECT_EQ(rows[1].count, 2);
  EXPECT_EQ(rows[2].first, 4);
  EXPECT_EQ(rows[2].count, 1);

  LoaderOptions o;
  o.global_batch = 3;
  o.max_length = 6;
  o.pad_id = 0;
  o.pack = true;
  o.shuffle = false;
  DataLoader loader(examples, o);
  EXPECT_EQ(loader.num_rows(), 3);
  const TokenBatch b = loader.next();
  const int32_t X = TokenBatch::kIgnore;
  // Row 0: slots 10 11 12 20 21 pad pad -> inputs are the first 6 slots.
  EXPECT_EQ(b.input_ids, (std::vector<int32_t>{10, 11, 12, 20, 21, 0,   //
                                               30, 31, 32, 33, 40, 41,  //
                                               50, 51, 52, 53, 54, 55}));
  EXPECT_EQ(b.targets, (std::vector<int32_t>{11, 12, X, 21, X, X,   // 12 -> 20 crosses a boundary
                                             31, 32, 33, X, X, 42,  // 33 -> 40 crosses; 41 masked
                                             51, 52, 53, 54, 55, X}));
  EXPECT_EQ(b.segments, (std::vector<int32_t>{0, 0, 0, 1, 1, 1,  //
                                              0, 0, 0, 0, 1, 1,  //
                                              0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(b.positions, (std::vector<int32_t>{0, 1, 2, 0, 1, 2,  //
                                               0, 1, 2, 3, 0, 1,  //
                                               0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(b.key_valid, (std::vector<int32_t>{1, 1, 1, 1, 1, 0,  //
                                               1, 1, 1, 1, 1, 1,  //
                                               1, 1, 1, 1, 1, 1}));
}

TEST(Packing, GreedyInOrderAndRowsHoldTheirExamples) {
  const auto examples = varied_examples(200, 17, 5);
  const auto rows = pack_rows(examples, 17);
  // Rows cover the examples in order, whole, each row as full as greedy allows.
  int64_t next = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    EXPECT_EQ(rows[r].first, next);
    ASSERT_GE(rows[r].count, 1);
    int64_t used = 0;
    for (int64_t e = rows[r].first; e < rows[r].first + rows[r].count; ++e) {
      used += static_cast<int64_t>(examples[e].ids.size());
    }
    EXPECT_LE(used, 17);
    next += rows[r].count;
    if (next < 200) {
      EXPECT_GT(used + static_cast<int64_t>(examples[next].ids.size()), 17);
    }
  }
  EXPECT_EQ(next, 200);

  LoaderOptions o;
  o.global_batch = 1;
  o.max_length = 16;
  o.pack = true;
  o.shuffle = false;
  DataLoader loader(examples, o);
  ASSERT_EQ(loader.num_rows(), static_cast<int64_t>(rows.size()));
  for (int64_t r = 0; r < loader.num_rows(); ++r) {
    std::vector<int32_t> slots;  // the row's real tokens in order
    std::vector<int32_t> segs, poss;
    for (int64_t e = rows[r].first; e < rows[r].first + rows[r].count; ++e) {
      for (size_t j = 0; j < examples[e].ids.size(); ++j) {
        slots.push_back(examples[e].ids[j]);
        segs.push_back(static_cast<int32_t>(e - rows[r].first));
        poss.push_back(static_cast<int32_t>(j));
      }
    }
    const TokenBatch b = loader.global_batch_at(0, r);
    for (int64_t t = 0; t < 16; ++t) {
      const bool real = t < static_cast<int64_t>(slots.size());
      EXPECT_EQ(b.key_valid[t], real ? 1 : 0);
      if (!real) continue;
      EXPECT_EQ(b.input_ids[t], slots[t]);
      EXPECT_EQ(b.segments[t], segs[t]);
      EXPECT_EQ(b.positions[t], poss[t]);
      const bool next_real = t + 1 < static_cast<int64_t>(slots.size());
      EXPECT_EQ(b.targets[t],
                next_real && segs[t + 1] == segs[t] ? slots[t + 1] : TokenBatch::kIgnore);
    }
  }
}

TEST(Loader, ClearErrors) {
  const auto examples = varied_examples(10, 5, 1);
  LoaderOptions o;
  o.max_length = 4;
  o.global_batch = 6;
  o.data_size = 4;
  EXPECT_THROW(DataLoader(examples, o), Error);  // 6 not divisible by 4
  o.data_size = 1;
  o.global_batch = 11;
  EXPECT_THROW(DataLoader(examples, o), Error);  // fewer rows than one batch
  o.global_batch = 2;
  o.max_length = 3;
  EXPECT_THROW(DataLoader(examples, o), Error);  // an example longer than max_length + 1
  o.max_length = 4;
  DataLoader ok(examples, o);
  EXPECT_THROW(ok.seek(0, 5), Error);
  ok.seek_global_step(7);
  EXPECT_EQ(ok.epoch(), 1);
  EXPECT_EQ(ok.step(), 2);
}

}  // namespace
}  // namespace magix
