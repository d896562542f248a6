// TrainArgs: checks, JSON form, and the model a run starts from.
#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <optional>

#include "backends/backend.hpp"
#include "magix/error.hpp"
#include "magix/hf_files.hpp"
#include "magix/memory_check.hpp"
#include "magix/model_config.hpp"
#include "magix/optimizer.hpp"
#include "magix/sharding.hpp"
#include "magix/trainer.hpp"

namespace magix {

nlohmann::json TrainArgs::to_json() const {
  return nlohmann::json{
      {"model_type", model_type},
      {"model_name", model_name},
      {"model_config", model_config},
      {"model_cache_dir", model_cache_dir},
      {"tokenizer_name", tokenizer_name},
      {"bf16_model_weights", bf16_model_weights},
      {"bf16", bf16},
      {"recompute", recompute},
      {"device", device},
      {"overlap_comm", overlap_comm},
      {"train_file", train_file},
      {"train_data_config", train_data_config},
      {"train_data_field", train_data_field},
      {"split", split},
      {"use_chat_template", use_chat_template},
      {"chat_template_name", chat_template_name},
      {"train_on", train_on},
      {"pack", pack},
      {"skip_bad_records", skip_bad_records},
      {"max_length", max_length},
      {"eval_file", eval_file},
      {"eval_split", eval_split},
      {"eval_data_field", eval_data_field},
      {"eval_steps", eval_steps},
      {"per_device_eval_batch_size", per_device_eval_batch_size},
      {"num_epochs", num_epochs},
      {"max_steps", max_steps},
      {"batch_size", batch_size},
      {"gradient_accumulation_steps", gradient_accumulation_steps},
      {"learning_rate", learning_rate},
      {"lr_schedule", lr_schedule},
      {"warmup_ratio", warmup_ratio},
      {"lr_decay_ratio", lr_decay_ratio},
      {"weight_decay", weight_decay},
      {"adam_beta1", adam_beta1},
      {"adam_beta2", adam_beta2},
      {"adam_eps", adam_eps},
      {"max_grad_norm", max_grad_norm},
      {"checkpoint_dir", checkpoint_dir},
      {"save_steps", save_steps},
      {"max_to_keep", max_to_keep},
      {"async_save", async_save},
      {"log_steps", log_steps},
      {"metrics_file", metrics_file},
      {"progress", progress},
      {"report_to", report_to},
      {"logging_dir", logging_dir},
      {"seed", seed},
      {"mesh_shape", mesh_shape},
      {"partition_rules", partition_rules},
  };
}

void validate_train_args(const TrainArgs& a) {
  MAGIX_CHECK(a.model_name.empty() != a.model_config.empty(),
              "give exactly one of --model_name (a pretrained HF model) and --model_config (a "
              "config.json to start from random weights)");
  MAGIX_CHECK(!a.train_file.empty(),
              "--train_file is required (.jsonl, .json, .txt, .parquet, a folder, a glob or a hub "
              "dataset name: docs/data.md)");
  MAGIX_CHECK(!a.split.empty(), "--split must not be empty");
  MAGIX_CHECK(!a.eval_split.empty(), "--eval_split must not be empty");
  MAGIX_CHECK(a.eval_steps >= 0, "--eval_steps must be >= 0 (0: evaluate only at the end), got {}",
              a.eval_steps);
  MAGIX_CHECK(a.per_device_eval_batch_size > 0,
              "--per_device_eval_batch_size must be positive, got {}",
              a.per_device_eval_batch_size);
  MAGIX_CHECK(!a.eval_file.empty() || (a.eval_steps == 0 && a.eval_data_field.empty()),
              "--eval_steps and --eval_data_field need --eval_file");
  MAGIX_CHECK(a.report_to == "none" || a.report_to == "tensorboard",
              "--report_to '{}': expected none or tensorboard", a.report_to);
  MAGIX_CHECK(a.logging_dir.empty() || a.report_to == "tensorboard",
              "--logging_dir is for --report_to tensorboard");
  MAGIX_CHECK(a.max_length > 0, "--max_length must be positive, got {}", a.max_length);
  MAGIX_CHECK(a.num_epochs > 0, "--num_epochs must be positive, got {}", a.num_epochs);
  MAGIX_CHECK(a.batch_size > 0, "--batch_size must be positive, got {}", a.batch_size);
  MAGIX_CHECK(a.gradient_accumulation_steps > 0,
              "--gradient_accumulation_steps must be positive, got {}",
              a.gradient_accumulation_steps);
  MAGIX_CHECK(a.batch_size % a.gradient_accumulation_steps == 0,
              "--batch_size {} does not divide into --gradient_accumulation_steps {} "
              "micro-batches",
              a.batch_size, a.gradient_accumulation_steps);
  // Positions are int32 and rows hold max_length + 1 tokens.
  MAGIX_CHECK(a.max_length < INT32_MAX, "--max_length must be below {}, got {}", INT32_MAX,
              a.max_length);
  // The optimizer runs in fp32: values past FLT_MAX would be infinite there.
  MAGIX_CHECK(std::isfinite(a.learning_rate) && a.learning_rate >= 0 &&
                  a.learning_rate <= std::numeric_limits<float>::max(),
              "--learning_rate must be a finite number in [0, 3.4e38], got {}", a.learning_rate);
  MAGIX_CHECK(std::isfinite(a.max_grad_norm),
              "--max_grad_norm must be a finite number (<= 0: no clipping), got {}",
              a.max_grad_norm);
  parse_schedule_kind(a.lr_schedule);
  parse_train_on(a.train_on);
  MAGIX_CHECK(a.warmup_ratio >= 0 && a.warmup_ratio <= 1,
              "--warmup_ratio must be in [0, 1], got {}", a.warmup_ratio);
  MAGIX_CHECK(a.lr_decay_ratio > 0 && a.lr_decay_ratio <= 1,
              "--lr_decay_ratio must be in (0, 1], got {}", a.lr_decay_ratio);
  MAGIX_CHECK(std::isfinite(a.weight_decay) && a.weight_decay >= 0,
              "--weight_decay must be a finite number >= 0, got {}", a.weight_decay);
  MAGIX_CHECK(a.adam_beta1 >= 0 && a.adam_beta1 < 1, "--adam_beta1 must be in [0, 1), got {}",
              a.adam_beta1);
  MAGIX_CHECK(a.adam_beta2 >= 0 && a.adam_beta2 < 1, "--adam_beta2 must be in [0, 1), got {}",
              a.adam_beta2);
  MAGIX_CHECK(std::isfinite(a.adam_eps) && a.adam_eps > 0,
              "--adam_eps must be a positive finite number, got {}", a.adam_eps);
  MAGIX_CHECK(a.log_steps > 0, "--log_steps must be positive, got {}", a.log_steps);
  MAGIX_CHECK(
      a.progress == "auto" || a.progress == "bar" || a.progress == "log" || a.progress == "none",
      "--progress must be auto, bar, log or none, got '{}'", a.progress);
  MAGIX_CHECK(a.mesh_shape.size() == 2, "--mesh_shape takes 2 sizes (data, model), got {}",
              a.mesh_shape.size());
}

std::string unsaved_run_warning(const TrainArgs& a) {
  if (!a.checkpoint_dir.empty()) return {};
  return "WARNING: no --checkpoint_dir: nothing this run trains will be saved (pass "
         "--checkpoint_dir DIR to save checkpoints, which magix export turns into a model "
         "folder)";
}

Decoder load_train_decoder(const TrainArgs& a, const Mesh& mesh) {
  DecoderOptions options;
  options.recompute = a.recompute;
  options.overlap_comm = a.overlap_comm;
  options.weight_dtype = a.bf16_model_weights ? DType::kBF16 : DType::kF32;
  options.compute_dtype = a.bf16 ? DType::kBF16 : DType::kF32;
  options.device = use_device(a.device);
  std::optional<PartitionRules> rules;
  if (!a.partition_rules.empty()) rules = load_partition_rules(a.partition_rules);
  const auto check_type = [&](const ModelConfig& config, const std::string& source) {
    const std::string family(family_name(config.family));
    MAGIX_CHECK(a.model_type.empty() || a.model_type == family,
                "--model_type {} but {} is a {} model: pass --model_type {}", a.model_type, source,
                family, family);
  };
  if (!a.model_name.empty()) {
    Decoder d = load_decoder(a.model_name, mesh, options, rules ? &*rules : nullptr);
    check_type(d.config(), a.model_name);
    return d;
  }
  const ModelConfig config = load_model_config(a.model_config);
  check_type(config, a.model_config);
  // Drawn on the host, then (on another device) moved there.
  const auto fits_on = [&](Device where) {
    check_model_fits_in_memory(config, a.model_config, a.bf16_model_weights ? 2 : 4, 0,
                               mesh.world_size(), where);
  };
  fits_on(Device::kCpu);
  if (options.device != Device::kCpu) fits_on(options.device);
  std::vector<ParamInfo> infos = expected_parameters(config);
  if (rules) apply_partition_rules(infos, *rules, config);
  shard_parameters(infos, mesh);
  ParameterSet params = init_parameters(config, infos, a.seed, options.weight_dtype);
  return Decoder(config, mesh, std::move(params), options);
}

std::unique_ptr<Trainable> make_full_trainable(const TrainArgs& args, const Mesh& mesh) {
  // Before anything is allocated: the weights, their fp32 gradients and AdamW's two fp32
  // moments, split evenly over the processes (the least any sharding needs), in the memory of
  // the device they will live on.
  const std::string config_json =
      args.model_name.empty() ? args.model_config
                              : (resolve_model_dir(args.model_name) / "config.json").string();
  check_model_fits_in_memory(load_model_config(config_json), config_json,
                             args.bf16_model_weights ? 2 : 4, 12, mesh.world_size(),
                             use_device(args.device));
  return std::make_unique<FullTrainable>(load_train_decoder(args, mesh));
}

}  // namespace magix
