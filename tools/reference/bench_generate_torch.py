#!/usr/bin/env python3
"""Greedy generation throughput of transformers' LlamaForCausalLM on the CPU, batch 1 with the KV
cache: the PyTorch peer of bench_generate.

    /work/refenv/bin/python tools/reference/bench_generate_torch.py --mode fp32|bf16 \
        [--prompt 128] [--new 32] [--decode_prompt 16] [--reps 3] [--threads 2] [shape flags] [--no-tied]

The default shape is bench_generate's: the ~110M Llama with tied embeddings. Random init (--seed),
random prompt ids. fp32: fp32 weights; bf16: model.to(torch.bfloat16). Under torch.inference_mode,
model.generate(do_sample=False, min_new_tokens=max_new_tokens=n), as bench_generate measures:
  prefill tokens/s = P / time(prompt of P tokens, 1 new token);
  decode  tokens/s = (N - 1) / (time(prompt of --decode_prompt tokens, N new)
                                - time(same prompt, 1 new)),
each time the median of --reps runs after one untimed run. The last line is one JSON object.
"""
import argparse
import json
import statistics
import time

import torch
import transformers

from bench_train_torch import add_shape_args, build_model, machine_info, peak_rss_gib, shape_of


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--prompt", type=int, default=128, help="P: prompt tokens of the prefill")
    ap.add_argument("--new", type=int, default=32, help="N: new tokens of the decode")
    ap.add_argument("--decode_prompt", type=int, default=16, help="prompt tokens before the decode")
    ap.add_argument("--reps", type=int, default=3)
    add_shape_args(ap, tied_default=True)
    a = ap.parse_args()
    if a.new < 2:
        ap.error("--new must be at least 2")
    torch.set_num_threads(a.threads)

    model = build_model(a)
    if a.mode == "bf16":
        model.to(torch.bfloat16)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(a.seed)
    prefill_ids = torch.randint(a.vocab, (1, a.prompt), generator=gen)
    decode_ids = torch.randint(a.vocab, (1, a.decode_prompt), generator=gen)

    def seconds(ids, n):
        """Median wall time of generating n tokens after ids (one untimed run first)."""
        times = []
        for _ in range(a.reps + 1):
            t0 = time.perf_counter()
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 min_new_tokens=n, max_new_tokens=n, pad_token_id=0)
            times.append(time.perf_counter() - t0)
            assert out.shape[1] == ids.shape[1] + n, out.shape
        return statistics.median(times[1:])

    info = machine_info()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {a.threads} threads, "
          f"{info['cpu']}, capability {info['torch_cpu_capability']}")
    print(f"mode {a.mode}: {params / 1e6:.1f}M parameters, batch 1", flush=True)
    with torch.inference_mode():
        prefill_s = seconds(prefill_ids, 1)
        one_s = seconds(decode_ids, 1)
        all_s = seconds(decode_ids, a.new)
    prefill_tps = a.prompt / prefill_s
    decode_step_s = (all_s - one_s) / (a.new - 1)
    print(f"prefill {a.prompt} tokens: {prefill_s:.3f} s, {prefill_tps:.1f} tokens/s")
    print(f"decode {a.new} tokens after {a.decode_prompt}: {1 / decode_step_s:.2f} tokens/s "
          f"({decode_step_s * 1e3:.1f} ms/step), peak RSS {peak_rss_gib():.2f} GiB")
    print(json.dumps({
        "bench": "generate_torch", "mode": a.mode, "torch": torch.__version__,
        "transformers": transformers.__version__, "threads": a.threads, "shape": shape_of(a),
        "params": params, "prompt": a.prompt, "new": a.new, "decode_prompt": a.decode_prompt,
        "reps": a.reps, "prefill_tokens_per_s": prefill_tps, "prefill_s": prefill_s,
        "decode_tokens_per_s": 1 / decode_step_s, "decode_step_ms": decode_step_s * 1e3,
        "peak_rss_gib": peak_rss_gib(), "loadavg": open("/proc/loadavg").read().split()[:3], **info,
    }))


if __name__ == "__main__":
    main()
