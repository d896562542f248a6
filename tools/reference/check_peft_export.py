#!/usr/bin/env python3
"""Check magix's LoRA exports against PEFT (run by hand; the result is recorded in docs/lora.md).

Trains LoRA adapters with `magix train-lora` on a fixture model (tests/fixtures/models/<model>,
a few steps at a large learning rate so that the adapters move the logits), then exports the
last step twice:
  magix export --lora_format merged   -> an HF folder with W + (alpha / r) B A merged in
  magix export --lora_format peft     -> adapter_config.json + adapter_model.safetensors
and compares, on random token rows:
  1. PeftModel.from_pretrained(base, peft folder) logits  vs  the merged folder's logits
  2. the same PEFT model after merge_and_unload()          vs  the merged folder's logits
  3. the base model's logits vs the merged folder's (the adapters must matter: not ~0)
Prints the max absolute differences and exits non-zero when 1 or 2 exceed 1e-4 * max(1, |logit|).

  /work/refenv/bin/python tools/reference/check_peft_export.py --magix build/bin/magix \
      [--model llama_gqa] [--steps 6] [--work /tmp/peft_check]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

import peft
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def load(path):
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager",
                                                dtype=torch.float32).eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--magix", required=True)
    ap.add_argument("--model", default="llama_gqa")
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "tests/fixtures/train/gqa_tokenizer"))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--work", default="/tmp/magix_peft_check")
    args = ap.parse_args()

    base_dir = os.path.join(ROOT, "tests/fixtures/models", args.model)
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    ckpt = os.path.join(args.work, "ckpt")
    with open(os.path.join(base_dir, "config.json")) as f:
        model_type = json.load(f)["model_type"]
    run([args.magix, "train-lora", "--model_name", base_dir, "--model_type", model_type,
         "--tokenizer_name", args.tokenizer,
         "--train_file", os.path.join(ROOT, "tests/fixtures/train/corpus.jsonl"),
         "--max_length", "24", "--batch_size", "8", "--max_steps", str(args.steps),
         "--learning_rate", "5e-2", "--lr_schedule", "constant", "--warmup_ratio", "0",
         "--lora_rank", str(args.rank), "--lora_alpha", str(args.alpha),
         "--checkpoint_dir", ckpt, "--progress", "none"])
    step = os.path.join(ckpt, sorted(os.listdir(ckpt))[-1])
    merged = os.path.join(args.work, "merged")
    adapter = os.path.join(args.work, "adapter")
    run([args.magix, "export", "--checkpoint", step, "--output_dir", merged])
    run([args.magix, "export", "--checkpoint", step, "--output_dir", adapter,
         "--lora_format", "peft"])
    with open(os.path.join(adapter, "adapter_config.json")) as f:
        cfg = json.load(f)
    print("adapter_config.json:", {k: cfg[k] for k in ("r", "lora_alpha", "task_type")},
          len(cfg["target_modules"]), "target modules")

    base = load(base_dir)
    vocab = base.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (3, 16), generator=g)
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
        merged_logits = load(merged)(input_ids=ids).logits
        pm = PeftModel.from_pretrained(load(base_dir), adapter).eval()
        peft_logits = pm(input_ids=ids).logits
        unloaded_logits = pm.merge_and_unload()(input_ids=ids).logits
    scale = max(1.0, merged_logits.abs().max().item())
    d_peft = (peft_logits - merged_logits).abs().max().item()
    d_unloaded = (unloaded_logits - merged_logits).abs().max().item()
    d_base = (base_logits - merged_logits).abs().max().item()
    print(f"peft {peft.__version__}, torch {torch.__version__}; logits max |logit| {scale:.3f}")
    print(f"max |PEFT adapter on base - magix merged|      = {d_peft:.3g}")
    print(f"max |PEFT merge_and_unload - magix merged|     = {d_unloaded:.3g}")
    print(f"max |base - magix merged| (adapters' effect)   = {d_base:.3g}")
    ok = d_peft <= 1e-4 * scale and d_unloaded <= 1e-4 * scale and d_base > 1e-3
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
