"""Writes tests/fixtures/data/sources/: the same records in every data source magix reads,
written by the real libraries (pyarrow, datasets), for tests/scripts/data_sources_cli.sh and
tests/data/data_source_test.cpp. Each source must give exactly the records of its .jsonl twin.

Run with a Python holding pyarrow==26.0.1 and datasets (scripts/setup.sh's .venv):
    .venv/bin/python tools/reference/make_data_source_fixtures.py
"""
import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "data" / "sources"

datasets.disable_progress_bars()


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def conversations():
    """16 short conversations (messages: list of {role, content}), deterministic."""
    out = []
    for i in range(16):
        a, b = i % 7 + 1, (i * 3) % 5 + 2
        messages = []
        if i % 4 == 0:
            messages.append({"role": "system", "content": "Answer with a number."})
        messages.append({"role": "user", "content": f"What is {a} plus {b}?"})
        messages.append({"role": "assistant", "content": f"{a + b}."})
        if i % 3 == 0:
            messages.append({"role": "user", "content": "And times two?"})
            messages.append({"role": "assistant", "content": f"{2 * (a + b)}, caf\u00e9 \u2713"})
        out.append({"messages": messages, "id": i})
    return out


def hub_snapshot(repo_dir, files, revision):
    """A huggingface_hub cache repository: blobs named by their sha256, snapshot files as
    relative symlinks into blobs/, refs/main naming the snapshot."""
    blobs = repo_dir / "blobs"
    snap = repo_dir / "snapshots" / revision
    blobs.mkdir(parents=True)
    for rel, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blobs / digest, link.parent), link)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)


def parquet_bytes(table, **kwargs):
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **kwargs)
    return sink.getvalue().to_pybytes()


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    corpus = [json.loads(l) for l in open(FIX / "train" / "corpus.jsonl", encoding="utf-8")]
    assert len(corpus) == 48

    # Text: one parquet file with three row groups (pyarrow), its JSONL twin is the corpus itself.
    pq.write_table(pa.Table.from_pylist(corpus), OUT / "corpus.parquet", row_group_size=16)
    # gzip (Python's gzip module) of the same JSONL.
    with gzip.open(OUT / "corpus.jsonl.gz", "wb") as f:
        f.write((FIX / "train" / "corpus.jsonl").read_bytes())
    # datasets' to_json: JSON lines by default (into a .json name), and lines=False (an array).
    ds = datasets.Dataset.from_list(corpus)
    ds.to_json(OUT / "corpus_to_json.json")
    ds.to_json(OUT / "corpus_to_json_array.json", lines=False)

    # A save_to_disk DatasetDict: train = the first 32 records in 2 Arrow files, test = the rest.
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(corpus[:32]),
                               "test": datasets.Dataset.from_list(corpus[32:])})
    dd.save_to_disk(str(OUT / "corpus_dict"), num_shards={"train": 2, "test": 1})
    write_jsonl(OUT / "corpus_test.jsonl", corpus[32:])

    # Conversations: the JSONL twin and datasets' parquet (messages: list<struct<role, content>>).
    conv = conversations()
    write_jsonl(OUT / "conv.jsonl", conv)
    datasets.Dataset.from_list(conv).to_parquet(str(OUT / "conv.parquet"))

    # A hub dataset in a local HF cache: data/train-0000{0,1}-of-00002.parquet (24 records
    # each: together the corpus) and data/test-00000-of-00001.parquet (the conversations), as
    # the hub serves them; blobs + symlinks + refs/main.
    table = pa.Table.from_pylist(corpus)
    hub_snapshot(OUT / "hf_home" / "hub" / "datasets--magix--tiny-corpus",
                 {"README.md": b"---\nlicense: mit\n---\n",
                  "data/train-00000-of-00002.parquet": parquet_bytes(table.slice(0, 24)),
                  "data/train-00001-of-00002.parquet": parquet_bytes(table.slice(24)),
                  "data/test-00000-of-00001.parquet": parquet_bytes(pa.Table.from_pylist(conv))},
                 "5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ff")
    # A config layout: <config>/<split>-*.parquet (config "en": the corpus, "chat": conversations).
    hub_snapshot(OUT / "hf_home" / "hub" / "datasets--magix--tiny-configs",
                 {"en/train-00000-of-00001.parquet": parquet_bytes(table),
                  "chat/train/0000.parquet": parquet_bytes(pa.Table.from_pylist(conv))},
                 "beefbeefbeefbeefbeefbeefbeefbeefbeefbeef")
    print("wrote", OUT)
    print("pyarrow", pa.__version__, "datasets", datasets.__version__)


if __name__ == "__main__":
    main()
