"""magix from Python: the reference toolkit's workflow over magix's C++ core.

    import magix
    mesh = magix.create_device_mesh((-1, 1), names=("data", "model"))
    model = magix.load_model_hub("path/or/hub-name", mesh=mesh)
    opt = magix.initialize_opt_state(model, weight_decay=0.01)
    result = magix.train_step(model, opt, ids, lr=1e-3)   # ids: (B, T) NumPy ints
    magix.train(model_name="...", train_data=[{"text": "..."}], max_steps=10)

NumPy arrays at the boundary; keyword names are the CLI's flag names (docs/api.md); magix's
errors are `magix.MagixError` (a RuntimeError) with the C++ message. Every compute call
releases the GIL. Under `mpirun -np N python script.py` a mesh spans the N ranks exactly as the
CLI's does; a lone process needs no launcher.
"""

import atexit as _atexit
import contextlib as _contextlib
import json as _json
import os as _os
import sys as _sys
import tempfile as _tempfile

import numpy as _np

from . import _magix
from ._magix import MagixError, Mesh, OptState, Tokenizer

__all__ = [
    "MagixError", "Mesh", "Model", "OptState", "Tokenizer", "create_device_mesh", "export",
    "generate", "initialize_opt_state", "load_model_hub", "random_batch", "score", "train",
    "train_lora", "train_step",
]

Model = _magix.Model

# MPI is finalised at exit (no mesh may be used after).
_atexit.register(_magix.finalize)


def _abort_on_uncaught(exc_type, exc, tb):
    """Under mpirun, an uncaught exception on one rank stops every rank (no peer is left
    waiting in a collective), after the usual traceback."""
    _sys.__excepthook__(exc_type, exc, tb)
    _sys.stderr.flush()
    _magix.abort(f"{exc_type.__name__}: {exc}", 1)


if _magix.launched_by_mpi() and int(_os.environ.get("OMPI_COMM_WORLD_SIZE",
                                                    _os.environ.get("PMI_SIZE", "1"))) > 1:
    _sys.excepthook = _abort_on_uncaught


def create_device_mesh(shape, names=("data", "model")):
    """The world's ranks in a (data, model) grid, model axis fastest; one entry may be -1.
    Started alone, the world is this process; under mpirun, all of its ranks."""
    return _magix.create_device_mesh([int(s) for s in shape], list(names))


def load_model_hub(name_or_path, mesh=None, partition_rules=None, family=None, bf16=False,
                   revision=None, device=None):
    """An HF folder, a hub name in the local HF cache, or a magix checkpoint step, loaded onto
    `mesh` (default: all ranks on the data axis). partition_rules: None (the family's rules),
    a JSON rules file, or a list of (regex, spec) pairs such as
    ("mlp/down_proj", ("model", "data")). family: checked against config.json's model_type.
    revision: of a hub name (a branch, tag or commit; default refs/main). device: "cpu" or
    "cuda" (as --device; default: cuda when this build has it and a GPU is visible, else cpu)."""
    if mesh is None:
        mesh = create_device_mesh((-1, 1))
    if partition_rules is not None and not isinstance(partition_rules, (str, _os.PathLike)):
        partition_rules = [(str(r), tuple(spec)) for r, spec in partition_rules]
    elif partition_rules is not None:
        partition_rules = _os.fspath(partition_rules)
    with _revision(revision):
        return _magix.load_model_hub(_os.fspath(name_or_path), mesh, partition_rules, family,
                                     bool(bf16), device)


def _ids(array, name="ids"):
    a = _np.asarray(array)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or not (a.dtype.kind in "iu" or a.size == 0):
        raise TypeError(f"{name} must be a 2-D array of integers (batch, length), "
                        f"got shape {a.shape} of {a.dtype}")
    return _np.ascontiguousarray(a, dtype=_np.int32)


def _logits(self, ids, attention_mask=None):
    """Full-vocabulary logits, float32 (B, T, V), of this data rank's rows `ids` (B, T)
    (right-padded rows: attention_mask 1 on real tokens; positions are 0..T-1)."""
    mask = None if attention_mask is None else _ids(attention_mask, "attention_mask")
    return self._logits(_ids(ids), mask)


def _nll(self, ids, attention_mask=None, return_tokens=False):
    """Per-sequence negative log-likelihood (sum over its predicted tokens), float64 (B,): token
    t + 1 predicted from tokens 0..t, where the mask is 1. return_tokens: also the counts."""
    mask = None if attention_mask is None else _ids(attention_mask, "attention_mask")
    nll, tokens = self._nll(_ids(ids), mask)
    return (nll, tokens.astype(_np.int64)) if return_tokens else nll


def _generate(self, prompts, tokenizer=None, **options):
    """Continuations of `prompts` (lists of token ids, or strings with a `tokenizer`), greedy
    unless sample=True. Options are `magix generate`'s: max_length, max_new_tokens, sample,
    temperature, top_k, top_p, repetition_penalty, seed, stop, eos_ids, pad_to_multiple_of.
    Returns one dict per prompt: tokens, text (with a tokenizer) and finish (eos/stop/length)."""
    rows = []
    for p in prompts:
        if isinstance(p, str):
            if tokenizer is None:
                raise TypeError("text prompts need a tokenizer (tokenizer=magix.Tokenizer...)")
            rows.append(tokenizer.encode(p))
        else:
            rows.append([int(t) for t in p])
    return self._generate(rows, tokenizer, options)


# The Python-level methods of Model (NumPy conversion) over the extension's.
Model._logits, Model.logits = Model.logits, _logits
Model._nll, Model.nll = Model.nll, _nll
Model._generate, Model.generate = Model.generate, _generate


def initialize_opt_state(model, **options):
    """AdamW state sharded like the model's parameters (by the rules it was loaded with).
    Options are `magix train`'s: weight_decay, adam_beta1, adam_beta2, adam_eps,
    max_grad_norm."""
    return _magix.initialize_opt_state(model, options)


def train_step(model, opt, batch, lr):
    """One optimizer step on `batch`: this data rank's rows, a (B, T) int array or a list of
    token-id lists (right-padded; each row predicts its own next tokens). Returns a dict with
    loss (mean NLL over the global batch), grad_norm (before clipping), tokens and applied."""
    if isinstance(batch, (list, tuple)) and batch and not _np.isscalar(batch[0]):
        rows = [_np.asarray(r, dtype=_np.int64).ravel() for r in batch]
        lengths = [len(r) for r in rows]
        ids = _np.zeros((len(rows), max(lengths)), dtype=_np.int32)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
        return _magix.train_step(model, opt, ids, lengths, float(lr))
    return _magix.train_step(model, opt, _ids(batch, "batch"), [], float(lr))


def random_batch(vocab, rows, length, seed, mesh):
    """This data rank's rows of a global batch of random tokens, (rows / D, length) int32: the
    batches of examples/magix101.cpp (magix::random_causal_batch)."""
    ids, shape = _magix.random_batch(int(vocab), int(rows), int(length), int(seed), mesh)
    return _np.asarray(ids, dtype=_np.int32).reshape(shape)


def _write_jsonl(records, what, field=None):
    """Streams an iterable of records to a temporary JSONL file, in order; returns its path.
    Dicts are written as they are; with `field`, a plain string becomes {field: string}."""
    fd, path = _tempfile.mkstemp(prefix=f"magix-{what}-", suffix=".jsonl")
    try:
        with _os.fdopen(fd, "w", encoding="utf-8") as f:
            for i, record in enumerate(records):
                if field is not None and isinstance(record, str):
                    record = {field: record}
                if not hasattr(record, "keys"):
                    raise TypeError(f"{what}: record {i} is a {type(record).__name__}, "
                                    "not a dict")
                f.write(_json.dumps(dict(record), ensure_ascii=False))
                f.write("\n")
    except BaseException:
        _os.unlink(path)
        raise
    return path


@_contextlib.contextmanager
def _revision(revision, dataset_revision=None):
    """The revision of hub names in the local HF cache for one call (the CLI's --revision: a
    branch or tag, or a commit hash; None: refs/main), and of dataset hub names (the CLI's
    --dataset_revision)."""
    if revision is None and dataset_revision is None:
        yield
        return
    before = (_magix.hub_revision(), _magix.dataset_revision())
    try:
        if revision is not None:
            _magix.set_hub_revision(str(revision))
        if dataset_revision is not None:
            _magix.set_dataset_revision(str(dataset_revision))
        yield
    finally:
        _magix.set_hub_revision(before[0])
        _magix.set_dataset_revision(before[1])


def _flags(given, allowed, function):
    for key in given:
        if key not in allowed and key not in ("revision", "dataset_revision"):
            raise TypeError(f"magix.{function}() got an unexpected keyword argument '{key}'")


def _paths(kwargs, keys):
    for key in keys:
        if key in kwargs and isinstance(kwargs[key], _os.PathLike):
            kwargs[key] = _os.fspath(kwargs[key])
    if "mesh_shape" in kwargs:
        kwargs["mesh_shape"] = [int(s) for s in kwargs["mesh_shape"]]
    return kwargs


def train(train_data=None, **flags):
    """`magix train` as a call: each keyword is a flag of the command (model_name or
    model_config, train_file, max_length, batch_size, learning_rate, ...; see
    `magix train --help`). train_data: instead of train_file, any iterable of dicts (a list, a
    generator, a datasets.Dataset), each a record as a .jsonl line holds it ({"text": ...} or
    {"messages": [...]}, the field named by train_data_field); it is streamed in order to a
    temporary JSONL file that the run reads, so it trains exactly as that file would.
    Returns the run's summary (start_step, end_step, total_steps, losses, first_loss,
    last_loss, tokens, tokens_per_s, seconds, evals (step, eval_loss, eval_perplexity,
    eval_tokens, eval_examples per evaluation of eval_file), eval_loss (the last, or None),
    last_checkpoint, resumed_from).
    Ctrl-C stops after the step in flight (with a checkpoint of it when there is a
    checkpoint_dir) and raises KeyboardInterrupt."""
    return _train_call("train", _magix.train_flags(), _magix.train, train_data, flags)


def train_lora(train_data=None, **flags):
    """`magix train-lora` as a call: train's keywords (and train_data) plus the adapters' flags
    (lora_rank, lora_alpha, lora_targets, lora_dropout, use_rslora, lora_init); the base model
    stays frozen and the checkpoints hold the adapters. Returns what train returns."""
    return _train_call("train_lora", _magix.train_lora_flags(), _magix.train_lora, train_data,
                       flags)


def _train_call(function, allowed, run, train_data, flags):
    _flags(flags, allowed, function)
    flags = _paths(dict(flags), ["model_name", "model_config", "model_cache_dir",
                                 "tokenizer_name", "train_file", "eval_file", "checkpoint_dir",
                                 "metrics_file", "partition_rules", "logging_dir", "lora_init"])
    revision = (flags.pop("revision", None), flags.pop("dataset_revision", None))
    if train_data is None:
        with _revision(*revision):
            return run(flags)
    if "train_file" in flags:
        raise TypeError(f"magix.{function}(): pass train_data or train_file, not both")
    path = _write_jsonl(train_data, "train_data")
    try:
        with _revision(*revision):
            return run(dict(flags, train_file=path))
    finally:
        _os.unlink(path)


def generate(prompts, **flags):
    """`magix generate` as a call (keywords: its flags). prompts: a .txt/.jsonl/.json file, or
    any iterable of strings or dicts (the data_field of each, "prompt" by default), streamed to
    a temporary JSONL file. Results go to output_file as the command writes them; returns
    prompts, generated_tokens, seconds and output_file."""
    _flags(flags, _magix.generate_flags(), "generate")
    flags = _paths(dict(flags), ["model_name_or_path", "tokenizer_name_or_path",
                                 "model_config_name", "output_file", "lora"])
    revision = (flags.pop("revision", None), flags.pop("dataset_revision", None))
    if isinstance(prompts, (str, _os.PathLike)):
        with _revision(*revision):
            return _magix.generate(dict(flags, prompts=_os.fspath(prompts)))
    path = _write_jsonl(prompts, "prompts", field=flags.get("data_field", "prompt"))
    try:
        with _revision(*revision):
            return _magix.generate(dict(flags, prompts=path))
    finally:
        _os.unlink(path)


def score(**flags):
    """`magix score` as a call (keywords: its flags; input: a JSONL of {"input_ids": [...]},
    or records whose data_field is text, or conversations with use_chat_template and
    train_on). Writes output_file when given; returns examples,
    tokens, mean_nll, perplexity and scores (index, tokens, nll, mean_nll, ppl per example)."""
    _flags(flags, _magix.score_flags(), "score")
    flags = _paths(dict(flags), ["model_name_or_path", "input", "output_file",
                                 "tokenizer_name_or_path", "partition_rules"])
    with _revision(flags.pop("revision", None), flags.pop("dataset_revision", None)):
        return _magix.score(flags)


def export(**flags):
    """`magix export` as a call (keywords: checkpoint, output_dir, dtype, max_shard_size,
    overwrite, lora_format, base_model, format, outtype): a checkpoint step as a Hugging Face
    folder, or with format="gguf" as one GGUF file (outtype f32, f16, bf16 or q8_0; the result's
    output_file names it)."""
    _flags(flags, _magix.export_flags(), "export")
    flags = _paths(dict(flags), ["checkpoint", "output_dir", "base_model"])
    with _revision(flags.pop("revision", None)):
        return _magix.export(flags)


def _apply_chat_template(self, messages, add_generation_prompt=False, chat_template=None,
                         **extra):
    """The conversation rendered as transformers' apply_chat_template(tokenize=False) renders
    it with this tokenizer's template (a MagixError when it has none, as transformers raises;
    chat_template="builtin": the reference scripts' built-in format); extra keywords are
    template variables."""
    return self._apply_chat_template(_json.dumps(list(messages)), bool(add_generation_prompt),
                                     _json.dumps(extra), chat_template)


Tokenizer.apply_chat_template = _apply_chat_template
_tokenizer_load = Tokenizer.from_pretrained
Tokenizer.from_pretrained = staticmethod(
    lambda name_or_path: _tokenizer_load(_os.fspath(name_or_path)))
Tokenizer.from_pretrained.__doc__ = "A tokenizer folder (tokenizer.json, tokenizer_config.json) " \
    "or a hub name in the local HF cache."
