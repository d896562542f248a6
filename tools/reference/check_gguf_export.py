"""Does transformers (and the gguf package's reader) load a GGUF file magix exported, with the
logits of the HF folder magix exported from the same step?

    /work/refenv/bin/python tools/reference/check_gguf_export.py HF_DIR FILE.gguf [TEXT ...]

Prints the largest absolute logit difference (GGUF vs HF folder, both loaded by transformers in
fp32), whether the token ids agree, and the tensor types the gguf reader sees.
"""
import os
import sys

import torch
from gguf import GGUFReader
from transformers import AutoModelForCausalLM, AutoTokenizer

hf, path = sys.argv[1], sys.argv[2]
texts = sys.argv[3:] or ["The cat sees a red ball. Then it rests.", "  A small robot, 123 songs\tabout rain!"]
r = GGUFReader(path)
print("gguf reader:", len(r.tensors), "tensors;", sorted({t.tensor_type.name for t in r.tensors}))
d, f = os.path.split(os.path.abspath(path))
tok_g = AutoTokenizer.from_pretrained(d, gguf_file=f)
tok_h = AutoTokenizer.from_pretrained(hf)
m_g = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
m_h = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
worst = 0.0
for t in texts:
    ig, ih = tok_g(t).input_ids, tok_h(t).input_ids
    print("ids equal:", ig == ih)
    with torch.no_grad():
        a = m_g(torch.tensor([ih])).logits
        b = m_h(torch.tensor([ih])).logits
    worst = max(worst, (a - b).abs().max().item())
print(f"max |logit difference| {worst:.3e}; logit scale {b.abs().max().item():.3f}")
