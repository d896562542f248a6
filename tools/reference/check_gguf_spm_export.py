"""Does transformers (and the gguf package's reader) load the GGUF files magix writes for the
families of tests/fixtures/gguf_spm, with the logits and token ids of the fixtures?

    /work/refenv/bin/python tools/reference/check_gguf_spm_export.py DIR

DIR holds <family>.gguf as magix wrote them from tests/fixtures/gguf_spm/tiny_<family>.gguf
(write_gguf_model, f32; GgufSpm.ExportRoundTrip writes them to a temporary folder). Prints, per
family, the largest logit difference against expected.safetensors and whether the token ids of
expected.json agree. transformers 5 reads no `gemma` architecture and no llama rope scaling from
GGUF: those two are read with the gguf package only.
"""
import json
import os
import sys

import torch
from gguf import GGUFReader
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

d = sys.argv[1]
fixtures = "tests/fixtures/gguf_spm"
expected = json.load(open(os.path.join(fixtures, "expected.json")))
logits = load_file(os.path.join(fixtures, "expected.safetensors"))
for family, m in expected["models"].items():
    f = family + ".gguf"
    r = GGUFReader(os.path.join(d, f))
    line = f"{family}: gguf reader {len(r.tensors)} tensors"
    if family in ("gemma", "llama_yarn"):
        print(line + " (transformers cannot read this one as written)")
        continue
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    worst = 0.0
    for i, ids in enumerate(m["ids"]):
        with torch.no_grad():
            out = model(torch.tensor([ids])).logits[0]
        worst = max(worst, (out - logits[f"logits.{family}.{i}"]).abs().max().item())
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    same = all(tok(t["text"]).input_ids == t["ids"] for t in expected["tokenizers"][m["file"]])
    print(f"{line}; transformers: max |logit difference| {worst:.3e}; token ids equal: {same}")
