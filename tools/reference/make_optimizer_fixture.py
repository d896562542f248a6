"""Writes tests/fixtures/optimizer/adamw.safetensors: 10 AdamW steps by torch.optim.AdamW.

The update follows optax's adamw as the reference trainer chains it: clip_by_global_norm
(g * max_norm / norm when norm > max_norm), then adamw (bias correction, eps outside the square
root, decoupled weight decay masked off for biases and norms), with the learning rate of update
`count` taken from a warmup-cosine schedule evaluated at count = 0, 1, ...; a step whose gradient
norm is not finite is skipped entirely (apply_if_finite): no change to parameters, moments or
the count. torch.optim.AdamW computes the same update (it decays p by lr*wd before adding the
Adam step; both use the old p).

Run: /work/refenv/bin/python tools/reference/make_optimizer_fixture.py
"""
import json
import math
import pathlib

import torch
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "optimizer"
NAMES = {"model.layers.0.mlp.up_proj.weight": (6, 5),
         "model.layers.0.self_attn.q_proj.bias": (6,),
         "model.layers.0.input_layernorm.weight": (5,)}
STEPS, PEAK, WARMUP, WD, MAX_NORM = 10, 1e-2, 2, 0.1, 1.0
BETAS, EPS = (0.9, 0.999), 1e-8
NONFINITE_STEP = 4


def schedule(count):
    if count < WARMUP:
        return PEAK * count / WARMUP
    t = min(1.0, (count - WARMUP) / (STEPS - WARMUP))
    return PEAK * 0.5 * (1 + math.cos(math.pi * t))


def main():
    torch.manual_seed(0)
    params = {n: torch.randn(s, dtype=torch.float32) for n, s in NAMES.items()}
    out = {f"init.{n}": p.clone() for n, p in params.items()}
    decay = [n for n in NAMES if not (n.endswith("bias") or "norm" in n)]
    no_decay = [n for n in NAMES if n not in decay]
    tp = {n: torch.nn.Parameter(p.clone()) for n, p in params.items()}
    opt = torch.optim.AdamW([{"params": [tp[n] for n in decay], "weight_decay": WD},
                             {"params": [tp[n] for n in no_decay], "weight_decay": 0.0}],
                            lr=0.0, betas=BETAS, eps=EPS)
    count = 0
    lrs, norms = [], []
    for step in range(STEPS):
        grads = {n: torch.randn(s, dtype=torch.float32) * (3.0 if step % 3 == 0 else 0.1)
                 for n, s in NAMES.items()}
        if step == NONFINITE_STEP:
            grads["model.layers.0.self_attn.q_proj.bias"][2] = float("inf")
        for n, g in grads.items():
            out[f"grad.{step}.{n}"] = g.clone()
        norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values()))
        norms.append(norm)
        if not math.isfinite(norm):
            lrs.append(None)
        else:
            lr = schedule(count)
            lrs.append(lr)
            scale = MAX_NORM / norm if norm > MAX_NORM else 1.0
            for n in NAMES:
                tp[n].grad = grads[n] * scale
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            count += 1
        for n in NAMES:
            out[f"param.{step}.{n}"] = tp[n].detach().clone()
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(out, str(OUT / "adamw.safetensors"))
    (OUT / "adamw.json").write_text(json.dumps({
        "torch": torch.__version__, "steps": STEPS, "peak_lr": PEAK, "warmup_steps": WARMUP,
        "weight_decay": WD, "max_grad_norm": MAX_NORM, "betas": BETAS, "eps": EPS,
        "nonfinite_step": NONFINITE_STEP, "lrs": lrs, "grad_norms": [
            n if math.isfinite(n) else None for n in norms],
        "names": list(NAMES)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
