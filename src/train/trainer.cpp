#include "magix/trainer.hpp"

#include "magix/error.hpp"

namespace magix {

nlohmann::json TrainArgs::to_json() const { MAGIX_FAIL("TrainArgs::to_json: not implemented yet"); }

void validate_train_args(const TrainArgs&) { MAGIX_FAIL("validate_train_args: not implemented yet"); }

Decoder load_train_decoder(const TrainArgs&, const Mesh&) {
  MAGIX_FAIL("load_train_decoder: not implemented yet");
}

std::unique_ptr<Trainable> make_full_trainable(const TrainArgs& args, const Mesh& mesh) {
  return std::make_unique<FullTrainable>(load_train_decoder(args, mesh));
}

TrainSummary run_training(const TrainArgs&, const Mesh&, Trainable&, const TrainHooks&) {
  MAGIX_FAIL("run_training: not implemented yet");
}

}  // namespace magix
