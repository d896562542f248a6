"""Golden per-example NLL of conversations for `magix score --use_chat_template` (and --train_on).

Model: tests/fixtures/models/llama_gqa (fp32). Tokenizer: tests/fixtures/train/gqa_tokenizer with
a ChatML-style chat template added (written to tests/fixtures/score_chat/tokenizer/).

For each conversation of conversations.jsonl, transformers renders the template
(apply_chat_template, tokenize=False, add_generation_prompt=False) and tokenizes the text without
special tokens (the template writes its own), with offsets. The assistant mask is computed here
from the text alone: an assistant turn counts from the end of its header "<|im_start|>assistant\\n"
through its content and the "<|im_end|>" that closes it (what docs/data.md defines for
train_on assistant); a token counts when its character span overlaps a counted span. The NLL of
example i is the sum over positions t >= 1 with mask[t] = 1 of -log softmax(logits[t-1])[ids[t]]
from LlamaForCausalLM in fp32 (train_on all: every t >= 1).

Writes tests/fixtures/score_chat/{tokenizer/,conversations.jsonl,expected.json}.

    /work/refenv/bin/python tools/reference/make_score_chat_fixture.py
"""
import json
import os
import shutil

import torch
import transformers
from transformers import AutoTokenizer, LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "score_chat")
MODEL = os.path.join(ROOT, "tests", "fixtures", "models", "llama_gqa")
TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "train", "gqa_tokenizer")

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

CONVERSATIONS = [
    [{"role": "user", "content": "what is 2 plus 3"},
     {"role": "assistant", "content": "it is 5"}],
    [{"role": "system", "content": "answer briefly"},
     {"role": "user", "content": "name a colour"},
     {"role": "assistant", "content": "blue"},
     {"role": "user", "content": "another one please"},
     {"role": "assistant", "content": "green and then red"}],
    [{"role": "user", "content": "say hello to the world in 12 words or less"},
     {"role": "assistant", "content": "hello world"}],
]


def assistant_spans(text):
    spans, head, end = [], "<|im_start|>assistant\n", "<|im_end|>"
    at = text.find(head)
    while at >= 0:
        begin = at + len(head)
        close = text.index(end, begin) + len(end)
        spans.append((begin, close))
        at = text.find(head, close)
    return spans


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    tok_dir = os.path.join(OUT, "tokenizer")
    os.makedirs(tok_dir, exist_ok=True)
    shutil.copy(os.path.join(TOKENIZER, "tokenizer.json"), tok_dir)
    with open(os.path.join(TOKENIZER, "tokenizer_config.json")) as f:
        config = json.load(f)
    config["chat_template"] = TEMPLATE
    with open(os.path.join(tok_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "conversations.jsonl"), "w") as f:
        for c in CONVERSATIONS:
            f.write(json.dumps({"messages": c}) + "\n")

    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    model = LlamaForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    examples = []
    for c in CONVERSATIONS:
        text = tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=False)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        spans = assistant_spans(text)
        mask = [int(any(b < e and b < se and sb < e for sb, se in spans)) for b, e in offsets]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        nll = [-logp[t - 1, ids[t]].item() for t in range(1, len(ids))]
        examples.append({
            "text": text,
            "ids": ids,
            "assistant_mask": mask,
            "all": {"nll": sum(nll), "tokens": len(nll)},
            "assistant": {"nll": sum(v for v, m in zip(nll, mask[1:]) if m),
                          "tokens": sum(mask[1:])},
        })
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"model": "tests/fixtures/models/llama_gqa",
                   "versions": {"torch": torch.__version__,
                                "transformers": transformers.__version__},
                   "examples": examples}, f, indent=1)
        f.write("\n")
    for e in examples:
        print(e["all"], e["assistant"])


if __name__ == "__main__":
    main()
