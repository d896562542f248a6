#!/usr/bin/env python3
"""Write the golden decoder fixtures under tests/fixtures/models/<case>/.

Each case is a tiny random Hugging Face model (transformers' own classes, fp32, CPU, eager
attention) saved as a normal HF folder (config.json, model.safetensors, generation_config.json)
plus reference outputs of one forward/backward pass:

  reference.safetensors
    input_ids          I64 (B, T)   row 0 full length, row 1 right-padded
    attention_mask     I64 (B, T)   1 = real token, 0 = padding
    labels             I64 (B, T)   input_ids with -100 at padding
    logits             F32 (B, T, V) model(input_ids, attention_mask=attention_mask).logits
    loss               F32 []        HF causal-LM loss (mean over counted shifted targets)
    nll_per_example    F32 (B)       sum over the row's counted targets of -log p (float64 math)
    tokens_per_example I64 (B)       number of counted targets in the row
    grad.<param name>  F32           d loss / d param for every model.named_parameters()
  reference.json       case metadata (versions, loss, tied, notes)

For the case llama_gqa it also writes score_input.jsonl / score_expected.jsonl (per-sequence
negative log-likelihoods, no padding) for `magix score`.

Run with the reference venv (see README.md):
  /work/refenv/bin/python tools/reference/make_model_fixtures.py [--out tests/fixtures/models]
        [--only CASE ...]
The output is deterministic: running it twice gives byte-identical files.
"""

import argparse
import json
import math
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "gemma": (GemmaConfig, GemmaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    "gemma2": (Gemma2Config, Gemma2ForCausalLM),
    "gemma3_text": (Gemma3TextConfig, Gemma3ForCausalLM),
    "phi3": (Phi3Config, Phi3ForCausalLM),
}

# Every case: family, config kwargs, sequence length T, number of padding positions at the end
# of row 1, the seed, and (optionally) a rewrite of config.json into the older (transformers
# v4) layout with top-level rope_theta / rope_scaling.
CASES = [
    {
        "case": "llama_gqa",
        "family": "llama",
        "description": "Llama, GQA (4 heads / 2 kv heads), llama3 rope scaling that changes "
        "some frequencies (and leaves others unchanged / smoothly interpolated), untied.",
        "config": dict(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            rms_norm_eps=1e-5, initializer_range=0.1, tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2,
            rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 32},
        ),
        "T": 20, "pad": 4, "seed": 1001, "legacy_config": False,
    },
    {
        "case": "llama_mqa_bias",
        "family": "llama",
        "description": "Llama, MQA (1 kv head), attention_bias and mlp_bias, head_dim 16 with "
        "4 heads and hidden 48 (heads*head_dim != hidden), linear rope scaling factor 2, tied "
        "embeddings. config.json is written in the older layout (rope_theta and rope_scaling "
        "{'type': 'linear'} at top level) and checked to load to the same model.",
        "config": dict(
            vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=16,
            max_position_embeddings=128, rms_norm_eps=1e-6, initializer_range=0.1,
            tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
            bos_token_id=1, eos_token_id=2,
            rope_parameters={"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0},
        ),
        "T": 16, "pad": 5, "seed": 1002, "legacy_config": True,
    },
    {
        "case": "mistral_window",
        "family": "mistral",
        "description": "Mistral, GQA (4 heads / 2 kv heads), sliding_window 6 < T=20: query q "
        "sees keys k with q-6 < k <= q. config.json is written in the older layout "
        "(rope_theta at top level, no rope_parameters).",
        "config": dict(
            vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            rms_norm_eps=1e-5, initializer_range=0.1, tie_word_embeddings=False,
            sliding_window=6, bos_token_id=1, eos_token_id=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
        ),
        "T": 20, "pad": 4, "seed": 1003, "legacy_config": True,
    },
    {
        "case": "gemma",
        "family": "gemma",
        "description": "Gemma (v1), 4 heads / 2 kv heads, head_dim 12 with hidden 32 "
        "(heads*head_dim != hidden), GeGLU (gelu_pytorch_tanh), RMSNorm scale (1 + w), "
        "embeddings scaled by sqrt(hidden), tied embeddings.",
        "config": dict(
            vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=12,
            max_position_embeddings=128, rms_norm_eps=1e-6, initializer_range=0.1,
            hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True,
            pad_token_id=0, eos_token_id=1, bos_token_id=2,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        "T": 16, "pad": 3, "seed": 1004, "legacy_config": False,
    },
    {
        "case": "qwen2",
        "family": "qwen2",
        "description": "Qwen2, 4 heads / 2 kv heads, q/k/v biases (o_proj without bias), "
        "untied; no sliding-window layer (use_sliding_window false).",
        "config": dict(
            vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            rms_norm_eps=1e-6, initializer_range=0.1, tie_word_embeddings=False,
            use_sliding_window=False, sliding_window=4096, max_window_layers=28,
            bos_token_id=1, eos_token_id=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        "T": 16, "pad": 4, "seed": 1005, "legacy_config": False,
    },
    {
        "case": "qwen2_tied",
        "family": "qwen2",
        "description": "Qwen2, 6 heads / 2 kv heads (head_dim 8), q/k/v biases, tied "
        "embeddings; no sliding-window layer (use_sliding_window false).",
        "config": dict(
            vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128,
            rms_norm_eps=1e-6, initializer_range=0.1, tie_word_embeddings=True,
            use_sliding_window=False, sliding_window=4096, max_window_layers=28,
            bos_token_id=1, eos_token_id=2,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        "T": 18, "pad": 5, "seed": 1006, "legacy_config": False,
    },
    {
        "case": "qwen3",
        "family": "qwen3",
        "description": "Qwen3, 4 heads / 2 kv heads, head_dim 16 with hidden 32 "
        "(heads*head_dim != hidden), per-head q_norm/k_norm before RoPE, no biases, untied; "
        "3 layers, use_sliding_window with max_window_layers 1: layer 0 full attention, layers "
        "1 and 2 a sliding window of 5 < T=16.",
        "config": dict(
            vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            max_position_embeddings=128, rms_norm_eps=1e-6, initializer_range=0.1,
            tie_word_embeddings=False, use_sliding_window=True, sliding_window=5,
            max_window_layers=1, bos_token_id=1, eos_token_id=2,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        "T": 16, "pad": 4, "seed": 1007, "legacy_config": False,
    },
    {
        "case": "gemma2",
        "family": "gemma2",
        "description": "Gemma 2, 4 heads / 2 kv heads, head_dim 16 with hidden 32, "
        "query_pre_attn_scalar 24 (scaling 24**-0.5, not head_dim**-0.5), attention logits "
        "soft-capped at 0.8 and final logits at 1.5 (both change the results: see "
        "softcap_effect_*), post-attention, pre- and post-feed-forward norms, (1 + w) RMSNorm, "
        "sqrt(hidden) embedding scale, GeGLU, tied; 3 layers alternating sliding (window 5 < "
        "T=16) / full / sliding.",
        "config": dict(
            vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            max_position_embeddings=128, rms_norm_eps=1e-6, initializer_range=0.2,
            hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
            query_pre_attn_scalar=24, sliding_window=5, attn_logit_softcapping=0.8,
            final_logit_softcapping=1.5, pad_token_id=0, eos_token_id=1, bos_token_id=2,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        "T": 16, "pad": 3, "seed": 1008, "legacy_config": False,
        "softcaps": ("attn_logit_softcapping", "final_logit_softcapping"),
    },
    {
        "case": "gemma3_text",
        "family": "gemma3_text",
        "description": "Gemma 3 (text), 4 heads / 1 kv head (MQA), head_dim 16 with hidden 32, "
        "per-head q_norm/k_norm with (1 + w), query_pre_attn_scalar 20, sandwich norms, "
        "sqrt(hidden) embedding scale, GeGLU, untied; 4 layers from sliding_window_pattern 3: "
        "sliding, sliding, full, sliding (window 5 < T=16); sliding layers use RoPE base 100 "
        "(default rope), the full layer base 10000 with linear scaling factor 2; final logits "
        "soft-capped at 2.0.",
        "config": dict(
            vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=1, head_dim=16,
            max_position_embeddings=128, rms_norm_eps=1e-6, initializer_range=0.2,
            hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=False,
            query_pre_attn_scalar=20, sliding_window=5, sliding_window_pattern=3,
            final_logit_softcapping=2.0, pad_token_id=0, eos_token_id=1, bos_token_id=2,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
            },
        ),
        "T": 16, "pad": 3, "seed": 1009, "legacy_config": False,
        "softcaps": ("final_logit_softcapping",),
    },
    {
        "case": "llama_yarn",
        "family": "llama",
        "description": "Llama, GQA (4 heads / 2 kv heads, head_dim 16), YaRN rope scaling "
        "(factor 4 over original_max_position_embeddings 32, beta_fast 4, beta_slow 0.5, theta "
        "100): one frequency kept, four blended by the ramp, three interpolated; cos/sin scaled "
        "by the attention factor 0.1 ln 4 + 1. T = 40 > 32 positions.",
        "config": dict(
            vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            rms_norm_eps=1e-5, initializer_range=0.1, tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2,
            rope_parameters={"rope_type": "yarn", "rope_theta": 100.0, "factor": 4.0,
                             "original_max_position_embeddings": 32, "beta_fast": 4.0,
                             "beta_slow": 0.5},
        ),
        "T": 40, "pad": 6, "seed": 1007, "legacy_config": False,
    },
    {
        "case": "phi3",
        "family": "phi3",
        "description": "Phi-3, GQA (4 heads / 2 kv heads, head_dim 16): fused qkv_proj "
        "(q 64 + k 32 + v 32 rows) and gate_up_proj (gate 96 + up 96 rows), SiLU GLU, "
        "sliding_window 8 < T=20, untied, pad_token_id 0.",
        "config": dict(
            vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            original_max_position_embeddings=128, rms_norm_eps=1e-5, initializer_range=0.1,
            tie_word_embeddings=False, sliding_window=8, bos_token_id=1, eos_token_id=2,
            pad_token_id=0, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        "T": 20, "pad": 4, "seed": 1008, "legacy_config": False,
    },
] + [
    {
        "case": case,
        "family": "phi3",
        "description": "Phi-3 with LongRoPE (Phi-3 128k / Phi-3.5 style): head_dim 16, 8 short "
        "and 8 long factors, original_max_position_embeddings 16 of max_position_embeddings 64 "
        "(factor 4: cos/sin scaled by sqrt(1 + ln 4 / ln 16)); transformers picks the factors "
        f"per forward by max(position_ids) + 1: T = {T}, so the {kind} factors.",
        "config": dict(
            vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            original_max_position_embeddings=16, rms_norm_eps=1e-5, initializer_range=0.1,
            tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
            rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                             "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.1, 3.8],
                             "long_factor": [1.0, 1.4, 2.2, 3.5, 5.0, 7.0, 9.5, 12.0]},
        ),
        "T": T, "pad": 3, "seed": 1010, "legacy_config": False,
    }
    for case, T, kind in [("phi3_longrope", 24, "long"), ("phi3_longrope_short", 12, "short")]
] + [
    {
        "case": "phi3_partial_rotary",
        "family": "phi3",
        "description": "Phi-4-mini style: partial_rotary_factor 0.75 (RoPE on the first 12 of "
        "each head's 16 dims, the last 4 passed through), LongRoPE with 6 short and 6 long "
        "factors (half the rotated dims), original_max_position_embeddings 16 of 64, T = 24: "
        "the long factors; tied embeddings. config.json in Phi-4-mini's layout: "
        "partial_rotary_factor at top level, rope_scaling {'type': 'longrope'}.",
        "config": dict(
            vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            original_max_position_embeddings=16, rms_norm_eps=1e-5, initializer_range=0.1,
            tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0,
            rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                             "partial_rotary_factor": 0.75,
                             "short_factor": [1.0, 1.2, 1.5, 2.0, 2.6, 3.3],
                             "long_factor": [1.0, 1.7, 3.0, 4.8, 7.5, 11.0]},
        ),
        "T": 24, "pad": 3, "seed": 1011, "legacy_config": True,
    }
]

# Families whose transformers classes have no sdpa attention (soft-capping needs eager).
NO_SDPA = {"gemma2"}

# Sequence lengths for the llama_gqa scoring check (no padding, one sequence per line).
SCORE_LENGTHS = [2, 7, 13, 20]


def build_model(spec, attn_implementation):
    config_cls, model_cls = FAMILIES[spec["family"]]
    config = config_cls(**spec["config"])
    config._attn_implementation = attn_implementation
    torch.manual_seed(spec["seed"])
    model = model_cls(config)
    model.to(torch.float32)
    # Perturb norms and biases so that they are not all ones/zeros. Gemma's RMSNorm scales by
    # (1 + w) with w initialised to 0, so adding noise gives the same kind of spread.
    gen = torch.Generator().manual_seed(spec["seed"] + 7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float32))
    model.eval()
    return model


def make_inputs(spec, config):
    """Row 0: T real tokens; row 1: T - pad real tokens then pad positions (right padding)."""
    T, pad = spec["T"], spec["pad"]
    gen = torch.Generator().manual_seed(spec["seed"] + 13)
    special = {config.bos_token_id, config.eos_token_id, config.pad_token_id}
    low = 3
    assert all(s is None or s < low for s in special)
    ids = torch.randint(low, config.vocab_size, (2, T), generator=gen, dtype=torch.int64)
    ids[:, 0] = config.bos_token_id
    pad_id = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    mask = torch.ones(2, T, dtype=torch.int64)
    mask[1, T - pad:] = 0
    ids[1, T - pad:] = pad_id
    labels = ids.clone()
    labels[mask == 0] = -100
    return ids, mask, labels


def nll_from_logits(logits, labels):
    """Per-row sum of -log p(target) over counted shifted targets, in float64. (B,), (B,)."""
    logp = torch.log_softmax(logits.double(), dim=-1)[:, :-1, :]
    tgt = labels[:, 1:]
    counted = tgt != -100
    picked = torch.gather(logp, 2, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    nll = -(picked * counted).sum(dim=1)
    return nll, counted.sum(dim=1)


def run_case(model, ids, mask, labels):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return out.logits.detach().clone(), out.loss.detach().clone(), grads


def to_legacy_config(path):
    """Rewrite config.json in the transformers v4 layout: rope_theta at top level and the
    scaling (if any) as rope_scaling with the old key "type"."""
    with open(path) as f:
        cfg = json.load(f)
    rope = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rope.pop("rope_theta")
    if "partial_rotary_factor" in rope:  # top level, as Phi-4-mini's config.json has it
        cfg["partial_rotary_factor"] = rope.pop("partial_rotary_factor")
    rope_type = rope.pop("rope_type")
    if rope_type != "default":
        cfg["rope_scaling"] = {"type": rope_type, **rope}
    else:
        cfg["rope_scaling"] = None
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def max_abs(a, b):
    return float((a - b).abs().max())


def write_case(spec, out_root, report):
    case_dir = os.path.join(out_root, spec["case"])
    if os.path.isdir(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)

    model = build_model(spec, "eager")
    config = model.config
    tied = bool(config.tie_word_embeddings)
    ids, mask, labels = make_inputs(spec, config)
    logits, loss, grads = run_case(model, ids, mask, labels)
    nll, ntok = nll_from_logits(logits, labels)

    model.save_pretrained(case_dir, safe_serialization=True)
    if spec["legacy_config"]:
        to_legacy_config(os.path.join(case_dir, "config.json"))

    # The saved folder must load back (through whichever config layout was written) to the
    # very same model: same logits bit for bit.
    _, model_cls = FAMILIES[spec["family"]]
    reloaded = model_cls.from_pretrained(case_dir, attn_implementation="eager",
                                         dtype=torch.float32).eval()
    re_logits, re_loss, re_grads = run_case(reloaded, ids, mask, labels)
    assert torch.equal(re_logits, logits), spec["case"] + ": reload changed the logits"
    assert set(re_grads) == set(grads)
    info = {"reload_max_abs_logits": max_abs(re_logits, logits)}

    # eager vs sdpa, stored in reference.json
    if spec["family"] not in NO_SDPA:
        sdpa = model_cls.from_pretrained(case_dir, attn_implementation="sdpa",
                                         dtype=torch.float32).eval()
        s_logits, s_loss, s_grads = run_case(sdpa, ids, mask, labels)
        real = mask.bool()
        info["sdpa_max_abs_logits_real"] = max_abs(s_logits[real], logits[real])
        info["sdpa_max_abs_logits_all"] = max_abs(s_logits, logits)
        info["sdpa_abs_loss"] = abs(float(s_loss) - float(loss))
        info["sdpa_max_abs_grad"] = max(max_abs(s_grads[n], grads[n]) for n in grads)
        info["sdpa_max_rel_grad"] = max(
            max_abs(s_grads[n], grads[n]) / max(float(grads[n].abs().max()), 1e-30)
            for n in grads)

    # The soft-caps must matter: the same weights with each cap removed change the logits.
    for field in spec.get("softcaps", ()):
        uncapped = model_cls.from_pretrained(case_dir, attn_implementation="eager",
                                             dtype=torch.float32, **{field: None}).eval()
        u_logits, _, _ = run_case(uncapped, ids, mask, labels)
        effect = max_abs(u_logits, logits)
        assert effect > 1e-2, f"{spec['case']}: {field} changes the logits by only {effect}"
        info["softcap_effect_" + field] = effect

    hf_vs_nll = abs(float(loss) - float(nll.sum() / ntok.sum()))
    info["loss_minus_sum_nll_over_tokens"] = hf_vs_nll
    assert hf_vs_nll < 1e-5, hf_vs_nll

    tensors = {
        "input_ids": ids.contiguous(),
        "attention_mask": mask.contiguous(),
        "labels": labels.contiguous(),
        "logits": logits.contiguous(),
        "loss": loss.reshape([]).contiguous(),
        "nll_per_example": nll.to(torch.float32).contiguous(),
        "tokens_per_example": ntok.to(torch.int64).contiguous(),
    }
    for name, g in grads.items():
        tensors["grad." + name] = g.to(torch.float32).contiguous()
    save_file(tensors, os.path.join(case_dir, "reference.safetensors"))

    rope_info = describe_rope(model)
    notes = [
        "Inputs: row 0 has T real tokens, row 1 is right-padded (attention_mask 0 at the end); "
        "position_ids are 0..T-1 for both rows (HF default). Tokens at padded positions are "
        f"{'pad_token_id' if config.pad_token_id is not None else 'eos_token_id'} "
        f"({ids[1, -1].item()}); position 0 of each row is bos ({config.bos_token_id}).",
        "Logits at padded positions are what HF computes there (the padded query attends to "
        "all real keys at or before it; padded keys are never attended); they do not enter "
        "the loss or gradients. Compare logits on attention_mask == 1 positions at least.",
        "loss = sum(nll_per_example) / sum(tokens_per_example); a target at position t counts "
        "when labels[t] != -100 (t >= 1), predicted from position t-1.",
        "Model weights are fp32; norm weights and biases were perturbed (+0.1*randn) after "
        "HF init, initializer_range 0.1.",
        "attn_implementation eager; the sdpa_* fields give the max differences to sdpa.",
    ]
    if tied:
        notes.append("Tied embeddings: model.named_parameters() has no lm_head.weight, so "
                     "grad.model.embed_tokens.weight is the total gradient (embedding lookup + "
                     "LM head); model.safetensors has no lm_head.weight either.")
    if spec["family"] in ("qwen3", "gemma2", "gemma3_text"):
        notes.append(f"layer_types = {config.layer_types}; sliding_window = "
                     f"{config.sliding_window}: a sliding layer's query at q attends keys k with "
                     f"q - {config.sliding_window} < k <= q.")
    if spec["family"] == "qwen2":
        notes.append(f"Qwen2 layer_types = {config.layer_types}; sliding_window = "
                     f"{config.sliding_window} (use_sliding_window false makes transformers set "
                     "sliding_window to null), so every layer is full causal attention.")
    if spec["family"] == "mistral":
        notes.append("Mistral sliding window: query at position q attends keys k with "
                     f"q - {config.sliding_window} < k <= q (HF masking_utils "
                     "sliding_window_overlay) and not padded.")
    if spec["family"] == "gemma":
        notes.append("Gemma: hidden = embed(ids) * sqrt(hidden_size) (the scale is a float32 "
                     "tensor), RMSNorm output * (1 + w), MLP act gelu_pytorch_tanh (tanh "
                     "approximation), attention scaling head_dim**-0.5. pad_token_id 0 is the "
                     "nn.Embedding padding_idx in HF (its init zeroes that row of embed_tokens, so with "
                     "tied weights the logit of token 0 is exactly 0); token 0 only occurs at "
                     "padded positions, where it gets no gradient either way.")
    if spec["family"] == "phi3":
        notes.append("Phi-3: self_attn.qkv_proj.weight rows are q (num_attention_heads * "
                     "head_dim), then k, then v (num_key_value_heads * head_dim each); "
                     "mlp.gate_up_proj.weight rows are gate then up (intermediate_size each), "
                     "out = down_proj(up * silu(gate)). Sliding window: query q attends keys k "
                     f"with q - {config.sliding_window} < k <= q.")
    if spec["legacy_config"]:
        notes.append("config.json rewritten into the older layout (rope_theta/rope_scaling at "
                     "top level, torch_dtype); transformers loads it to the same model "
                     "(checked: identical logits).")

    meta = {
        "case": spec["case"],
        "description": spec["description"],
        "family": spec["family"],
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "loss": float(loss),
        "tied": tied,
        "batch": int(ids.shape[0]),
        "seq_len": int(ids.shape[1]),
        "real_lengths": [int(x) for x in mask.sum(dim=1)],
        "vocab_size": int(config.vocab_size),
        "attn_implementation": "eager",
        "rope": rope_info,
        "parameters": [n for n, _ in model.named_parameters()],
        "notes": notes,
    }
    meta.update({k: v for k, v in info.items() if k.startswith(("sdpa", "softcap"))})
    with open(os.path.join(case_dir, "reference.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")

    if spec["case"] == "llama_gqa":
        write_score_files(model, spec, case_dir)

    report[spec["case"]] = info


def describe_rope(model):
    """inv_freq actually used by the model vs. the unscaled one (theta^(-2i/d)); per layer type
    where the model has one rotary embedding per layer type (Gemma 3)."""
    rotary = model.model.rotary_emb
    cfg = model.config
    if not hasattr(rotary, "inv_freq"):
        return {t: describe_rope_of(cfg, cfg.rope_parameters[t], getattr(rotary, t + "_inv_freq"),
                                    getattr(rotary, t + "_attention_scaling"))
                for t in sorted(set(cfg.layer_types))}
    return describe_rope_of(cfg, cfg.rope_parameters, rotary.inv_freq, rotary.attention_scaling)


def describe_rope_of(cfg, rope_parameters, inv_freq, attention_scaling):
    inv = inv_freq.detach().double()
    theta = rope_parameters["rope_theta"]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    dim = int(head_dim * rope_parameters.get("partial_rotary_factor", 1.0))  # rotated dims
    base = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    ratio = (base.double() / inv).tolist()
    return {
        "rope_parameters": dict(rope_parameters),
        "head_dim": int(head_dim),
        "rotary_dim": int(dim),
        "attention_scaling": float(attention_scaling),
        "inv_freq": [float(x) for x in inv_freq.tolist()],
        "unscaled_over_scaled": [float(x) for x in ratio],
    }


def write_score_files(model, spec, case_dir):
    gen = torch.Generator().manual_seed(spec["seed"] + 29)
    inputs, expected = [], []
    for i, n in enumerate(SCORE_LENGTHS):
        ids = torch.randint(3, model.config.vocab_size, (1, n), generator=gen, dtype=torch.int64)
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        nll, ntok = nll_from_logits(logits, ids)
        nll_v, tok_v = float(nll[0]), int(ntok[0])
        mean = nll_v / tok_v
        inputs.append({"input_ids": [int(x) for x in ids[0]]})
        expected.append({"index": i, "tokens": tok_v, "nll": nll_v, "mean_nll": mean,
                         "ppl": math.exp(mean)})
    with open(os.path.join(case_dir, "score_input.jsonl"), "w") as f:
        for row in inputs:
            f.write(json.dumps(row) + "\n")
    with open(os.path.join(case_dir, "score_expected.jsonl"), "w") as f:
        for row in expected:
            f.write(json.dumps(row) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "fixtures", "models"))
    ap.add_argument("--only", nargs="*", help="case names to (re)write")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    report = {}
    for spec in CASES:
        if args.only and spec["case"] not in args.only:
            continue
        write_case(spec, os.path.normpath(args.out), report)
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
