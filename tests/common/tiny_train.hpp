// The tiny random llama of tests/fixtures/train (tiny_config.json, the trained byte-level
// tokenizer) on its 48-example corpus, as the trainer, device, GPU and mesh tests train it:
// max_length 24, batch 8, learning rate 1e-2, weight decay 0.1, no progress bar, mesh 1x1.
// Callers set the run's length (max_steps or num_epochs) and whatever else they vary.
#pragma once

#include <filesystem>

#include "magix/trainer.hpp"

namespace magix::test {

inline TrainArgs tiny_train_args(const std::filesystem::path& fixtures) {
  TrainArgs a;
  a.model_config = (fixtures / "train/tiny_config.json").string();
  a.tokenizer_name = (fixtures / "tokenizers/trained_bytelevel").string();
  a.train_file = (fixtures / "train/corpus.jsonl").string();
  a.max_length = 24;
  a.batch_size = 8;
  a.learning_rate = 1e-2;
  a.weight_decay = 0.1;
  a.progress = "none";
  a.mesh_shape = {1, 1};
  return a;
}

}  // namespace magix::test
