"""Golden numbers for 10 steps of `magix train` on tests/fixtures/models/llama_gqa.

A manual fp32 loop with PyTorch reproducing the reference optimizer exactly as optax chains it:
  lr(count)  = optax.warmup_cosine_decay_schedule(0, peak, warmup, decay_steps=total, end=0)
  updates    = optax.clip_by_global_norm(max_norm)   (g * max_norm / ||g|| when ||g|| > max_norm)
               optax.adamw(lr, b1, b2, eps=1e-8, weight_decay, mask=no decay on biases/norms)
                 mu = b1 mu + (1-b1) g ; nu = b2 nu + (1-b2) g^2
                 u  = (mu / (1-b1^t)) / (sqrt(nu / (1-b2^t)) + eps) + wd * p
                 p -= lr * u
Loss: sum of the cross-entropy of counted targets / their count. The data: 4 examples laid out as
magix's DataLoader lays them (rows of max_length + 1 tokens, right-padded; input = row[:-1],
target = row[1:] where both positions are real tokens and the target's loss_mask is 1). The batch
holds every example, so each step sees the same rows (the loader only permutes them).

Run by hand (outputs are committed):
  /work/refenv/bin/python tools/reference/make_train_fixture.py
Writes tests/fixtures/train/reference.json and tests/fixtures/train/reference_final.safetensors.
"""
import json
import math
import pathlib

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "tests/fixtures/models/llama_gqa"
OUT = ROOT / "tests/fixtures/train"

MAX_LENGTH = 16
STEPS = 10
ARGS = dict(learning_rate=1e-2, warmup_ratio=0.2, weight_decay=0.1, adam_beta1=0.9,
            adam_beta2=0.95, adam_eps=1e-8, max_grad_norm=1.0, batch_size=4, max_length=MAX_LENGTH,
            num_epochs=STEPS, seed=42)


def make_examples(rng, vocab):
    lengths = [17, 12, 9, 17]
    examples = []
    for i, n in enumerate(lengths):
        ids = rng.integers(0, vocab, size=n).tolist()
        mask = [1] * n
        if i == 1:
            mask[:5] = [0] * 5  # a prompt whose tokens do not count
        examples.append({"ids": ids, "loss_mask": mask})
    return examples


def batch_of(examples, pad_id=0):
    rows = len(examples)
    L = MAX_LENGTH + 1
    ids = np.full((rows, L), pad_id, dtype=np.int64)
    real = np.zeros((rows, L), dtype=bool)
    lm = np.zeros((rows, L), dtype=bool)
    for r, ex in enumerate(examples):
        n = len(ex["ids"])
        ids[r, :n] = ex["ids"]
        real[r, :n] = True
        lm[r, :n] = np.array(ex["loss_mask"], dtype=bool)
    inputs = ids[:, :-1]
    attention = real[:, :-1]
    counted = real[:, :-1] & real[:, 1:] & lm[:, 1:]
    targets = np.where(counted, ids[:, 1:], -100)
    return (torch.tensor(inputs), torch.tensor(attention.astype(np.int64)),
            torch.tensor(targets))


def lr_at(count, peak, warmup, total):
    if count < warmup:
        return peak * count / warmup
    t = min(1.0, (count - warmup) / (total - warmup))
    return peak * 0.5 * (1.0 + math.cos(math.pi * t))


def decays(name):
    return not name.endswith("bias") and "norm" not in name


def main():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    model.train()
    vocab = model.config.vocab_size
    rng = np.random.default_rng(5)
    examples = make_examples(rng, vocab)
    inputs, attention, targets = batch_of(examples)
    count = int((targets != -100).sum())

    a = ARGS
    total = STEPS
    warmup = int(math.floor(a["warmup_ratio"] * total))
    params = dict(model.named_parameters())
    mu = {n: torch.zeros_like(p) for n, p in params.items()}
    nu = {n: torch.zeros_like(p) for n, p in params.items()}
    losses, norms, lrs = [], [], []
    for step in range(STEPS):
        lr = lr_at(step, a["learning_rate"], warmup, total)
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=inputs, attention_mask=attention).logits
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, vocab), targets.reshape(-1), ignore_index=-100, reduction="sum")
        loss = nll / count
        loss.backward()
        with torch.no_grad():
            g2 = sum(float((p.grad.double() ** 2).sum()) for p in params.values())
            gnorm = math.sqrt(g2)
            scale = a["max_grad_norm"] / gnorm if gnorm > a["max_grad_norm"] else 1.0
            t = step + 1
            b1, b2, eps = a["adam_beta1"], a["adam_beta2"], a["adam_eps"]
            c1, c2 = 1.0 - b1 ** t, 1.0 - b2 ** t
            for n, p in params.items():
                g = p.grad * scale
                mu[n].mul_(b1).add_((1.0 - b1) * g)
                nu[n].mul_(b2).add_((1.0 - b2) * g * g)
                u = (mu[n] / c1) / (torch.sqrt(nu[n] / c2) + eps)
                if decays(n):
                    u = u + a["weight_decay"] * p
                p.sub_(lr * u)
        losses.append(float(loss))
        norms.append(gnorm)
        lrs.append(lr)
        print(f"step {step + 1}: loss {float(loss):.6f} grad_norm {gnorm:.4f} lr {lr:.5f}")

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "reference.json").write_text(json.dumps({
        "what": "10 steps of AdamW (optax semantics) on llama_gqa; tools/reference/make_train_fixture.py",
        "torch": torch.__version__,
        "args": dict(a, warmup_steps=warmup, total_steps=total),
        "examples": examples,
        "counted_targets": count,
        "losses": losses,
        "grad_norms": norms,
        "lrs": lrs,
    }, indent=1) + "\n")
    save_file({n: p.detach().contiguous() for n, p in params.items()},
              str(OUT / "reference_final.safetensors"))


if __name__ == "__main__":
    main()
