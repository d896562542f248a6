#!/usr/bin/env python3
"""Training-step throughput of transformers' LlamaForCausalLM on the CPU: the PyTorch peer of
`magix train` (bench/train_vs_torch.py runs both, interleaved).

    /work/refenv/bin/python tools/reference/bench_train_torch.py --mode fp32|bf16_autocast|bf16 \
        [--threads 2] [--batch 4] [--seq 512] [--steps 5] [--warmup 2] \
        [--hidden 768 --layers 12 --heads 12 --kv_heads 12 --intermediate 2048 --vocab 32000] [--tied]

The default shape is bench_decoder's ~110M Llama, untied. Random init (--seed), random token ids,
labels = input ids. One step as magix train does it: forward with the loss, backward, clip the
global gradient norm to 1.0, torch.optim.AdamW (lr 1e-4, betas (0.9, 0.95), weight decay 0.1),
zero_grad. Modes:
  fp32           fp32 eager;
  bf16_autocast  fp32 weights, forward and loss under torch.autocast("cpu", dtype=torch.bfloat16);
  bf16           weights, gradients and AdamW moments in bf16 (model.to(torch.bfloat16)).
Step time = wall time of the whole step, after --warmup steps; tokens/s = batch * seq / median.
After the timed steps one more step runs with oneDNN's verbose log captured, to count which
oneDNN kernels (e.g. brg_matmul:avx512_core_amx) ran (--no_probe skips it).
Human lines first; the last line is one JSON object.
"""
import argparse
import collections
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

MODES = ("fp32", "bf16_autocast", "bf16")


def add_shape_args(ap, tied_default=False):
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv_heads", type=int, default=12)
    ap.add_argument("--intermediate", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--tied", action=argparse.BooleanOptionalAction, default=tied_default)
    ap.add_argument("--seed", type=int, default=0)


def shape_of(a):
    return {k: getattr(a, k) for k in ("hidden", "layers", "heads", "kv_heads", "intermediate",
                                       "vocab", "tied")}


def build_model(a):
    config = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
                         num_hidden_layers=a.layers, num_attention_heads=a.heads,
                         num_key_value_heads=a.kv_heads, max_position_embeddings=2048,
                         rms_norm_eps=1e-5, tie_word_embeddings=a.tied, bos_token_id=1,
                         eos_token_id=2, attn_implementation="sdpa")
    torch.manual_seed(a.seed)
    return LlamaForCausalLM(config)


def machine_info():
    """The CPU model, its bf16/AMX flags, and what torch says it can use."""
    model, flags = platform.processor(), set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    probe = lambda name: getattr(torch.cpu, name)() if hasattr(torch.cpu, name) else None  # noqa: E731
    return {
        "cpu": model,
        "cpu_flags": sorted(flags & {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16"}),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_avx512_bf16_supported": probe("_is_avx512_bf16_supported"),
        "torch_amx_tile_supported": probe("_is_amx_tile_supported"),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
    }


def onednn_kernels(fn):
    """Runs fn() with oneDNN's verbose log on and returns {"kind impl": executions}."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                fn()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        counts = collections.Counter()
        for line in log:
            fields = line.strip().split(",")
            # onednn_verbose,v1,primitive|ukernel,exec,cpu,<kind>,<impl>,... (a ukernel logs no impl)
            if fields[0] == "onednn_verbose" and "exec" in fields and "cpu" in fields:
                i = fields.index("cpu")
                if i + 2 < len(fields):
                    counts[f"{fields[i + 1]} {fields[i + 2] or 'ukernel'}"] += 1
    return dict(counts.most_common())


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=MODES, default="fp32")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--no_probe", action="store_true", help="skip the oneDNN kernel count")
    add_shape_args(ap)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    model = build_model(a)
    if a.mode == "bf16":
        model.to(torch.bfloat16)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    ids = torch.randint(a.vocab, (a.batch, a.seq), generator=torch.Generator().manual_seed(a.seed))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.mode == "bf16_autocast"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return loss.item()

    info = machine_info()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {a.threads} threads, "
          f"{info['cpu']}, capability {info['torch_cpu_capability']}")
    print(f"mode {a.mode}: {params / 1e6:.1f}M parameters, batch {a.batch} x seq {a.seq}", flush=True)
    step_s, losses = [], []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        losses.append(step())
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            step_s.append(dt)
        print(f"step {i + 1}{' (warm-up)' if i < a.warmup else ''}: {dt:.3f} s, loss {losses[-1]:.4f}",
              flush=True)
    kernels = None if a.no_probe else onednn_kernels(step)

    median = statistics.median(step_s)
    tokens = a.batch * a.seq
    print(f"median {median:.3f} s/step, mean {statistics.mean(step_s):.3f}, "
          f"{tokens / median:.1f} tokens/s, peak RSS {peak_rss_gib():.2f} GiB")
    if kernels is not None:
        print(f"oneDNN kernels in one step: {kernels or 'none'}")
    print(json.dumps({
        "bench": "train_torch", "mode": a.mode, "torch": torch.__version__,
        "transformers": transformers.__version__, "threads": a.threads,
        "shape": shape_of(a), "params": params, "batch": a.batch, "seq": a.seq,
        "warmup": a.warmup, "tokens_per_s": tokens / median, "median_step_s": median,
        "mean_step_s": statistics.mean(step_s), "step_s": step_s, "losses": losses,
        "peak_rss_gib": peak_rss_gib(), "onednn_kernels": kernels,
        "loadavg": open("/proc/loadavg").read().split()[:3], **info,
    }))


if __name__ == "__main__":
    main()
