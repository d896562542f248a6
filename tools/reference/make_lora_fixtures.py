#!/usr/bin/env python3
"""Write the LoRA golden fixtures under tests/fixtures/lora/<case>/.

Each case takes a decoder fixture model (tests/fixtures/models/<model>: an HF folder and the
batch of its reference.safetensors), wraps it with PEFT LoRA adapters (fp32, CPU, eager
attention, lora_dropout 0), sets EVERY adapter to random values (B is not zero: with B = 0 the
gradient of A would be zero and test nothing), and records one forward/backward pass:

  lora.safetensors
    adapter.<name>   F32  the adapter values, <name> in magix's naming
                          model.layers.N.self_attn.q_proj.lora_A.weight  [r, in]
                          model.layers.N.self_attn.q_proj.lora_B.weight  [out, r]
                          (PEFT's base_model.model.<name> without the ".default" adapter name)
    grad.<name>      F32  d loss / d adapter
    logits           F32 (B, T, V)
    loss             F32 []   HF causal-LM loss with labels (mean over counted shifted targets)
  lora.json          r, lora_alpha, PEFT target_modules, magix's --lora_targets regex, versions

The batch (input_ids, attention_mask, labels) is the model fixture's reference.safetensors.

Run with the reference venv (peft 0.21.2 installed into /work/refenv):
  /work/refenv/bin/python tools/reference/make_lora_fixtures.py [--out tests/fixtures/lora]
      [--only CASE ...]
The output is deterministic.
"""

import argparse
import json
import os

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

CASES = [
    {
        "case": "llama_gqa",
        "model": "llama_gqa",
        "description": "every linear weight of the layers (the default targets), r 4, alpha 12",
        "r": 4,
        "alpha": 12.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                           "down_proj"],
        "magix_targets": None,  # the default
        "seed": 7001,
    },
    {
        "case": "qwen2_qv_down",
        "model": "qwen2",
        "description": "q, v (with biases in the base model) and down only, r 2, alpha 5 "
                       "(scale 2.5)",
        "r": 2,
        "alpha": 5.0,
        "target_modules": ["q_proj", "v_proj", "down_proj"],
        "magix_targets": r"(q_proj|v_proj|down_proj)\.weight$",
        "seed": 7002,
    },
    {
        "case": "phi3_fused",
        "model": "phi3",
        "description": "Phi-3: the fused qkv_proj and gate_up_proj (PEFT adapts the fused "
                       "modules: B's rows are q, k, v / gate, up), o_proj and down_proj; r 4, "
                       "alpha 8",
        "r": 4,
        "alpha": 8.0,
        "target_modules": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        "magix_targets": r"(qkv_proj|o_proj|gate_up_proj|down_proj)\.weight$",
        "seed": 7003,
    },
] + [
    {
        "case": model,
        "model": model,
        "description": "every linear weight of the layers (the default targets; not the q/k "
                       "norms nor the feed-forward norms), r 4, alpha 8",
        "r": 4,
        "alpha": 8.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                           "down_proj"],
        "magix_targets": None,  # the default
        "seed": seed,
    }
    for model, seed in (("qwen3", 7003), ("gemma2", 7004), ("gemma3_text", 7005))
] + [
    {
        "case": "llama_gqa_rslora",
        "model": "llama_gqa",
        "description": "rank-stabilised LoRA (PEFT's use_rslora: scale alpha / sqrt(r)): every "
                       "linear weight of the layers, r 4, alpha 12 (scale 6, not 3)",
        "r": 4,
        "alpha": 12.0,
        "use_rslora": True,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                           "down_proj"],
        "magix_targets": None,  # the default
        "seed": 7006,
    },
]


def magix_name(peft_name):
    # base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight
    name = peft_name[len("base_model.model."):]
    return name.replace(".default.weight", ".weight")


def run(case, out_root):
    torch.manual_seed(case["seed"])
    model_dir = os.path.join(ROOT, "tests", "fixtures", "models", case["model"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager",
                                                 dtype=torch.float32)
    cfg = LoraConfig(r=case["r"], lora_alpha=case["alpha"], target_modules=case["target_modules"],
                     lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                     use_rslora=case.get("use_rslora", False))
    pm = get_peft_model(model, cfg)
    pm.train()  # dropout is 0 anyway; the model fixtures are made in train mode too
    g = torch.Generator().manual_seed(case["seed"])
    adapters = {}
    for name, p in pm.named_parameters():
        if not p.requires_grad:
            continue
        assert ".lora_" in name, name
        with torch.no_grad():
            if ".lora_A." in name:
                bound = (6.0 / p.shape[1]) ** 0.5  # He uniform, as magix initialises A
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
            else:
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * 0.05)
        adapters[name] = p
    ref = load_file(os.path.join(model_dir, "reference.safetensors"))
    ids, mask, labels = ref["input_ids"], ref["attention_mask"], ref["labels"]
    out = pm(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    tensors = {"loss": out.loss.detach().reshape(()).contiguous(),
               "logits": out.logits.detach().contiguous()}
    for name, p in adapters.items():
        tensors["adapter." + magix_name(name)] = p.detach().clone().contiguous()
        tensors["grad." + magix_name(name)] = p.grad.detach().clone().contiguous()
    case_dir = os.path.join(out_root, case["case"])
    os.makedirs(case_dir, exist_ok=True)
    save_file(tensors, os.path.join(case_dir, "lora.safetensors"))
    meta = {
        "case": case["case"],
        "model": case["model"],
        "description": case["description"],
        "r": case["r"],
        "lora_alpha": case["alpha"],
        "use_rslora": case.get("use_rslora", False),
        "target_modules": case["target_modules"],
        "magix_targets": case["magix_targets"],
        "loss": out.loss.item(),
        "adapters": [magix_name(n) for n in adapters],
        "peft": peft.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "notes": ["every adapter set to random values (A He-uniform, B uniform(-0.05, 0.05))",
                  "eager attention, fp32, lora_dropout 0"],
    }
    with open(os.path.join(case_dir, "lora.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"{case['case']}: loss {out.loss.item():.6f}, {len(adapters)} adapters")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "lora"))
    ap.add_argument("--only", nargs="*", help="case names to (re)write")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    for case in CASES:
        if args.only and case["case"] not in args.only:
            continue
        run(case, args.out)


if __name__ == "__main__":
    main()
