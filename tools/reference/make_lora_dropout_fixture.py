#!/usr/bin/env python3
"""Write tests/fixtures/lora/<case>/dropout.safetensors: PEFT's loss and adapter gradients with
lora_dropout, the dropout masks being magix's (reproduced here), so that magix's training pass
with --lora_dropout can be checked against PEFT.

magix's mask (docs/lora.md, Backend::dropout): for optimizer step `step` of a run with `seed`,
  key       = splitmix64(splitmix64(seed) ^ step)
  layer key = splitmix64(key ^ splitmix64(layer))
  adapter   = splitmix64(layer key ^ splitmix64(P))   P: q 1, k 3, v 5, o 7, gate 10, up 12, down 14
  element (token n of the batch, row-major over rows and positions; input feature j of `cols`)
  is kept iff splitmix64(adapter ^ splitmix64(n * cols + j)) >> 40 >= round(p * 2^24), and a
  kept element is multiplied by float32(1 / (1 - p)).
PEFT's nn.Dropout of every adapter is replaced by that mask; the adapters are the case's
(make_lora_fixtures.py), the batch the model fixture's.

  /work/refenv/bin/python tools/reference/make_lora_dropout_fixture.py [--case llama_gqa]
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_lora_fixtures as fixtures  # noqa: E402

LAYER_PARAM = {"q_proj": 1, "k_proj": 3, "v_proj": 5, "o_proj": 7, "gate_proj": 10,
               "up_proj": 12, "down_proj": 14}


def splitmix64(x):
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class MagixDropout(torch.nn.Module):
    def __init__(self, key, p):
        super().__init__()
        self.key, self.p = np.uint64(key), p

    def forward(self, x):  # x (B, T, cols)
        cols = x.shape[-1]
        n = x.numel() // cols
        e = np.arange(n * cols, dtype=np.uint64)
        h = splitmix64(self.key ^ splitmix64(e))
        keep = (h >> np.uint64(40)) >= np.uint64(round(self.p * 2**24))
        scale = np.float32(1) / (np.float32(1) - np.float32(self.p))
        mask = torch.from_numpy((keep.astype(np.float32) * scale).reshape(x.shape))
        return x * mask


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="llama_gqa")
    ap.add_argument("--p", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--step", type=int, default=3)
    args = ap.parse_args()
    case = next(c for c in fixtures.CASES if c["case"] == args.case)
    torch.manual_seed(case["seed"])
    model_dir = os.path.join(fixtures.ROOT, "tests", "fixtures", "models", case["model"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager",
                                                 dtype=torch.float32)
    cfg = LoraConfig(r=case["r"], lora_alpha=case["alpha"], target_modules=case["target_modules"],
                     lora_dropout=args.p, bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    pm.train()
    case_dir = os.path.join(fixtures.ROOT, "tests", "fixtures", "lora", case["case"])
    want = load_file(os.path.join(case_dir, "lora.safetensors"))
    adapters = {}
    for name, p in pm.named_parameters():
        if p.requires_grad:
            with torch.no_grad():
                p.copy_(want["adapter." + fixtures.magix_name(name)])
            adapters[name] = p
    key = splitmix64(splitmix64(np.uint64(args.seed)) ^ np.uint64(args.step))
    layers = pm.base_model.model.model.layers
    for l, layer in enumerate(layers):
        layer_key = splitmix64(key ^ splitmix64(np.uint64(l)))
        for parent in (layer.self_attn, layer.mlp):
            for proj, index in LAYER_PARAM.items():
                mod = getattr(parent, proj, None)
                if mod is None or not hasattr(mod, "lora_dropout"):
                    continue
                k = splitmix64(layer_key ^ splitmix64(np.uint64(index)))
                mod.lora_dropout["default"] = MagixDropout(k, args.p)
    ref = load_file(os.path.join(model_dir, "reference.safetensors"))
    out = pm(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"],
             labels=ref["labels"])
    out.loss.backward()
    tensors = {"loss": out.loss.detach().reshape(()).contiguous()}
    for name, p in adapters.items():
        tensors["grad." + fixtures.magix_name(name)] = p.grad.detach().clone().contiguous()
    save_file(tensors, os.path.join(case_dir, "dropout.safetensors"),
              metadata={"p": str(args.p), "seed": str(args.seed), "step": str(args.step)})
    print(f"{case['case']}: dropout {args.p} loss {out.loss.item():.6f} "
          f"(no dropout {want['loss'].item():.6f})")


if __name__ == "__main__":
    main()
