#!/usr/bin/env python3
"""Write a PEFT adapter folder (save_pretrained) of a LoRA fixture case: tests/fixtures/lora/
<case>/peft/ with adapter_config.json and adapter_model.safetensors, holding exactly the adapters
of make_lora_fixtures.py's case (same seed, same random values), so that the case's logits, loss
and gradients (lora.safetensors) are those of this folder on the base model.

  /work/refenv/bin/python tools/reference/make_peft_adapter_fixture.py [--case qwen2_qv_down]
"""

import argparse
import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_lora_fixtures as fixtures  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="qwen2_qv_down")
    args = ap.parse_args()
    case = next(c for c in fixtures.CASES if c["case"] == args.case)
    torch.manual_seed(case["seed"])
    model_dir = os.path.join(fixtures.ROOT, "tests", "fixtures", "models", case["model"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager",
                                                 dtype=torch.float32)
    cfg = LoraConfig(r=case["r"], lora_alpha=case["alpha"], target_modules=case["target_modules"],
                     lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    case_dir = os.path.join(fixtures.ROOT, "tests", "fixtures", "lora", case["case"])
    want = load_file(os.path.join(case_dir, "lora.safetensors"))
    for name, p in pm.named_parameters():
        if p.requires_grad:
            with torch.no_grad():
                p.copy_(want["adapter." + fixtures.magix_name(name)])
    out = os.path.join(case_dir, "peft")
    pm.save_pretrained(out)
    ref = load_file(os.path.join(model_dir, "reference.safetensors"))
    loss = pm(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"],
              labels=ref["labels"]).loss.item()
    print(f"{out}: loss {loss:.6f} (lora.safetensors: {want['loss'].item():.6f})")


if __name__ == "__main__":
    main()
