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
  nlohmann::json d = {{"lora_rank", c.rank},
                      {"lora_alpha", c.alpha},
                      {"lora_targets", c.targets},
                      {"lora_dropout", c.dropout}};
  // Only when set: a checkpoint of plain LoRA reads (and resumes) as before.
  if (c.rslora) d["lora_use_rslora"] = true;
  return d;
}

std::unique_ptr<LoraTrainable> make_lora_trainable(const TrainArgs& args, const LoraConfig& lora,
                                                   const Mesh& mesh,
                                                   const std::filesystem::path& init) {
  MAGIX_CHECK(lora.dropout >= 0 && lora.dropout < 1, "--lora_dropout must be in [0, 1), got {}",
              lora.dropout);
  Decoder model = load_train_decoder(args, mesh);  // bf16 storage with --bf16_model_weights
  const std::vector<ParamInfo> infos = lora_adapter_infos(model.params().infos(), lora, mesh);
  ParameterSet adapters;
  if (init.empty()) {
    adapters = init_lora_adapters(infos, args.seed);
  } else {
    LoadedLora loaded = read_lora_adapters(init, model.params().infos(), lora.alpha, mesh);
    MAGIX_CHECK(loaded.adapters.size() == infos.size() && loaded.config.rank == lora.rank,
                "--lora_init {}: {} adapter tensors of rank {}, the run's --lora_rank {} and "
                "--lora_targets need {} (pass the adapters' settings)",
                init.string(), loaded.adapters.size(), loaded.config.rank, lora.rank, infos.size());
    MAGIX_CHECK(loaded.config.rslora == lora.rslora,
                "--lora_init {}: adapters {} rank-stabilised scaling (use_rslora) and the run {}: "
                "{} --use_rslora",
                init.string(), loaded.config.rslora ? "with" : "without",
                lora.rslora ? "with" : "without", loaded.config.rslora ? "pass" : "drop");
    for (size_t i = 0; i < infos.size(); ++i) {
      MAGIX_CHECK(loaded.adapters.info(i).name == infos[i].name,
                  "--lora_init {}: adapter '{}' where the run's --lora_targets want '{}'",
                  init.string(), loaded.adapters.info(i).name, infos[i].name);
    }
    adapters = std::move(loaded.adapters);
  }
  LoraModelOptions options;
  options.seed = args.seed;
  return std::make_unique<LoraTrainable>(
      LoraModel(std::move(model), lora, std::move(adapters), options));
}

}  // namespace magix
