#include "trainer_checkpoint.hpp"

#include <fmt/format.h>
#include <stdlib.h>

#include <fstream>

#include "backends/backend.hpp"
#include "magix/error.hpp"
#include "magix/json_parse.hpp"

namespace magix::detail {

namespace fs = std::filesystem;

namespace {

constexpr const char* kMagixVersion = "0.1.0";

std::vector<ShardedTensor> moment_tensors(const ParameterSet& params, std::vector<Tensor>& moments,
                                          const std::string& prefix) {
  MAGIX_CHECK(moments.size() == params.size(), "optimizer holds {} moments for {} parameters",
              moments.size(), params.size());
  std::vector<ShardedTensor> out;
  for (size_t i = 0; i < params.size(); ++i) {
    append_sharded_tensors(out, params.info(i), prefix + params.info(i).name, moments[i]);
  }
  return out;
}

// Checkpoint files are read and written from host memory: a tensor that lives on a device is
// saved from a host copy made now (the values at save() time) ...
std::vector<ShardedTensor> on_host(std::vector<ShardedTensor> tensors) {
  for (ShardedTensor& t : tensors) t.local = to_host(t.local);
  return tensors;
}

// ... and restored into a host buffer, then copied to the device.
void read_item(const CheckpointReader& reader, const std::string& item,
               std::vector<ShardedTensor>& targets) {
  std::vector<ShardedTensor> host = targets;
  for (ShardedTensor& t : host) {
    if (t.local.device() != Device::kCpu) t.local = Tensor::empty(t.local.shape(), t.local.dtype());
  }
  reader.read(item, host);
  for (size_t i = 0; i < targets.size(); ++i) {
    Tensor& dst = targets[i].local;
    if (dst.device() != Device::kCpu) backend_for(dst.device()).copy(dst, host[i].local);
  }
}

}  // namespace

CheckpointItems training_items(Trainable& model, AdamW& optimizer) {
  CheckpointItems items;
  const ParameterSet& params = model.trainable();
  items[model.checkpoint_item()] = on_host(sharded_tensors(params));
  std::vector<ShardedTensor> opt = on_host(moment_tensors(params, optimizer.mu(), "mu/"));
  std::vector<ShardedTensor> nu = on_host(moment_tensors(params, optimizer.nu(), "nu/"));
  opt.insert(opt.end(), std::make_move_iterator(nu.begin()), std::make_move_iterator(nu.end()));
  items["optimizer"] = std::move(opt);
  return items;
}

nlohmann::json make_trainer_state(const TrainArgs& args, Trainable& model, const AdamW& optimizer,
                                  const DataLoader& loader, int64_t step, int64_t total_steps,
                                  int64_t skipped_total) {
  const ModelConfig& config = model.decoder().config();
  return nlohmann::json{
      {"format", kTrainerStateFormat},
      {"version", kTrainerStateVersion},
      {"magix_version", kMagixVersion},
      {"step", step},
      {"total_steps", total_steps},
      {"skipped_steps", skipped_total},
      {"optimizer",
       {{"updates", optimizer.updates()},
        {"consecutive_skipped", optimizer.consecutive_skipped()}}},
      {"data", loader.state()},
      {"seed", args.seed},
      {"args", args.to_json()},
      {"model_type", std::string(family_name(config.family))},
      {"item", model.checkpoint_item()},
      {"trainable", model.describe()},
  };
}

std::vector<std::string> resume_conflicts(const nlohmann::json& saved,
                                          const nlohmann::json& current) {
  std::vector<std::string> out;
  const auto differs = [&](const std::string& what, const nlohmann::json& a,
                           const nlohmann::json& b) {
    if (a != b)
      out.push_back(
          fmt::format("{}: checkpoint has {}, this run has {}", what, a.dump(), b.dump()));
  };
  const auto field = [](const nlohmann::json& j, const char* key) {
    return j.contains(key) ? j.at(key) : nlohmann::json();
  };
  differs("trainer state format", field(saved, "format"), field(current, "format"));
  if (!out.empty()) return out;
  differs("trainer state version", field(saved, "version"), field(current, "version"));
  const nlohmann::json sa = field(saved, "args"), ca = field(current, "args");
  for (const char* key : {"batch_size", "max_length", "seed", "train_data_field",
                          "use_chat_template", "train_on", "pack", "skip_bad_records"}) {
    differs(fmt::format("--{}", key), field(sa, key), field(ca, key));
  }
  differs("model type", field(saved, "model_type"), field(current, "model_type"));
  differs("checkpoint item", field(saved, "item"), field(current, "item"));
  differs("trainable", field(saved, "trainable"), field(current, "trainable"));
  return out;
}

int64_t restore_training(const CheckpointReader& reader, Trainable& model, AdamW& optimizer,
                         DataLoader& loader) {
  const nlohmann::json state = reader.trainer_state();
  const std::string item = model.checkpoint_item();
  std::vector<ShardedTensor> params = sharded_tensors(model.trainable());
  read_item(reader, item, params);
  std::vector<ShardedTensor> mu = moment_tensors(model.trainable(), optimizer.mu(), "mu/");
  std::vector<ShardedTensor> nu = moment_tensors(model.trainable(), optimizer.nu(), "nu/");
  read_item(reader, "optimizer", mu);
  read_item(reader, "optimizer", nu);
  const std::string where = (reader.dir() / "trainer_state.json").string();
  const nlohmann::json& opt = json_object_at(state, "optimizer", where);
  const std::string opt_where = json_key_name(where, "optimizer");
  optimizer.set_counters(json_get<int64_t>(opt, "updates", opt_where),
                         json_get<int64_t>(opt, "consecutive_skipped", opt_where));
  loader.restore(json_object_at(state, "data", where), json_key_name(where, "data"));
  const int64_t step = json_get<int64_t>(state, "step", where);
  MAGIX_CHECK(loader.global_step() == step,
              "checkpoint {}: trainer step {} but the data position is step {}",
              reader.dir().string(), step, loader.global_step());
  return step;
}

CheckpointExtraFiles::CheckpointExtraFiles(const fs::path& checkpoint_dir,
                                           const nlohmann::json& model_config,
                                           const fs::path& tokenizer_dir,
                                           std::vector<fs::path> trainable_files, bool is_rank0) {
  if (!is_rank0) return;
  std::string templ = (checkpoint_dir / ".tmp-trainer-XXXXXX").string();
  MAGIX_CHECK(mkdtemp(templ.data()) != nullptr, "cannot create a temporary folder in {}",
              checkpoint_dir.string());
  staging_ = templ;
  const fs::path config = staging_ / "config.json";
  {
    std::ofstream out(config);
    out << model_config.dump(2) << "\n";
    MAGIX_CHECK(out.good(), "cannot write {}", config.string());
  }
  files_.push_back(config);
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "chat_template.jinja", "tokenizer.model"}) {
    if (fs::is_regular_file(tokenizer_dir / name)) files_.push_back(tokenizer_dir / name);
  }
  for (fs::path& f : trainable_files) files_.push_back(std::move(f));
}

CheckpointExtraFiles::~CheckpointExtraFiles() {
  if (staging_.empty()) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);
}

}  // namespace magix::detail
