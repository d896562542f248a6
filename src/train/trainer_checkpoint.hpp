// The trainer's side of checkpoints: what a step saves (trainable params, AdamW moments, trainer
// state, config and tokenizer files) and how a run resumes from it on any mesh.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "magix/checkpoint.hpp"
#include "magix/data_loader.hpp"
#include "magix/optimizer.hpp"
#include "magix/trainer.hpp"

namespace magix::detail {

inline constexpr const char* kTrainerStateFormat = "magix-trainer-state";
inline constexpr int kTrainerStateVersion = 1;

// Item `model.checkpoint_item()` = the trainable tensors; item "optimizer" = "mu/<name>" and
// "nu/<name>" sharded exactly as the parameters. Host tensors share storage with the run's;
// tensors on a device are copied to the host here.
CheckpointItems training_items(Trainable& model, AdamW& optimizer);

// Everything besides tensors that a resume needs: step, optimizer counters, data position, the
// arguments and what the trainable is.
nlohmann::json make_trainer_state(const TrainArgs& args, Trainable& model, const AdamW& optimizer,
                                  const DataLoader& loader, int64_t step, int64_t total_steps,
                                  int64_t skipped_total);

// Why a saved state cannot be resumed by this run: one line per difference (batch size,
// max_length, seed, data field/format, packing, train_on, chat template, model type, item,
// trainable description). Empty when it can.
std::vector<std::string> resume_conflicts(const nlohmann::json& saved,
                                          const nlohmann::json& current);

// Restores the trainable tensors, AdamW moments and counters and the loader position from a
// committed step (any mesh: each rank reads its own boxes). Returns the saved step.
int64_t restore_training(const CheckpointReader& reader, Trainable& model, AdamW& optimizer,
                         DataLoader& loader);

// config.json (written by world rank 0 into `checkpoint_dir/.tmp-trainer-XXXXXX/`, removed on
// destruction; after a crash the next CheckpointManager of the folder removes it with the other
// `.tmp-*` debris) plus the tokenizer's files and the trainable's extra files: what each step
// copies.
class CheckpointExtraFiles {
 public:
  CheckpointExtraFiles(const std::filesystem::path& checkpoint_dir,
                       const nlohmann::json& model_config,
                       const std::filesystem::path& tokenizer_dir,
                       std::vector<std::filesystem::path> trainable_files, bool is_rank0);
  ~CheckpointExtraFiles();
  CheckpointExtraFiles(const CheckpointExtraFiles&) = delete;
  CheckpointExtraFiles& operator=(const CheckpointExtraFiles&) = delete;
  const std::vector<std::filesystem::path>& files() const { return files_; }

 private:
  std::filesystem::path staging_;
  std::vector<std::filesystem::path> files_;
};

}  // namespace magix::detail
