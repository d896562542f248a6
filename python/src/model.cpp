// The "101" workflow: load_model_hub -> Model (logits, nll, generate), initialize_opt_state,
// train_step, and the random batches of examples/magix101.cpp.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <filesystem>
#include <optional>

#include "backends/backend.hpp"
#include "bindings.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"
#include "magix/generate.hpp"
#include "magix/hf_files.hpp"
#include "magix/magix.hpp"
#include "magix/model_config.hpp"
#include "magix/tokenizer.hpp"

namespace magix::python {

namespace {

namespace fs = std::filesystem;

using RuleEntries = std::vector<std::pair<std::string, std::vector<std::optional<std::string>>>>;

// None: the family's rules; a str: a JSON rules file; a list of (regex, spec) pairs.
PartitionRules make_rules(const nb::handle& given, const std::string& family) {
  if (given.is_none()) return default_partition_rules(family);
  if (nb::isinstance<nb::str>(given)) return load_partition_rules(nb::cast<std::string>(given));
  RuleEntries entries = nb::cast<RuleEntries>(given);
  std::vector<std::pair<std::string, PartitionSpec>> rules;
  for (auto& [regex, dims] : entries) {
    PartitionSpec spec;
    spec.dims = std::move(dims);
    rules.emplace_back(std::move(regex), std::move(spec));
  }
  return PartitionRules(std::move(rules));
}

PyModel load_model(const std::string& name_or_path, PyMesh mesh, nb::handle partition_rules,
                   std::optional<std::string> family, bool bf16,
                   std::optional<std::string> device) {
  PyModel out;
  out.mesh = mesh.mesh;
  DecoderOptions options;
  options.compute_dtype = bf16 ? DType::kBF16 : DType::kF32;
  options.device = use_device(device.value_or(""));  // as --device: default cuda with a GPU
  const bool step = is_checkpoint_step(name_or_path);
  const fs::path dir = step ? fs::path(name_or_path) : resolve_model_dir(name_or_path);
  const ModelConfig config = load_model_config(dir / "config.json");
  const std::string model_type(family_name(config.family));
  MAGIX_CHECK(!family || *family == model_type, "family '{}' does not match {}'s model_type '{}'",
              family.value_or(""), name_or_path, model_type);
  out.family = model_type;
  out.source = dir.string();
  out.rules = make_rules(partition_rules, model_type);
  nb::gil_scoped_release release;
  out.decoder = std::make_unique<Decoder>(
      step ? load_checkpoint_decoder(dir, *mesh.mesh, options, &out.rules)
           : load_model_hub(model_type, name_or_path, out.rules, *mesh.mesh, options));
  return out;
}

// (B, T) ids with an optional (B, T) mask (1 = real token; right padding), positions 0..T-1;
// targets: the next real token (for nll), or none (for logits).
TokenBatch make_batch(const IdArray& ids, const std::optional<IdArray>& mask, bool targets) {
  TokenBatch b;
  b.batch = static_cast<int64_t>(ids.shape(0));
  b.seq = static_cast<int64_t>(ids.shape(1));
  MAGIX_CHECK(b.batch > 0 && b.seq > 0, "ids must be a non-empty (batch, length) array");
  if (mask) {
    MAGIX_CHECK(mask->shape(0) == ids.shape(0) && mask->shape(1) == ids.shape(1),
                "attention_mask shape ({}, {}) differs from the ids' ({}, {})", mask->shape(0),
                mask->shape(1), b.batch, b.seq);
  }
  const size_t n = static_cast<size_t>(b.batch * b.seq);
  b.input_ids.assign(ids.data(), ids.data() + n);
  b.key_valid.assign(n, 1);
  if (mask) b.key_valid.assign(mask->data(), mask->data() + n);
  b.positions.resize(n);
  b.targets.assign(n, TokenBatch::kIgnore);
  for (int64_t r = 0; r < b.batch; ++r) {
    for (int64_t t = 0; t < b.seq; ++t) {
      const size_t i = static_cast<size_t>(r * b.seq + t);
      b.positions[i] = static_cast<int32_t>(t);
      if (targets && t + 1 < b.seq && b.key_valid[i + 1] != 0) b.targets[i] = b.input_ids[i + 1];
    }
  }
  return b;
}

nb::object model_logits(PyModel& m, const IdArray& ids, const std::optional<IdArray>& mask) {
  const TokenBatch batch = make_batch(ids, mask, false);
  std::vector<float> values;
  Shape shape;
  {
    nb::gil_scoped_release release;
    const Tensor logits = m.decoder->logits(batch);  // (B, T, V)
    MAGIX_CHECK(logits.dtype() == DType::kF32, "logits are not float32");
    values.assign(logits.data<float>(), logits.data<float>() + logits.numel());
    shape = logits.shape();
  }
  return nb::cast(float_array(std::move(values), std::vector<size_t>(shape.begin(), shape.end())));
}

nb::tuple model_nll(PyModel& m, const IdArray& ids, const std::optional<IdArray>& mask) {
  const TokenBatch batch = make_batch(ids, mask, true);
  LossResult res;
  {
    nb::gil_scoped_release release;
    res = m.decoder->loss(batch, static_cast<double>(std::max<int64_t>(1, batch.count_targets())));
  }
  std::vector<double> tokens(res.tokens_per_row.begin(), res.tokens_per_row.end());
  return nb::make_tuple(double_array(std::move(res.nll_per_row)), double_array(std::move(tokens)));
}

const FieldTable<GenerateOptions>& generate_option_fields() {
  static const FieldTable<GenerateOptions> table = {
      MAGIX_PY_FIELD("max_length", max_length),
      MAGIX_PY_FIELD("max_new_tokens", max_new_tokens),
      MAGIX_PY_FIELD("sample", sampling.sample),
      MAGIX_PY_FIELD("temperature", sampling.temperature),
      MAGIX_PY_FIELD("top_k", sampling.top_k),
      MAGIX_PY_FIELD("top_p", sampling.top_p),
      MAGIX_PY_FIELD("repetition_penalty", sampling.repetition_penalty),
      MAGIX_PY_FIELD("seed", sampling.seed),
      MAGIX_PY_FIELD("stop", stop),
      MAGIX_PY_FIELD("eos_ids", eos_ids),
      MAGIX_PY_FIELD("pad_to_multiple_of", pad_to_multiple_of),
  };
  return table;
}

nb::list model_generate(PyModel& m, const std::vector<std::vector<int32_t>>& prompts,
                        const Tokenizer* tokenizer, const nb::dict& kwargs) {
  GenerateOptions options;
  apply_kwargs(options, kwargs, generate_option_fields(), "Model.generate");
  check_generate_options(options, tokenizer != nullptr);
  std::vector<GenerationResult> results;
  {
    nb::gil_scoped_release release;
    Generator generator(*m.decoder, tokenizer);
    results = generator.generate(prompts, options);
  }
  nb::list out;
  for (GenerationResult& r : results) {
    nb::dict d;
    d["tokens"] = nb::cast(r.tokens);
    d["text"] = nb::cast(r.text);
    d["finish"] = nb::cast(std::string(finish_reason_name(r.finish)));
    out.append(d);
  }
  return out;
}

const FieldTable<AdamWOptions>& adamw_fields() {
  static const FieldTable<AdamWOptions> table = {
      MAGIX_PY_FIELD("weight_decay", weight_decay),
      MAGIX_PY_FIELD("adam_beta1", beta1),
      MAGIX_PY_FIELD("adam_beta2", beta2),
      MAGIX_PY_FIELD("adam_eps", eps),
      MAGIX_PY_FIELD("max_grad_norm", max_grad_norm),
  };
  return table;
}

nb::dict step_result(const TrainStepResult& r) {
  nb::dict d;
  d["loss"] = r.loss;
  d["grad_norm"] = r.grad_norm;
  d["tokens"] = r.tokens;
  d["applied"] = r.applied;
  return d;
}

}  // namespace

void bind_model(nb::module_& m) {
  nb::class_<PyModel>(m, "Model")
      .def_prop_ro("family", [](const PyModel& p) { return p.family; })
      .def_prop_ro("source", [](const PyModel& p) { return p.source; })
      .def_prop_ro("mesh", [](const PyModel& p) { return PyMesh{p.mesh}; })
      .def_prop_ro("vocab_size", [](const PyModel& p) { return p.decoder->config().vocab_size; })
      .def_prop_ro("config_json", [](const PyModel& p) { return p.decoder->config().raw.dump(); })
      .def_prop_ro("parameter_names",
                   [](const PyModel& p) {
                     std::vector<std::string> names;
                     for (const ParamInfo& info : p.decoder->params().infos()) {
                       names.push_back(info.name);
                     }
                     return names;
                   })
      .def("logits", &model_logits, nb::arg("ids"), nb::arg("attention_mask").none())
      .def("nll", &model_nll, nb::arg("ids"), nb::arg("attention_mask").none())
      .def("generate", &model_generate, nb::arg("prompts"), nb::arg("tokenizer").none(),
           nb::arg("options"));

  m.def("load_model_hub", &load_model, nb::arg("name_or_path"), nb::arg("mesh"),
        nb::arg("partition_rules").none(), nb::arg("family").none(), nb::arg("bf16"),
        nb::arg("device").none(), nb::keep_alive<0, 2>());

  nb::class_<PyOptState>(m, "OptState").def_prop_ro("updates", [](const PyOptState& o) {
    return o.adamw->updates();
  });

  m.def(
      "initialize_opt_state",
      [](PyModel& model, const nb::dict& kwargs) {
        AdamWOptions options;
        apply_kwargs(options, kwargs, adamw_fields(), "initialize_opt_state");
        PyOptState out;
        out.model = &model;
        out.adamw = std::make_unique<AdamW>(
            initialize_opt_state(options, model.decoder->params(), model.rules, *model.mesh));
        return out;
      },
      nb::arg("model"), nb::arg("options"), nb::keep_alive<0, 1>());

  m.def(
      "train_step",
      [](PyModel& model, PyOptState& opt, const IdArray& ids, const std::vector<int64_t>& lengths,
         double lr) {
        MAGIX_CHECK(opt.model == &model,
                    "train_step: the optimizer state belongs to another model");
        const TokenBatch batch = make_causal_batch(rows_of(ids, lengths));
        TrainStepResult r;
        {
          nb::gil_scoped_release release;
          r = train_step(*model.decoder, *opt.adamw, batch, lr);
        }
        return step_result(r);
      },
      nb::arg("model"), nb::arg("opt"), nb::arg("ids"), nb::arg("lengths"), nb::arg("lr"));

  m.def(
      "random_batch",
      [](int64_t vocab, int64_t rows, int64_t len, uint64_t seed, PyMesh mesh) {
        const TokenBatch b = random_causal_batch(vocab, rows, len, seed, mesh.mesh->data_rank(),
                                                 mesh.mesh->data_size());
        return std::make_pair(b.input_ids, std::vector<int64_t>{b.batch, b.seq});
      },
      nb::arg("vocab"), nb::arg("rows"), nb::arg("length"), nb::arg("seed"), nb::arg("mesh"));
}

}  // namespace magix::python
