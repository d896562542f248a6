#!/usr/bin/env python3
"""Training throughput of `magix train` against PyTorch (transformers' LlamaForCausalLM), the two
run alternately on the same shape, thread count and batch.

    /work/refenv/bin/python bench/train_vs_torch.py [--rounds 3] [--steps 5] [--warmup 2] \
        [--threads 2] [--batch 4] [--seq 512] [--magix_modes fp32,bf16] \
        [--torch_modes fp32,bf16_autocast] [--tokenizer ../shared/tokenizers/mistral] \
        [--hidden 768 --layers 12 --heads 12 --kv_heads 12 --intermediate 2048 --vocab 32000] [--tied]

Each round runs every magix mode and every torch mode once, alternating (magix fp32, torch fp32,
magix bf16, torch bf16_autocast, ...), each in its own process with OMP_NUM_THREADS = --threads.
  magix: `build/bin/magix train --model_config` (random init) on deterministic synthetic text,
         --pack, rows of seq + 1 tokens (every row full: seq targets), constant lr 1e-4, AdamW
         betas (0.9, 0.95), weight decay 0.1, clip 1.0; modes fp32, bf16 (--bf16),
         bf16_weights (--bf16_model_weights). Step time = tokens / tokens_per_s of the metrics
         file's line for the step (the step's wall time).
  torch: tools/reference/bench_train_torch.py --mode fp32|bf16_autocast|bf16 (the same step).
Both skip --warmup steps and time --steps steps. Per mode: the median over all timed steps of all
rounds; tokens/s = batch * seq / median; peak RSS = the child's ru_maxrss (wait4). Ratios are of
tokens/s (> 1: magix is faster). The last line of the output is one JSON object.
Standard library only; run it with the reference venv's python (it runs the torch side with
sys.executable unless --python is given).
"""
import argparse
import itertools
import json
import lzma
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_SCRIPT = os.path.join(ROOT, "tools", "reference", "bench_train_torch.py")
MAGIX_FLAGS = {"fp32": [], "bf16": ["--bf16"], "bf16_weights": ["--bf16_model_weights"]}
TORCH_MODES = ("fp32", "bf16_autocast", "bf16")
SHAPE = ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab")
WORDS = ("the model reads every token of a long text and learns which word comes next while the "
         "optimizer moves its weights a little after each batch of rows on two cores of a small "
         "machine river stone garden window quiet number seven after before under across").split()


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--magix_modes", default="fp32,bf16")
    ap.add_argument("--torch_modes", default="fp32,bf16_autocast")
    ap.add_argument("--magix", default=os.path.join(ROOT, "build", "bin", "magix"))
    ap.add_argument("--python", default=sys.executable, help="python of the reference venv")
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "..", "shared", "tokenizers", "mistral"),
                    help="folder with tokenizer.json(.xz) and tokenizer_config.json")
    ap.add_argument("--work_dir", help="keep the config, data and logs here (default: a temporary folder)")
    for name, default in zip(SHAPE, (768, 12, 12, 12, 2048, 32000)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--tied", action="store_true")
    a = ap.parse_args()
    a.magix_modes = [m for m in a.magix_modes.split(",") if m]
    a.torch_modes = [m for m in a.torch_modes.split(",") if m]
    for m in a.magix_modes:
        if m not in MAGIX_FLAGS:
            ap.error(f"unknown magix mode {m!r} (one of {', '.join(MAGIX_FLAGS)})")
    for m in a.torch_modes:
        if m not in TORCH_MODES:
            ap.error(f"unknown torch mode {m!r} (one of {', '.join(TORCH_MODES)})")
    return a


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def prepare(a, work):
    """Writes work/model (config.json, tokenizer files) and work/data.jsonl; returns their paths."""
    model_dir = os.path.join(work, "model")
    os.makedirs(model_dir, exist_ok=True)
    tok_json = os.path.join(model_dir, "tokenizer.json")
    src = os.path.join(a.tokenizer, "tokenizer.json")
    if os.path.exists(src):
        shutil.copyfile(src, tok_json)
    elif os.path.exists(src + ".xz"):
        with lzma.open(src + ".xz") as f, open(tok_json, "wb") as out:
            shutil.copyfileobj(f, out)
    else:
        sys.exit(f"no tokenizer.json(.xz) in {a.tokenizer}: pass --tokenizer")
    shutil.copyfile(os.path.join(a.tokenizer, "tokenizer_config.json"),
                    os.path.join(model_dir, "tokenizer_config.json"))
    with open(tok_json, encoding="utf-8") as f:
        tok = json.load(f)
    ids = set(tok["model"]["vocab"].values()) | {t["id"] for t in tok.get("added_tokens", [])}
    if a.vocab < max(ids) + 1:
        sys.exit(f"the tokenizer has ids up to {max(ids)}: pass --vocab {max(ids) + 1} or more")
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "dtype": "float32",
        "vocab_size": a.vocab, "hidden_size": a.hidden, "intermediate_size": a.intermediate,
        "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads, "head_dim": a.hidden // a.heads, "hidden_act": "silu",
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "initializer_range": 0.02,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
        "tie_word_embeddings": a.tied, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None,
        "use_cache": True,
    }
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    # One example per row: 2 * seq words are well over seq + 1 tokens, so each example is cut to
    # exactly one full row.
    rng = random.Random(0)
    data = os.path.join(work, "data.jsonl")
    with open(data, "w") as f:
        for _ in range((a.warmup + a.steps) * a.batch):
            f.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(2 * a.seq))}) + "\n")
    return model_dir, data


def run(cmd, env, log_path):
    """Runs cmd with its output in log_path; returns (exit code, peak RSS in GiB, output)."""
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    with open(log_path) as f:
        return p.returncode, usage.ru_maxrss / 2**20, f.read()


def run_magix(a, mode, model_dir, data, work, tag):
    metrics = os.path.join(work, f"{tag}.metrics.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)
    cmd = [a.magix, "train", "--model_config", os.path.join(model_dir, "config.json"),
           "--tokenizer_name", model_dir, "--train_file", data, "--max_length", str(a.seq),
           "--batch_size", str(a.batch), "--pack", "--max_steps", str(a.warmup + a.steps),
           "--learning_rate", "1e-4", "--lr_schedule", "constant", "--warmup_ratio", "0",
           "--weight_decay", "0.1", "--adam_beta2", "0.95", "--max_grad_norm", "1.0",
           "--seed", "0", "--progress", "none", "--metrics_file", metrics] + MAGIX_FLAGS[mode]
    rc, rss, out = run(cmd, {"OMP_NUM_THREADS": str(a.threads)}, os.path.join(work, f"{tag}.log"))
    if rc != 0:
        return {"error": out.strip().splitlines()[-1] if out.strip() else f"exit code {rc}", "log": out}
    with open(metrics) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    timed = lines[a.warmup:]
    return {"step_s": [m["tokens"] / m["tokens_per_s"] for m in timed],
            "tokens_per_step": sorted({m["tokens"] for m in lines}),
            "losses": [m["loss"] for m in lines], "peak_rss_gib": rss}


def run_torch(a, mode, work, tag, probe):
    cmd = [a.python, TORCH_SCRIPT, "--mode", mode, "--threads", str(a.threads), "--batch", str(a.batch),
           "--seq", str(a.seq), "--steps", str(a.steps), "--warmup", str(a.warmup)]
    cmd += [f"--{name}={getattr(a, name)}" for name in SHAPE] + ["--tied" if a.tied else "--no-tied"]
    cmd += [] if probe else ["--no_probe"]
    rc, rss, out = run(cmd, {"OMP_NUM_THREADS": str(a.threads)}, os.path.join(work, f"{tag}.log"))
    if rc != 0:
        return {"error": out.strip().splitlines()[-1] if out.strip() else f"exit code {rc}", "log": out}
    report = json.loads(out.strip().splitlines()[-1])
    return {"step_s": report["step_s"], "losses": report["losses"], "peak_rss_gib": rss, "report": report}


def main():
    a = parse_args()
    work = a.work_dir or tempfile.mkdtemp(prefix="train_vs_torch.")
    os.makedirs(work, exist_ok=True)
    model_dir, data = prepare(a, work)
    tokens = a.batch * a.seq
    print(f"shape {', '.join(f'{n} {getattr(a, n)}' for n in SHAPE)}, tied {a.tied}; batch {a.batch} x seq "
          f"{a.seq}; {a.threads} threads; {a.rounds} rounds of {a.warmup} + {a.steps} steps; work dir {work}")
    load_start = loadavg()
    print(f"load average at start: {load_start}", flush=True)

    order = [r for pair in itertools.zip_longest([("magix", m) for m in a.magix_modes],
                                                 [("torch", m) for m in a.torch_modes]) for r in pair if r]
    steps = {f"{s}_{m}": [] for s, m in order}
    rss, rounds, failed, rejected, torch_report = {}, {k: [] for k in steps}, {}, {}, {}
    for r in range(a.rounds):
        for system, mode in order:
            key = f"{system}_{mode}"
            if key in failed or key in rejected:
                continue
            tag = f"round{r + 1}.{key}"
            if system == "magix":
                res = run_magix(a, mode, model_dir, data, work, tag)
            else:
                res = run_torch(a, mode, work, tag, probe=(r == 0))
            if "error" in res:
                flag = " ".join(MAGIX_FLAGS[mode]) if system == "magix" else ""
                said = [line for line in res["log"].splitlines() if flag and flag in line and "expected" in line]
                if said:  # CLI11: "The following argument was not expected: --bf16"
                    rejected[key] = said[0].strip()
                    print(f"{key}: this magix binary rejects {flag} ({rejected[key]}); "
                          "the other modes go on without it", flush=True)
                else:
                    failed[key] = res["error"]
                    print(f"{key}: FAILED ({res['error']}); log in {work}/{tag}.log", flush=True)
                continue
            if system == "magix" and res["tokens_per_step"] != [tokens]:
                failed[key] = f"tokens per step {res['tokens_per_step']}, not batch * seq = {tokens}"
                print(f"{key}: FAILED ({failed[key]})", flush=True)
                continue
            if "report" in res and res["report"].get("onednn_kernels") is not None:
                torch_report[key] = res["report"]
            steps[key] += res["step_s"]
            rounds[key].append(statistics.median(res["step_s"]))
            rss[key] = max(rss.get(key, 0.0), res["peak_rss_gib"])
            print(f"round {r + 1} {key}: median {rounds[key][-1]:.3f} s/step "
                  f"({tokens / rounds[key][-1]:.1f} tokens/s), losses {res['losses'][0]:.3f}.."
                  f"{res['losses'][-1]:.3f}, peak RSS {res['peak_rss_gib']:.2f} GiB, load {loadavg()}",
                  flush=True)

    results = {}
    for key, s in steps.items():
        if s:
            med = statistics.median(s)
            results[key] = {"median_step_s": med, "tokens_per_s": tokens / med, "steps": len(s),
                            "round_medians_s": rounds[key], "peak_rss_gib": rss[key]}
    ratios = {f"{m}/{t}": results[m]["tokens_per_s"] / results[t]["tokens_per_s"]
              for m in results if m.startswith("magix_") for t in results if t.startswith("torch_")}

    print(f"\n{'run':<22} {'s/step':>8} {'tokens/s':>9} {'peak RSS GiB':>13} {'steps':>6}")
    for key, res in results.items():
        print(f"{key:<22} {res['median_step_s']:>8.3f} {res['tokens_per_s']:>9.1f} "
              f"{res['peak_rss_gib']:>13.2f} {res['steps']:>6}")
    for key, why in {**rejected, **failed}.items():
        print(f"{key:<22} not measured: {why}")
    for name, value in ratios.items():
        print(f"tokens/s {name}: {value:.3f}")
    for key, report in torch_report.items():
        print(f"{key} oneDNN kernels in one step: {report['onednn_kernels'] or 'none'}")
    load_end = loadavg()
    print(f"load average at end: {load_end}")
    first = next(iter(torch_report.values()), {})
    print(json.dumps({
        "bench": "train_vs_torch", "shape": {n: getattr(a, n) for n in SHAPE} | {"tied": a.tied},
        "batch": a.batch, "seq": a.seq, "threads": a.threads, "rounds": a.rounds, "steps": a.steps,
        "warmup": a.warmup, "results": results, "ratios": ratios, "rejected": rejected,
        "failed": failed, "torch": first.get("torch"), "cpu": first.get("cpu"),
        "torch_cpu_capability": first.get("torch_cpu_capability"),
        "onednn_kernels": {k: v["onednn_kernels"] for k, v in torch_report.items()},
        "loadavg_start": load_start, "loadavg_end": load_end, "work_dir": work,
    }))
    if not a.work_dir and not failed:
        shutil.rmtree(work)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
