"""GGUF fixtures for SentencePiece vocabularies (`tokenizer.ggml.model = llama`) and for the
architectures beyond llama/qwen2 (gemma, gemma2, gemma3, qwen3, phi3), with what transformers
makes of each file.

    /work/refenv/bin/python tools/reference/make_gguf_spm_fixtures.py \
        [--tokenizers ../shared/tokenizers] [--out tests/fixtures/gguf_spm]

Tokenizers (from real SentencePiece-BPE vocabularies, written the way llama.cpp's converter
writes them: tokens, scores, token types, special ids, add_bos/add_eos, add_space_prefix, no
merges and no pre-tokenizer):
  spm_llama.gguf   Mistral-7B v0.1's 32000 tokens (architecture llama), with scores recovered
                   from its tokenizer.json's merges (minus the rank of the first merge making a
                   token), so that the merges derived back from them are that file's.
  spm_gemma.gguf   Gemma 3's first 6500 tokens (architecture gemma3: specials, whitespace runs
                   -- those of spaces stored as spaces, as in Gemma files --, the 256 byte tokens,
                   the first 6000 merged pieces) and its one-character tokens of ASCII and TEXTS.
  spm_no_prefix.gguf  a cut Mistral vocabulary with add_space_prefix false (no reference: transformers
                   ignores the key).
Models (random weights, fixed seed; llama.cpp's tensor names and conventions; small SentencePiece
vocabularies cut from the two above: the first 300 (Mistral) / 500 (Gemma) ids and the
one-character tokens):
  tiny_<family>.gguf for gemma, gemma2, gemma3, qwen3, phi3, llama_yarn (a llama with YaRN
  rope scaling in its metadata: rope.scaling.type/factor/original_context_length/yarn_beta_*)
  and llama3 (Llama 3.1-style rope scaling as llama.cpp writes it: a rope_freqs.weight tensor of
  divisors, no metadata).
Writes expected.json (per file: token ids and decoded text of TEXTS; per model: the ids of two
sequences) and expected.safetensors (logits."family".i), from transformers loading the GGUF file
(AutoTokenizer / AutoModelForCausalLM with gguf_file=). transformers 5 reads no `gemma`
architecture and no llama rope scaling from GGUF: those three models' logits come from the HF
model each file was written from.
Every model's GGUF logits are also checked here against the HF model it was written from.
And refused_*.gguf: an unsupported architecture, tokenizer model, LongRoPE tensor, rope scaling
type and rope_freqs divisors that follow no Llama 3 rule, each of which magix must refuse by name.
"""
import argparse
import math
import json
import lzma
import os

import numpy as np
import torch
import gguf
from safetensors.torch import save_file

TEXTS = [
    "Hello world! The quick brown fox.",
    " one leading space",
    "   three leading spaces and trailing  ",
    "digits 12345 and 3.14159, then\nnew lines\n\n  indented\ttab",
    "caf\u00e9 \u00fcber na\u00efve \u65e5\u672c\u8a9e \U0001f642\U0001f680 \u2581literal",
    "<s>a special token</s> in the middle <unk>",
    "<start_of_turn>user\nHi there<end_of_turn>\n",
    "",
]


def load_tokenizer_json(root, name):
    with lzma.open(os.path.join(root, name, "tokenizer.json.xz"), "rt", encoding="utf-8") as f:
        return json.load(f)


def vocab_list(tokj):
    inv = {i: t for t, i in tokj["model"]["vocab"].items()}
    for a in tokj["added_tokens"]:
        inv[a["id"]] = a["content"]
    return [inv[i] for i in range(len(inv))]


def spm_types(tokens, tokj, unk):
    added = {a["id"]: a for a in tokj["added_tokens"]}
    types = []
    for i, t in enumerate(tokens):
        if t == unk:
            types.append(gguf.TokenType.UNKNOWN)
        elif i in added:
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        elif len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    return types


def add_tokenizer(w, tokens, scores, types, bos, eos, unk, pad, add_bos, add_space_prefix=True):
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_unk_token_id(unk)
    if pad is not None:
        w.add_pad_token_id(pad)
    w.add_add_bos_token(add_bos)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(add_space_prefix)


def keep(tokens, first_n):
    """Ids below first_n, then (in vocabulary order) the one-character tokens of ASCII, "\u2581"
    and the characters of TEXTS: a vocabulary cut small that still spells most of TEXTS."""
    chars = set(chr(c) for c in range(32, 127)) | {"\u2581"} | set("".join(TEXTS))
    return [i for i, t in enumerate(tokens) if i < first_n or (len(t) == 1 and t in chars)]


def llama_vocab(root, first_n=None):
    tokj = load_tokenizer_json(root, "mistral")
    tokens = vocab_list(tokj)
    types = spm_types(tokens, tokj, "<unk>")
    # Scores as SentencePiece orders them: the merges of tokenizer.json were derived from them
    # (best first), so a token's score is minus the rank of the first merge making it; tokens
    # no merge makes (single characters) rank after all; byte and special tokens score 0.
    merges = tokj["model"]["merges"]
    first = {}
    for rank, m in enumerate(merges):
        first.setdefault("".join(m.split(" ") if isinstance(m, str) else m), rank)
    scores = [0.0 if t != gguf.TokenType.NORMAL else
              float(-first.get(tok, len(merges) + i)) for i, (tok, t) in enumerate(zip(tokens, types))]
    ids = keep(tokens, first_n) if first_n else range(len(tokens))
    return [tokens[i] for i in ids], [scores[i] for i in ids], [types[i] for i in ids]


def gemma_vocab(root, first_n):
    tokj = load_tokenizer_json(root, "gemma3")
    tokens = vocab_list(tokj)
    ids = keep(tokens, first_n)
    all_types = spm_types(tokens, tokj, "<unk>")
    tokens, types = [tokens[i] for i in ids], [all_types[i] for i in ids]
    # Gemma files store runs of two or more spaces as spaces.
    tokens = [" " * len(t) if len(t) > 1 and set(t) == {"\u2581"} else t for t in tokens]
    scores = [float(-i) for i in range(len(tokens))]  # (their merge order is the position)
    return tokens, scores, types


def hyper(w, arch, hidden, inter, layers, heads, kv, head_dim, ctx=128, eps=1e-6, theta=10000.0,
          rot=None):
    w.add_context_length(ctx)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(inter)
    w.add_block_count(layers)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(rot or head_dim)
    w.add_layer_norm_rms_eps(eps)
    w.add_rope_freq_base(theta)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tokenizer_only(path, arch, name, vocab, bos, eos, unk, pad):
    tokens, scores, types = vocab
    w = gguf.GGUFWriter(path, arch)
    w.add_name(name)
    hyper(w, arch, 64, 128, 1, 4, 4, 16)
    add_tokenizer(w, tokens, scores, types, bos, eos, unk, pad, True)
    finish(w)


def token_expectations(out, fname):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(out, gguf_file=fname)
    res = []
    for text in TEXTS:
        ids = tok(text).input_ids
        res.append({"text": text, "ids": ids,
                    "decoded": tok.decode(ids, skip_special_tokens=False),
                    "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
    return res, tok


def tiny_config(family, vocab, bos, eos, pad):
    from transformers import (Gemma2Config, Gemma3TextConfig, GemmaConfig, LlamaConfig,
                              Phi3Config, Qwen3Config)
    common = dict(vocab_size=vocab, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
                  max_position_embeddings=128, rms_norm_eps=1e-6)
    if family == "gemma":
        return GemmaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, **common)
    if family == "gemma2":
        # The keys a GGUF cannot state take transformers' defaults: query_pre_attn_scalar 256
        # (= head_dim, llama.cpp's scale), layer_types alternating from a sliding layer 0.
        return Gemma2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                            num_attention_heads=1, num_key_value_heads=1, head_dim=256,
                            query_pre_attn_scalar=256, sliding_window=4,
                            attn_logit_softcapping=50.0, final_logit_softcapping=30.0, **common)
    if family == "gemma3":
        return Gemma3TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                                num_attention_heads=1, num_key_value_heads=1, head_dim=256,
                                query_pre_attn_scalar=256, sliding_window=4,
                                tie_word_embeddings=False, **common)
    if family == "qwen3":
        # (transformers reads no head_dim for qwen3 from GGUF: its default, 128)
        return Qwen3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=128,
                           tie_word_embeddings=False, rope_theta=1e6, **common)
    if family == "llama_yarn":
        return LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                           tie_word_embeddings=False,
                           rope_parameters={"rope_type": "yarn", "rope_theta": 100.0, "factor": 4.0,
                                            "original_max_position_embeddings": 32,
                                            "beta_fast": 4.0, "beta_slow": 0.5}, **common)
    if family == "llama3":
        # Llama 3.1-style RoPE scaling: two of the 16 inverse frequencies fall in the blend.
        return LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                           tie_word_embeddings=False,
                           rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                            "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 8.0,
                                            "original_max_position_embeddings": 8192}, **common)
    if family == "phi3_longrope":
        # LongRoPE (Phi-3 128k style): original context 16 of 128, 8 short and 8 long factors.
        return Phi3Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                          original_max_position_embeddings=16,
                          rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                           "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.1, 3.8],
                                           "long_factor": [1.0, 1.4, 2.2, 3.5, 5.0, 7.0, 9.5, 12.0]},
                          **dict(common, rms_norm_eps=1e-5))
    if family == "phi3_partial":
        # Phi-4-mini style: RoPE on 12 of each head's 16 dims, LongRoPE with 6 + 6 factors.
        return Phi3Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                          original_max_position_embeddings=16,
                          rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                           "partial_rotary_factor": 0.75,
                                           "short_factor": [1.0, 1.2, 1.5, 2.0, 2.6, 3.3],
                                           "long_factor": [1.0, 1.7, 3.0, 4.8, 7.5, 11.0]},
                          **dict(common, rms_norm_eps=1e-5))
    if family == "phi3":
        return Phi3Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                          original_max_position_embeddings=128, **dict(common, rms_norm_eps=1e-5))
    raise ValueError(family)


GGUF_ARCH = {"gemma": "gemma", "gemma2": "gemma2", "gemma3": "gemma3", "qwen3": "qwen3",
             "phi3": "phi3", "llama_yarn": "llama", "llama3": "llama", "phi3_longrope": "phi3",
             "phi3_partial": "phi3"}
SEEDS = {"gemma": 1, "gemma2": 2, "gemma3": 3, "qwen3": 4, "phi3": 5, "llama_yarn": 6,
         "llama3": 7, "phi3_longrope": 8, "phi3_partial": 9}
# transformers 5 reads no `gemma` architecture and no llama rope scaling from GGUF: those
# references are the HF models the files were written from.
HF_REFERENCE = {"gemma", "llama_yarn", "llama3", "phi3_longrope", "phi3_partial"}


def llama3_rope_freqs(cfg):
    """rope_freqs.weight as llama.cpp's convert_hf_to_gguf.py writes it for llama3 scaling: the
    divisor of each inverse frequency (fp32 frequencies, the rule in Python floats)."""
    rp = cfg.rope_parameters
    dim = cfg.head_dim
    freqs = 1.0 / (rp["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
    old = rp["original_max_position_embeddings"]
    out = []
    for f in freqs.tolist():
        wavelen = 2 * math.pi / f
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def permute_qk(w, heads):
    """llama.cpp's q/k row order for the llama architecture (convert_hf_to_gguf.py)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_model(out, family, vocab, ids_seqs):
    from transformers import AutoModelForCausalLM
    tokens, scores, types = vocab
    gemma = family.startswith("gemma")
    bos, eos, pad = (2, 1, 0) if gemma else (1, 2, 0 if family.startswith("phi3") else None)
    cfg = tiny_config(family, len(tokens), bos, eos, pad)
    torch.manual_seed(SEEDS[family])
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_((0.0 if gemma else 1.0) + 0.1 * torch.randn_like(p))
            else:  # matrices stored as F16: values an f16 holds
                p.copy_((0.15 * torch.randn_like(p)).half().float())
    arch = GGUF_ARCH[family]
    fname = f"tiny_{family}.gguf"
    w = gguf.GGUFWriter(os.path.join(out, fname), arch)
    w.add_name(f"tiny {family}")
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    theta = cfg.rope_parameters["rope_theta"] if family != "gemma3" else \
        cfg.rope_parameters["full_attention"]["rope_theta"]
    rot = int(hd * cfg.rope_parameters.get("partial_rotary_factor", 1.0)) \
        if family != "gemma3" else hd
    hyper(w, arch, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers,
          cfg.num_attention_heads, cfg.num_key_value_heads, hd, eps=cfg.rms_norm_eps, theta=theta,
          rot=rot)
    if family in ("gemma2", "gemma3"):
        w.add_sliding_window(cfg.sliding_window)
    if family == "gemma2":
        w.add_float32("gemma2.attn_logit_softcapping", cfg.attn_logit_softcapping)
        w.add_float32("gemma2.final_logit_softcapping", cfg.final_logit_softcapping)
    if family == "llama_yarn":
        rp = cfg.rope_parameters
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rp["factor"])
        w.add_rope_scaling_orig_ctx_len(rp["original_max_position_embeddings"])
        w.add_float32("llama.rope.scaling.yarn_beta_fast", rp["beta_fast"])
        w.add_float32("llama.rope.scaling.yarn_beta_slow", rp["beta_slow"])
    if family == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_freqs(cfg))
    if family in ("phi3_longrope", "phi3_partial"):
        # As llama.cpp's Phi-3 converter: the factors as tensors, its attention factor
        # sqrt(1 + ln(max / original) / ln original), the original context length.
        rp = cfg.rope_parameters
        orig = rp["original_max_position_embeddings"]
        scale = cfg.max_position_embeddings / orig
        w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(orig)))
        w.add_rope_scaling_orig_ctx_len(orig)
        w.add_tensor("rope_factors_long.weight", np.array(rp["long_factor"], dtype=np.float32))
        w.add_tensor("rope_factors_short.weight", np.array(rp["short_factor"], dtype=np.float32))
    add_tokenizer(w, tokens, scores, types, bos, eos, 0 if not gemma else 3, pad, True)
    tmap = gguf.get_tensor_name_map(
        next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), cfg.num_hidden_layers)
    for name, p in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        base, suffix = name.rsplit(".", 1)
        gname = tmap.get_name(base)
        assert gname is not None, name
        data = p.detach().numpy().astype(np.float32)
        if gemma and name.endswith("norm.weight"):
            data = data + 1  # llama.cpp's Gemma converters store 1 + w
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            data = permute_qk(data, cfg.num_attention_heads if "q_proj" in name
                              else cfg.num_key_value_heads)
        w.add_tensor(f"{gname}.{suffix}", data.astype(np.float16) if data.ndim == 2 else data)
    finish(w)

    from_gguf = None if family == "gemma" else \
        AutoModelForCausalLM.from_pretrained(out, gguf_file=fname, dtype=torch.float32).eval()
    logits = {}
    for i, ids in enumerate(ids_seqs):
        with torch.no_grad():
            b = model(torch.tensor([ids])).logits[0].contiguous()
            a = from_gguf(torch.tensor([ids])).logits[0].contiguous() if from_gguf else b
        diff = (a - b).abs().max().item()
        print(f"{family}: seq {i} transformers on the GGUF vs the HF model: max |diff| "
              f"{diff:.2e}, scale {b.abs().max().item():.2f}")
        assert diff < 1e-4 or family in HF_REFERENCE, family
        logits[f"logits.{family}.{i}"] = b if family in HF_REFERENCE else a
    return fname, logits


def refused(out):
    """Small files magix must refuse, each naming what it refuses."""
    toks = (["<unk>", "<s>", "</s>", "a"], [0.0, 0.0, 0.0, -1.0], [2, 3, 3, 1])

    def one(fname, arch, extra=lambda w: None, model="llama"):
        w = gguf.GGUFWriter(os.path.join(out, fname), arch)
        hyper(w, arch, 8, 16, 1, 2, 2, 4)
        add_tokenizer(w, *toks, 1, 2, 0, None, True)
        if model != "llama":
            w.add_string("tokenizer.ggml.model", model)  # (overrides: the last value counts)
        extra(w)
        finish(w)

    one("refused_arch.gguf", "mamba")
    one("refused_tokenizer.gguf", "llama", model="t5")
    one("refused_longrope.gguf", "phi3",
        lambda w: w.add_tensor("rope_factors_long.weight", np.ones(2, dtype=np.float32)))
    one("refused_rope.gguf", "llama", lambda w: w.add_string("llama.rope.scaling.type", "longrope"))
    # Divisors no Llama 3 parameters give (the high frequency divided, the low one not).
    one("refused_rope_freqs.gguf", "llama",
        lambda w: w.add_tensor("rope_freqs.weight", np.array([4.0, 1.0], dtype=np.float32)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizers", default="../shared/tokenizers")
    ap.add_argument("--out", default="tests/fixtures/gguf_spm")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    expected = {"tokenizers": {}, "models": {}}
    tensors = {}
    tokenizer_only(os.path.join(args.out, "spm_llama.gguf"), "llama", "spm llama",
                   llama_vocab(args.tokenizers), 1, 2, 0, None)
    tokenizer_only(os.path.join(args.out, "spm_gemma.gguf"), "gemma3", "spm gemma",
                   gemma_vocab(args.tokenizers, 6500), 2, 1, 3, 0)
    # add_space_prefix false (transformers ignores the key; magix follows it, as llama.cpp does).
    w = gguf.GGUFWriter(os.path.join(args.out, "spm_no_prefix.gguf"), "llama")
    hyper(w, "llama", 64, 128, 1, 4, 4, 16)
    add_tokenizer(w, *llama_vocab(args.tokenizers, 300), 1, 2, 0, None, True, False)
    finish(w)
    for fname in ["spm_llama.gguf", "spm_gemma.gguf"]:
        expected["tokenizers"][fname], _ = token_expectations(args.out, fname)
    # The published Mistral tokenizer.json on the same texts (HF `tokenizers`): its Prepend
    # normalizer differs from the Metaspace transformers builds from GGUF only on texts that
    # start with a space and on text right after a special token.
    from tokenizers import Tokenizer
    real = Tokenizer.from_str(json.dumps(load_tokenizer_json(args.tokenizers, "mistral")))
    expected["published_tokenizer_ids"] = {"spm_llama.gguf": [real.encode(t).ids for t in TEXTS]}
    rng = np.random.default_rng(20261207)
    for family in ["gemma", "gemma2", "gemma3", "qwen3", "phi3", "llama_yarn", "llama3",
                   "phi3_longrope", "phi3_partial"]:
        vocab = gemma_vocab(args.tokenizers, 500) if family.startswith("gemma") else \
            llama_vocab(args.tokenizers, 300)
        n = len(vocab[0])
        long_seq = family.startswith("llama") or family in ("phi3_longrope", "phi3_partial")
        seqs = [rng.integers(0, n, 12 if not long_seq else 48).tolist(),
                rng.integers(0, n, 7).tolist()]
        fname, logits = tiny_model(args.out, family, vocab, seqs)
        tensors.update(logits)
        expected["models"][family] = {"file": fname, "ids": seqs}
        if family not in HF_REFERENCE:  # (AutoTokenizer reads the architecture first)
            expected["tokenizers"][fname], _ = token_expectations(args.out, fname)
    refused(args.out)
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
    save_file(tensors, os.path.join(args.out, "expected.safetensors"))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
