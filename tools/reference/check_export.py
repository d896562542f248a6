#!/usr/bin/env python3
"""Checks a `magix export` folder against magix itself with the reference library.

Loads the exported folder with transformers (fp32, eager attention), computes every example's
summed NLL of next-token targets and compares it with `magix score --model_name_or_path STEP`
on the checkpoint step the folder was exported from. With --original (the HF folder the
checkpoint's weights came from, when they were not trained since), also compares the full
logits of the exported folder and of the original folder in transformers.

  /work/refenv/bin/python tools/reference/check_export.py --magix build/bin/magix \\
      --checkpoint CKPT_DIR/000001 --export OUT [--original tests/fixtures/models/llama_gqa]

Run by hand (never by the tests). Exits 1 when a difference exceeds --tol (relative, NLL) or
--logits_tol (absolute, logits).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM


def load(path):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--magix", required=True, help="path to the magix binary")
    ap.add_argument("--checkpoint", required=True, help="the checkpoint step folder that was exported")
    ap.add_argument("--export", required=True, help="the folder magix export wrote")
    ap.add_argument("--original", help="HF folder with the same weights, to compare logits with")
    ap.add_argument("--input", help="JSONL of {\"input_ids\": [...]} (default: random sequences)")
    ap.add_argument("--examples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--logits_tol", type=float, default=1e-5)
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = load(args.export)
    vocab = model.config.vocab_size
    with tempfile.TemporaryDirectory() as tmp:
        inp = args.input
        if inp is None:
            rng = random.Random(args.seed)
            inp = os.path.join(tmp, "input.jsonl")
            with open(inp, "w") as f:
                for _ in range(args.examples):
                    n = rng.randint(2, 48)
                    f.write(json.dumps({"input_ids": [rng.randrange(vocab) for _ in range(n)]}) + "\n")
        out = os.path.join(tmp, "scores.jsonl")
        subprocess.run([args.magix, "score", "--model_name_or_path", args.checkpoint, "--input", inp,
                        "--output_file", out], check=True, stdout=subprocess.DEVNULL)
        examples = [json.loads(l)["input_ids"] for l in open(inp) if l.strip()]
        scores = [json.loads(l) for l in open(out) if l.strip()]

    original = load(args.original) if args.original else None
    worst_rel = worst_abs = worst_logits = 0.0
    with torch.no_grad():
        for ids, s in zip(examples, scores):
            x = torch.tensor([ids])
            logits = model(input_ids=x).logits[0]
            nll = torch.nn.functional.cross_entropy(logits[:-1].double(), x[0, 1:], reduction="sum").item()
            worst_abs = max(worst_abs, abs(nll - s["nll"]))
            worst_rel = max(worst_rel, abs(nll - s["nll"]) / max(abs(nll), 1e-12))
            if original is not None:
                ref = original(input_ids=x).logits[0]
                worst_logits = max(worst_logits, (logits - ref).abs().max().item())
    print(f"examples: {len(examples)}  vocab: {vocab}")
    print(f"NLL transformers(export) vs magix score(checkpoint): max abs {worst_abs:.3e}, max rel {worst_rel:.3e}")
    ok = worst_rel <= args.tol
    if original is not None:
        print(f"logits transformers(export) vs transformers(original): max abs {worst_logits:.3e}")
        ok = ok and worst_logits <= args.logits_tol
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
