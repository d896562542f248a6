#!/usr/bin/env python3
"""Encode throughput of HF tokenizers on one thread, the reference for bench/tokenizer.cpp.

    RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
      /work/refenv/bin/python tools/reference/bench_tokenizer.py TOKENIZER [CORPUS.jsonl] [--repeat 100] [--rounds 5]

Same corpus and arithmetic as bench_tokenizer: every text of CORPUS (field "text") encoded on its own
with Tokenizer.encode(text, add_special_tokens=False), repeated --repeat times; MB = UTF-8 bytes / 1e6.
"""
import argparse
import json
import os
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tokenizers import Tokenizer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tokenizer")
    ap.add_argument("corpus", nargs="?", default=os.path.join(HERE, "..", "..", "tests", "fixtures", "tokenizers",
                                                               "llama3.jsonl"))
    ap.add_argument("--repeat", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    path = a.tokenizer
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    t0 = time.perf_counter()
    tok = Tokenizer.from_file(path)
    load_s = time.perf_counter() - t0
    texts = [json.loads(line)["text"] for line in open(a.corpus, encoding="utf-8")]
    nbytes = sum(len(t.encode("utf-8")) for t in texts) * a.repeat
    wall, cpu = [], []
    for _ in range(a.rounds):
        n_ids = 0
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(a.repeat):
            for t in texts:
                n_ids += len(tok.encode(t, add_special_tokens=False).ids)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    wall.sort()
    cpu.sort()
    mb = nbytes / 1e6
    print(f"hf tokenizer={a.tokenizer} corpus={a.corpus} texts={len(texts)} x{a.repeat} bytes={nbytes} "
          f"ids={n_ids} load_s={load_s:.2f}")
    print(f"encode: {mb / wall[len(wall) // 2]:.2f} MB/s wall (median of {a.rounds}), "
          f"{mb / cpu[len(cpu) // 2]:.2f} MB/s per CPU-second, {n_ids / wall[len(wall) // 2]:.0f} ids/s")


if __name__ == "__main__":
    main()
