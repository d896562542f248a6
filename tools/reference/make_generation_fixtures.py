#!/usr/bin/env python3
"""Write the generation fixtures tests/fixtures/generation/<case>.json.

For each fixture model under tests/fixtures/models/<case>/ (tiny random HF models, fp32), HF
transformers' `generate` (greedy, do_sample=False, eager attention, CPU) on:

  greedy   one LEFT-padded batch of 4 prompts of different lengths (attention_mask marks the
           padding; transformers builds position ids from it), max_new_tokens new tokens;
  penalty  each prompt alone (no padding), greedy with repetition_penalty=PENALTY.

Prompt ids are random in [3, vocab) (never bos/eos/pad). Random models have flat logits, so for
every generated step of every still-running row the gap between the two largest (processed)
scores is recorded; the prompt seed is advanced until no step has a gap below MIN_GAP, so the
greedy choice cannot flip under float rounding differences (another summation order, a model
axis split). The chosen seed and the smallest gap are written down.

Each file holds: prompts (list of id lists), max_new_tokens, eos_token_id, pad_token_id,
greedy (generated ids per prompt, cut after the first eos), greedy_min_gap, penalty,
penalty_greedy, penalty_min_gap, seed, versions.

Run with the reference venv:
  /work/refenv/bin/python tools/reference/make_generation_fixtures.py [--only CASE ...]
The output is deterministic.
"""

import argparse
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM

CASES = ["llama_gqa", "llama_mqa_bias", "mistral_window", "gemma", "qwen2", "qwen2_tied", "qwen3",
         "gemma2", "gemma3_text", "llama_yarn", "phi3", "phi3_longrope", "phi3_longrope_short",
         "phi3_partial_rotary", "phi3_longrope_cross"]
LENGTHS = [5, 9, 2, 7]
# LongRoPE (original context 16): prompts past it (the long factors from the prefill on), and
# prompts short enough that 12 new tokens stay within it (the short factors throughout).
LENGTHS_OF = {"phi3_longrope": [17, 20, 18, 19], "phi3_longrope_short": [5, 4, 2, 3],
              "phi3_partial_rotary": [17, 20, 18, 19],
              # prompts of 10-13 tokens and 12 new ones cross the original context (16) mid-way:
              # transformers recomputes the whole cache with the long factors at that step.
              "phi3_longrope_cross": [10, 13, 12, 11]}
# A fixture of another case's model.
MODEL_OF = {"phi3_longrope_cross": "phi3_longrope_short"}
# Fixtures whose batch rows depend on each other: the longest prompt's positions switch the whole
# batch to the long factors, earlier than a shorter prompt alone would switch.
BATCH_DEPENDENT = {"phi3_longrope_cross"}
MAX_NEW_TOKENS = 12
PENALTY = 1.3
MIN_GAP = 1e-3


def eos_and_pad(config):
    eos = config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    pad = config.pad_token_id if config.pad_token_id is not None else eos
    return eos, pad


def cut_after_eos(ids, eos):
    out = []
    for t in ids:
        out.append(int(t))
        if t == eos:
            break
    return out


def run(model, prompts, eos, pad, **kwargs):
    """Left-pads `prompts`, generates; returns (generated ids per row, min top-2 gap)."""
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, T - len(p):] = torch.tensor(p)
        mask[i, T - len(p):] = 1
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                             max_new_tokens=MAX_NEW_TOKENS, eos_token_id=eos, pad_token_id=pad,
                             output_scores=True, return_dict_in_generate=True, **kwargs)
    gen = out.sequences[:, T:].tolist()
    rows = [cut_after_eos(g, eos) for g in gen]
    min_gap = float("inf")
    for step, scores in enumerate(out.scores):
        top2 = torch.topk(scores.double(), 2, dim=-1).values
        for r in range(len(prompts)):
            if step < len(rows[r]):  # the row was still running at this step
                min_gap = min(min_gap, float(top2[r, 0] - top2[r, 1]))
    return rows, min_gap


def make_case(case, models_dir):
    model = AutoModelForCausalLM.from_pretrained(os.path.join(models_dir, MODEL_OF.get(case, case)),
                                                 dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    eos, pad = eos_and_pad(model.config)
    vocab = model.config.vocab_size
    for seed in range(100, 1100):
        gen = torch.Generator().manual_seed(seed)
        prompts = [torch.randint(3, vocab, (n,), generator=gen).tolist()
                   for n in LENGTHS_OF.get(case, LENGTHS)]
        greedy, gap = run(model, prompts, eos, pad)
        if gap < MIN_GAP:
            continue
        penalty, pgap = [], float("inf")
        for p in prompts:
            rows, g = run(model, [p], eos, pad, repetition_penalty=PENALTY)
            penalty.append(rows[0])
            pgap = min(pgap, g)
        if pgap < MIN_GAP:
            continue
        return {
            "case": case,
            "model": MODEL_OF.get(case, case),
            "seed": seed,
            "prompts": prompts,
            "max_new_tokens": MAX_NEW_TOKENS,
            "eos_token_id": eos,
            "pad_token_id": pad,
            "greedy": greedy,
            "greedy_min_gap": gap,
            "penalty": PENALTY,
            "penalty_greedy": penalty,
            "penalty_min_gap": pgap,
            "min_gap_required": MIN_GAP,
            "batch_rows_independent": case not in BATCH_DEPENDENT,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "notes": "greedy: one left-padded batch; penalty: each prompt alone. Gaps are "
                     "between the two largest processed scores of every running step.",
        }
    sys.exit(f"{case}: no prompt seed in [100, 1100) gives top-2 gaps >= {MIN_GAP}")


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.path.join(root, "tests/fixtures/models"))
    ap.add_argument("--out", default=os.path.join(root, "tests/fixtures/generation"))
    ap.add_argument("--only", nargs="*", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    for case in a.only or CASES:
        fixture = make_case(case, a.models)
        with open(os.path.join(a.out, case + ".json"), "w") as f:
            json.dump(fixture, f, indent=1)
            f.write("\n")
        print(f"{case}: seed {fixture['seed']}, min gap {fixture['greedy_min_gap']:.4g} "
              f"(penalty {fixture['penalty_min_gap']:.4g}), lengths "
              f"{[len(g) for g in fixture['greedy']]}")


if __name__ == "__main__":
    main()
