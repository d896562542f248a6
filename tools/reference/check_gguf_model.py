"""transformers' view of a GGUF model, for comparing magix's loading of the same file.

    /work/refenv/bin/python tools/reference/check_gguf_model.py FILE.gguf PROMPTS.jsonl OUT.json \
        [--max_new_tokens 30] [--texts TEXTS.jsonl]

Loads FILE with transformers (dequantized to fp32), and writes OUT.json: for each prompt (the
"prompt" field, wrapped as a user turn of the file's chat template with the generation prompt)
the prompt ids and the greedy continuation ids; for each text of TEXTS (the "text" field) its
token ids and the model's NLL of the text (mean over its predicted tokens).
"""
import argparse
import json
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("prompts")
    ap.add_argument("out")
    ap.add_argument("--max_new_tokens", type=int, default=30)
    ap.add_argument("--texts")
    args = ap.parse_args()
    torch.set_num_threads(2)
    d, f = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    out = {"prompts": [], "texts": []}
    for line in open(args.prompts):
        prompt = json.loads(line)["prompt"]
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            # An explicit mask: chat prompts can hold the pad id, which transformers would mask.
            g = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=args.max_new_tokens,
                               do_sample=False)
        new = g[0, len(ids):].tolist()
        out["prompts"].append({"prompt": prompt, "prompt_ids": ids, "generated_ids": new,
                               "generated": tok.decode(new, skip_special_tokens=True)})
    if args.texts:
        for line in open(args.texts):
            text = json.loads(line)["text"]
            ids = tok(text).input_ids
            x = torch.tensor([ids])
            with torch.no_grad():
                logits = model(x).logits[0, :-1].double()
            nll = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="mean").item()
            out["texts"].append({"text": text, "ids": ids, "nll": nll})
    json.dump(out, open(args.out, "w"), indent=1)
    print(json.dumps(out)[:2000])


if __name__ == "__main__":
    main()
