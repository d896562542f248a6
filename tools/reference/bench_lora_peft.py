"""The peer of bench/lora.cpp: LoRA training steps with PyTorch + PEFT on the same Llama shape.

A transformers LlamaForCausalLM of the shape (random init), peft.get_peft_model with
LoraConfig(r, target_modules q, k, v, o, gate, up, down_proj), AdamW on the adapters, the same
batch size and length; one warm-up step, then timed steps. Modes: fp32 (weights and compute), and
bf16 (weights in bf16, the adapters fp32, steps under torch.autocast("cpu", torch.bfloat16)).
Prints one JSON line (tokens_per_s, peak_rss_gib, load averages).

    OMP_NUM_THREADS=2 /work/refenv/bin/python tools/reference/bench_lora_peft.py --mode bf16
"""

import argparse
import json
import resource
import time

import torch
import transformers
import peft

SHAPES = {
    "tinyllama-1.1b": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, intermediate_size=5632, vocab_size=32000),
    "mistral-7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, intermediate_size=14336, vocab_size=32000),
}


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().strip()


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024.0 * 1024.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="tinyllama-1.1b", choices=sorted(SHAPES))
    ap.add_argument("--mode", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_start = loadavg()
    shape = dict(SHAPES[args.shape])
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    config = transformers.LlamaConfig(**shape, max_position_embeddings=max(2048, args.seq),
                                      rms_norm_eps=1e-5, tie_word_embeddings=False)
    t0 = time.time()
    dtype = torch.bfloat16 if args.mode == "bf16" else torch.float32
    # Built in its final dtype (no fp32 copy of a bf16 model).
    torch.set_default_dtype(dtype)
    model = transformers.LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    lora = peft.LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0,
                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                           "up_proj", "down_proj"], task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:  # adapters in fp32 (as PEFT's autocast_adapter_dtype does)
        p.data = p.data.float()
    n_params = sum(p.numel() for p in model.parameters())
    n_adapter = sum(p.numel() for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    init_s = time.time() - t0
    g = torch.Generator().manual_seed(99)
    ids = torch.randint(0, shape["vocab_size"], (args.batch, args.seq + 1), generator=g)
    inputs, labels = ids[:, :-1], ids[:, 1:]
    times, cpu_times = [], []
    model.train()
    for step in range(args.steps):
        ts, cs = time.time(), time.process_time()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.mode == "bf16"):
            logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                 labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        dt, dc = time.time() - ts, time.process_time() - cs
        times.append(dt)
        cpu_times.append(dc)
        print(f"step {step + 1}: loss {loss.item():.4f} {dt:.2f} s (CPU {dc:.2f} s) "
              f"{args.batch * args.seq / dt:.1f} tokens/s load {loadavg()}", flush=True)
    timed = times[1:] if len(times) > 1 else times
    timed_cpu = cpu_times[1:] if len(cpu_times) > 1 else cpu_times
    tokens = args.batch * args.seq
    print(json.dumps({
        "bench": "lora_peft", "shape": args.shape, "mode": args.mode, "threads": args.threads,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "batch": args.batch, "seq": args.seq, "rank": args.rank,
        "params": n_params, "adapter_params": n_adapter, "init_s": init_s,
        "step_times": times, "s_per_step": sum(timed) / len(timed),
        "cpu_s_per_step": sum(timed_cpu) / len(timed_cpu),
        "tokens_per_s": tokens * len(timed) / sum(timed), "peak_rss_gib": peak_rss_gib(),
        "load_average_start": load_start, "load_average_end": loadavg()}))


if __name__ == "__main__":
    main()
