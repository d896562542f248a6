// The LoRA Trainable behind `magix train-lora`: run_training (trainer.hpp) updates the adapters
// of a LoraModel; the frozen base never gets gradients or optimizer state.
#include "magix/error.hpp"
#include "magix/lora.hpp"

namespace magix {

LossResult LoraTrainable::loss_and_grad(const TokenBatch& batch, double token_count,
                                        ParameterSet& grads) {
  return model_.loss_and_grad(batch, token_count, grads);
}

nlohmann::json LoraTrainable::describe() const {
  const LoraConfig& c = model_.config();
  return {{"lora_rank", c.rank}, {"lora_alpha", c.alpha}, {"lora_targets", c.targets}};
}

std::unique_ptr<LoraTrainable> make_lora_trainable(const TrainArgs& args, const LoraConfig& lora,
                                                   const Mesh& mesh) {
  Decoder model = load_train_decoder(args, mesh);  // bf16 storage with --bf16_model_weights
  const std::vector<ParamInfo> infos = lora_adapter_infos(model.params().infos(), lora, mesh);
  ParameterSet adapters = init_lora_adapters(infos, args.seed);
  return std::make_unique<LoraTrainable>(LoraModel(std::move(model), lora, std::move(adapters)));
}

}  // namespace magix
