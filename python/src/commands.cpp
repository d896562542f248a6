// magix.train / train_lora / generate / score / export: the CLI's commands as calls whose keyword
// names are the commands' flag names (src/cli/*.cpp), returning what the command prints as a dict.
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>
#include <stdlib.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>

#include "bindings.hpp"
#include "magix/checkpoint.hpp"
#include "magix/dataset.hpp"
#include "magix/error.hpp"
#include "magix/evaluate.hpp"
#include "magix/generate.hpp"
#include "magix/gguf_export.hpp"
#include "magix/hf_files.hpp"
#include "magix/lora.hpp"
#include "magix/trainer.hpp"

namespace magix::python {

namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// train

const FieldTable<TrainArgs>& train_fields() {
  static const FieldTable<TrainArgs> table = {
      MAGIX_PY_FIELD("model_type", model_type),
      MAGIX_PY_FIELD("model_name", model_name),
      MAGIX_PY_FIELD("model_config", model_config),
      MAGIX_PY_FIELD("model_cache_dir", model_cache_dir),
      MAGIX_PY_FIELD("tokenizer_name", tokenizer_name),
      MAGIX_PY_FIELD("bf16_model_weights", bf16_model_weights),
      MAGIX_PY_FIELD("bf16", bf16),
      MAGIX_PY_FIELD("recompute", recompute),
      MAGIX_PY_FIELD("device", device),
      MAGIX_PY_FIELD("overlap_comm", overlap_comm),
      MAGIX_PY_FIELD("train_file", train_file),
      MAGIX_PY_FIELD("train_data_config", train_data_config),
      MAGIX_PY_FIELD("train_data_field", train_data_field),
      MAGIX_PY_FIELD("split", split),
      MAGIX_PY_FIELD("use_chat_template", use_chat_template),
      MAGIX_PY_FIELD("chat_template_name", chat_template_name),
      MAGIX_PY_FIELD("train_on", train_on),
      MAGIX_PY_FIELD("pack", pack),
      MAGIX_PY_FIELD("skip_bad_records", skip_bad_records),
      MAGIX_PY_FIELD("max_length", max_length),
      MAGIX_PY_FIELD("eval_file", eval_file),
      MAGIX_PY_FIELD("eval_split", eval_split),
      MAGIX_PY_FIELD("eval_data_field", eval_data_field),
      MAGIX_PY_FIELD("eval_steps", eval_steps),
      MAGIX_PY_FIELD("per_device_eval_batch_size", per_device_eval_batch_size),
      MAGIX_PY_FIELD("num_epochs", num_epochs),
      MAGIX_PY_FIELD("max_steps", max_steps),
      MAGIX_PY_FIELD("batch_size", batch_size),
      MAGIX_PY_FIELD("gradient_accumulation_steps", gradient_accumulation_steps),
      MAGIX_PY_FIELD("learning_rate", learning_rate),
      MAGIX_PY_FIELD("lr_schedule", lr_schedule),
      MAGIX_PY_FIELD("warmup_ratio", warmup_ratio),
      MAGIX_PY_FIELD("lr_decay_ratio", lr_decay_ratio),
      MAGIX_PY_FIELD("weight_decay", weight_decay),
      MAGIX_PY_FIELD("adam_beta1", adam_beta1),
      MAGIX_PY_FIELD("adam_beta2", adam_beta2),
      MAGIX_PY_FIELD("adam_eps", adam_eps),
      MAGIX_PY_FIELD("max_grad_norm", max_grad_norm),
      MAGIX_PY_FIELD("checkpoint_dir", checkpoint_dir),
      MAGIX_PY_FIELD("save_steps", save_steps),
      MAGIX_PY_FIELD("max_to_keep", max_to_keep),
      MAGIX_PY_FIELD("async_save", async_save),
      MAGIX_PY_FIELD("log_steps", log_steps),
      MAGIX_PY_FIELD("metrics_file", metrics_file),
      MAGIX_PY_FIELD("progress", progress),
      MAGIX_PY_FIELD("report_to", report_to),
      MAGIX_PY_FIELD("logging_dir", logging_dir),
      MAGIX_PY_FIELD("seed", seed),
      MAGIX_PY_FIELD("mesh_shape", mesh_shape),
      MAGIX_PY_FIELD("partition_rules", partition_rules),
  };
  return table;
}

// train_lora's keywords: train's, then the adapters' (the flags of `magix train-lora`).
struct TrainLoraArgs {
  TrainArgs train;
  LoraConfig lora;
  std::string lora_init;
};

const FieldTable<TrainLoraArgs>& train_lora_fields() {
  static const FieldTable<TrainLoraArgs> table = [] {
    FieldTable<TrainLoraArgs> t;
    for (const auto& [name, set] : train_fields()) {
      t.emplace_back(name, [set](TrainLoraArgs& a, nb::handle v) { set(a.train, v); });
    }
    const FieldTable<TrainLoraArgs> lora = {
        MAGIX_PY_FIELD("lora_rank", lora.rank),       MAGIX_PY_FIELD("lora_alpha", lora.alpha),
        MAGIX_PY_FIELD("lora_targets", lora.targets), MAGIX_PY_FIELD("lora_dropout", lora.dropout),
        MAGIX_PY_FIELD("use_rslora", lora.rslora),    MAGIX_PY_FIELD("lora_init", lora_init),
    };
    t.insert(t.end(), lora.begin(), lora.end());
    return t;
  }();
  return table;
}

// Ctrl-C during training: Python's handler only sets a flag while the GIL is released, so the
// trainer's should_stop hook runs the pending handlers after each step; a KeyboardInterrupt
// stops the run there (after a checkpoint of that step when there is a checkpoint_dir, as the
// trainer's stop does) and is raised when run_training has returned. make_model builds the
// trainable (the full model, or the adapters on the frozen one) on the mesh.
nb::dict run_training_call(
    TrainArgs& a, const std::function<std::unique_ptr<Trainable>(const Mesh&)>& make_model) {
  validate_train_args(a);
  {  // before the model loads: the data source opens and its first record reads
    ReadOptions read;
    read.field = a.train_data_field;
    read.config = a.train_data_config;
    read.split = a.split;
    read.skip_bad_records = a.skip_bad_records;
    Record first;
    open_records(a.train_file, read)->next(first);
  }
  if (!a.model_cache_dir.empty()) setenv("HF_HUB_CACHE", a.model_cache_dir.c_str(), 1);
  MAGIX_CHECK(a.eval_file.empty() || fs::is_regular_file(a.eval_file),
              "eval_file '{}' does not exist or is not a regular file", a.eval_file);
  Mesh& mesh = mesh_for(a.mesh_shape);
  if (const std::string w = unsaved_run_warning(a); !w.empty() && mesh.world_rank() == 0) {
    std::fprintf(stderr, "%s\n", w.c_str());
  }
  bool interrupted = false;
  TrainHooks hooks;
  hooks.should_stop = [&interrupted](const StepMetrics&) {
    nb::gil_scoped_acquire acquire;
    if (PyErr_CheckSignals() != 0) {
      PyErr_Clear();
      interrupted = true;
    }
    return interrupted;
  };
  TrainSummary s;
  {
    nb::gil_scoped_release release;
    std::unique_ptr<Trainable> model = make_model(mesh);
    s = run_training(a, mesh, *model, hooks);
  }
  if (interrupted) {
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw nb::python_error();
  }
  nb::dict d;
  d["start_step"] = s.start_step;
  d["end_step"] = s.end_step;
  d["total_steps"] = s.total_steps;
  d["steps_per_epoch"] = s.steps_per_epoch;
  d["skipped_steps"] = s.skipped_steps;
  d["losses"] = nb::cast(s.losses);
  d["first_loss"] = s.first_loss;
  d["last_loss"] = s.last_loss;
  d["tokens"] = s.tokens;
  d["tokens_per_s"] = s.tokens_per_s;
  d["seconds"] = s.seconds;
  nb::list evals;
  for (const EvalMetrics& e : s.evals) {
    nb::dict ed;
    ed["step"] = e.step;
    ed["eval_loss"] = e.loss;
    ed["eval_perplexity"] = e.perplexity;
    ed["eval_tokens"] = e.tokens;
    ed["eval_examples"] = e.examples;
    evals.append(ed);
  }
  d["evals"] = evals;
  d["eval_loss"] = s.evals.empty() ? nb::none() : nb::cast(s.evals.back().loss);
  d["last_checkpoint"] = s.last_checkpoint;
  d["resumed_from"] = s.resumed_from ? nb::cast(*s.resumed_from) : nb::none();
  return d;
}

nb::dict run_train(const nb::dict& kwargs) {
  TrainArgs a;
  apply_kwargs(a, kwargs, train_fields(), "train");
  return run_training_call(a, [&a](const Mesh& mesh) { return make_full_trainable(a, mesh); });
}

nb::dict run_train_lora(const nb::dict& kwargs) {
  TrainLoraArgs a;
  apply_kwargs(a, kwargs, train_lora_fields(), "train_lora");
  MAGIX_CHECK(a.lora_init.empty() || fs::exists(a.lora_init), "lora_init '{}' does not exist",
              a.lora_init);
  return run_training_call(a.train, [&a](const Mesh& mesh) -> std::unique_ptr<Trainable> {
    return make_lora_trainable(a.train, a.lora, mesh, a.lora_init);
  });
}

// ---------------------------------------------------------------------------------------------
// generate

const FieldTable<GenerateArgs>& generate_fields() {
  static const FieldTable<GenerateArgs> table = {
      MAGIX_PY_FIELD("prompts", prompts),
      MAGIX_PY_FIELD("data_field", data_field),
      MAGIX_PY_FIELD("hf_data_config", hf_data_config),
      MAGIX_PY_FIELD("hf_data_split", hf_data_split),
      MAGIX_PY_FIELD("skip_bad_records", skip_bad_records),
      MAGIX_PY_FIELD("use_chat_template", use_chat_template),
      MAGIX_PY_FIELD("chat_template_name", chat_template_name),
      MAGIX_PY_FIELD("output_file", output_file),
      MAGIX_PY_FIELD("batch_size", batch_size),
      MAGIX_PY_FIELD("pad_to_multiple_of", pad_to_multiple_of),
      MAGIX_PY_FIELD("sample", generation.sampling.sample),
      MAGIX_PY_FIELD("temperature", generation.sampling.temperature),
      MAGIX_PY_FIELD("top_k", generation.sampling.top_k),
      MAGIX_PY_FIELD("top_p", generation.sampling.top_p),
      MAGIX_PY_FIELD("repetition_penalty", generation.sampling.repetition_penalty),
      MAGIX_PY_FIELD("seed", generation.sampling.seed),
      MAGIX_PY_FIELD("max_length", generation.max_length),
      MAGIX_PY_FIELD("max_new_tokens", generation.max_new_tokens),
      MAGIX_PY_FIELD("stop", generation.stop),
      MAGIX_PY_FIELD("model_type", model_type),
      MAGIX_PY_FIELD("model_name_or_path", model_name_or_path),
      MAGIX_PY_FIELD("model_config_name", model_config_name),
      MAGIX_PY_FIELD("tokenizer_name_or_path", tokenizer_name_or_path),
      MAGIX_PY_FIELD("mesh_shape", mesh_shape),
      MAGIX_PY_FIELD("lora", lora),
      MAGIX_PY_FIELD("lora_alpha", lora_alpha),
      MAGIX_PY_FIELD("bf16", bf16),
      MAGIX_PY_FIELD("device", device),
      MAGIX_PY_FIELD("progress", progress),
  };
  return table;
}

nb::dict run_generate(const nb::dict& kwargs) {
  GenerateArgs a;
  apply_kwargs(a, kwargs, generate_fields(), "generate");
  for (auto [key, value] : kwargs) a.given.push_back(nb::cast<std::string>(key));
  MAGIX_CHECK(!a.prompts.empty(), "generate: prompts is required");
  MAGIX_CHECK(!a.model_name_or_path.empty(), "generate: model_name_or_path is required");
  Mesh& mesh = mesh_for(a.mesh_shape);
  GenerationSummary s;
  {
    nb::gil_scoped_release release;
    s = run_generation(a, mesh);
  }
  nb::dict d;
  d["prompts"] = s.prompts;
  d["generated_tokens"] = s.generated_tokens;
  d["seconds"] = s.seconds;
  d["output_file"] = a.output_file;
  return d;
}

// ---------------------------------------------------------------------------------------------
// score (the loop of `magix score`, src/cli/score.cpp)

const FieldTable<ScoreArgs>& score_fields() {
  static const FieldTable<ScoreArgs> table = {
      MAGIX_PY_FIELD("model_name_or_path", model_name_or_path),
      MAGIX_PY_FIELD("input", input),
      MAGIX_PY_FIELD("output_file", output_file),
      MAGIX_PY_FIELD("batch_size", batch_size),
      MAGIX_PY_FIELD("data_field", data_field),
      MAGIX_PY_FIELD("tokenizer_name_or_path", tokenizer_name_or_path),
      MAGIX_PY_FIELD("add_special_tokens", add_special_tokens),
      MAGIX_PY_FIELD("use_chat_template", use_chat_template),
      MAGIX_PY_FIELD("chat_template_name", chat_template_name),
      MAGIX_PY_FIELD("train_on", train_on),
      MAGIX_PY_FIELD("mesh_shape", mesh_shape),
      MAGIX_PY_FIELD("partition_rules", partition_rules),
      MAGIX_PY_FIELD("bf16", bf16),
      MAGIX_PY_FIELD("device", device),
  };
  return table;
}

nb::dict run_score(const nb::dict& kwargs) {
  ScoreArgs a;
  apply_kwargs(a, kwargs, score_fields(), "score");
  validate_score_args(a);
  Mesh& mesh = mesh_for(a.mesh_shape);
  EvalResult res;
  {
    nb::gil_scoped_release release;
    res = run_scoring(a, mesh);
  }
  nb::list scores;
  std::string text;
  for (size_t i = 0; i < res.nll_per_example.size(); ++i) {
    const double nll = res.nll_per_example[i];
    const int64_t tokens = res.tokens_per_example[i];
    const double mean = nll / static_cast<double>(tokens);
    const nlohmann::json line{{"index", i},
                              {"tokens", tokens},
                              {"nll", nll},
                              {"mean_nll", mean},
                              {"ppl", std::exp(mean)}};
    text += line.dump() + "\n";
    nb::dict d;
    d["index"] = i;
    d["tokens"] = tokens;
    d["nll"] = nll;
    d["mean_nll"] = mean;
    d["ppl"] = std::exp(mean);
    scores.append(d);
  }
  if (!a.output_file.empty() && mesh.world_rank() == 0) {
    const std::string tmp = a.output_file + ".partial";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      MAGIX_CHECK(out.good(), "cannot write '{}'", tmp);
      out << text;
      MAGIX_CHECK(out.good(), "cannot write '{}'", tmp);
    }
    fs::rename(tmp, a.output_file);
  }
  nb::dict d;
  d["examples"] = static_cast<int64_t>(res.nll_per_example.size());
  d["tokens"] = res.tokens;
  d["mean_nll"] = res.mean_nll();
  d["perplexity"] = std::exp(res.mean_nll());
  d["scores"] = scores;
  return d;
}

// ---------------------------------------------------------------------------------------------
// export (src/cli/export.cpp)

struct ExportArgs {
  std::string checkpoint;
  std::string output_dir;
  std::string dtype = "float32";
  std::string max_shard_size = "5GB";
  bool overwrite = false;
  std::string lora_format = "merged";
  std::string base_model;
  std::string format = "hf";
  std::string outtype = "f16";
};

const FieldTable<ExportArgs>& export_fields() {
  static const FieldTable<ExportArgs> table = {
      MAGIX_PY_FIELD("checkpoint", checkpoint), MAGIX_PY_FIELD("output_dir", output_dir),
      MAGIX_PY_FIELD("dtype", dtype),           MAGIX_PY_FIELD("max_shard_size", max_shard_size),
      MAGIX_PY_FIELD("overwrite", overwrite),   MAGIX_PY_FIELD("lora_format", lora_format),
      MAGIX_PY_FIELD("base_model", base_model), MAGIX_PY_FIELD("format", format),
      MAGIX_PY_FIELD("outtype", outtype),
  };
  return table;
}

nb::dict run_export(const nb::dict& kwargs) {
  ExportArgs a;
  apply_kwargs(a, kwargs, export_fields(), "export");
  Mesh& world = mesh_for({-1, 1});
  MAGIX_CHECK(world.world_size() == 1, "magix.export runs as one process (not under mpirun)");
  MAGIX_CHECK(is_checkpoint_step(a.checkpoint),
              "checkpoint {} is not a committed checkpoint step (a folder such as "
              "CHECKPOINT_DIR/000200 holding index.json)",
              a.checkpoint);
  MAGIX_CHECK(!a.output_dir.empty(), "export: output_dir is required");
  MAGIX_CHECK(a.dtype == "float32" || a.dtype == "bfloat16",
              "dtype must be float32 or bfloat16, got '{}'", a.dtype);
  MAGIX_CHECK(a.lora_format == "merged" || a.lora_format == "peft",
              "lora_format must be merged or peft, got '{}'", a.lora_format);
  HfExportOptions options;
  options.dtype = a.dtype == "float32" ? DType::kF32 : DType::kBF16;
  options.max_shard_bytes = parse_max_shard_size(a.max_shard_size);
  options.overwrite = a.overwrite;
  MAGIX_CHECK(a.format == "hf" || a.format == "gguf", "format must be hf or gguf, got '{}'",
              a.format);
  nb::dict d;
  d["output_dir"] = a.output_dir;
  if (a.format == "gguf") {
    fs::path out;
    {
      nb::gil_scoped_release release;
      out =
          export_checkpoint_gguf(a.checkpoint, a.output_dir, a.outtype, a.base_model, a.overwrite);
    }
    d["output_file"] = out.string();
    return d;
  }
  nb::gil_scoped_release release;
  if (a.lora_format == "peft") {
    MAGIX_CHECK(is_lora_checkpoint(a.checkpoint), "lora_format peft: {} holds no LoRA adapters",
                a.checkpoint);
    export_lora_peft(a.checkpoint, a.output_dir, a.base_model, options.dtype);
    return d;
  }
  ModelConfig config;
  const ParameterSet params =
      is_lora_checkpoint(a.checkpoint)
          ? load_lora_merged_parameters(a.checkpoint, a.base_model, std::nullopt, &config)
          : load_checkpoint_parameters(a.checkpoint, &config);
  const CheckpointReader reader(a.checkpoint);
  std::vector<fs::path> files;
  for (const std::string& name : reader.extra_files()) {
    if (name != "config.json") files.push_back(reader.checked_file(name));
  }
  write_hf_folder(a.output_dir, reader.checked_file("config.json"), files, params, options);
  return d;
}

}  // namespace

void bind_commands(nb::module_& m) {
  m.def("train", &run_train, nb::arg("kwargs"));
  m.def("train_lora", &run_train_lora, nb::arg("kwargs"));
  m.def("generate", &run_generate, nb::arg("kwargs"));
  m.def("score", &run_score, nb::arg("kwargs"));
  m.def("export", &run_export, nb::arg("kwargs"));
  m.def("set_hub_revision", &set_hub_revision, nb::arg("revision"));
  m.def("hub_revision", &hub_revision);
  m.def("set_dataset_revision", &set_dataset_revision, nb::arg("revision"));
  m.def("dataset_revision", &dataset_revision);
  m.def("train_flags", [] { return field_names(train_fields()); });
  m.def("train_lora_flags", [] { return field_names(train_lora_fields()); });
  m.def("generate_flags", [] { return field_names(generate_fields()); });
  m.def("score_flags", [] { return field_names(score_fields()); });
  m.def("export_flags", [] { return field_names(export_fields()); });
}

}  // namespace magix::python
