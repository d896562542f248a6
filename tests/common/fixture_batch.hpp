// The HF inputs of a model fixture (reference.safetensors: input_ids, attention_mask, labels,
// written by tools/reference/make_model_fixtures.py) as a TokenBatch, for every test that
// checks the decoder against them.
#pragma once

#include <cstdint>

#include "magix/batch.hpp"
#include "magix/safetensors.hpp"

namespace magix::test {

// targets[t] = labels[t + 1] (-100 -> ignored), as HF shifts them; positions 0..T-1 (the fixture
// batches are right-padded); rows repeated `repeat` times (0..B-1, 0..B-1, ...), which leaves
// the mean loss and its gradients unchanged.
inline TokenBatch read_fixture_batch(const SafetensorsReader& ref, int64_t repeat = 1) {
  const Tensor ids = ref.read("input_ids");
  const Tensor mask = ref.read("attention_mask");
  const Tensor labels = ref.read("labels");
  TokenBatch b;
  const int64_t rows = ids.dim(0);
  b.batch = rows * repeat;
  b.seq = ids.dim(1);
  for (int64_t k = 0; k < repeat; ++k) {
    for (int64_t i = 0; i < rows * b.seq; ++i) {
      const int64_t t = i % b.seq;
      b.input_ids.push_back(static_cast<int32_t>(ids.data<int64_t>()[i]));
      b.key_valid.push_back(static_cast<int32_t>(mask.data<int64_t>()[i]));
      b.positions.push_back(static_cast<int32_t>(t));
      const int64_t next = t + 1 < b.seq ? labels.data<int64_t>()[i + 1] : -100;
      b.targets.push_back(next == -100 ? TokenBatch::kIgnore : static_cast<int32_t>(next));
    }
  }
  return b;
}

}  // namespace magix::test
