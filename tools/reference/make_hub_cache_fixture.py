"""A sharded bf16 model as transformers saves it, and a check that huggingface_hub's cache layout
(blobs + relative symlinks) built from it is what the real libraries read.

Writes tests/fixtures/models/llama_gqa_sharded_bf16/: the llama_gqa fixture loaded by
transformers, cast to bf16 and saved with save_pretrained(max_shard_size="100KB") (several
model-NNNNN-of-NNNNN.safetensors + model.safetensors.index.json), and score_expected.jsonl: the
per-sequence NLL of llama_gqa/score_input.jsonl under the bf16 weights computed in fp32 (what
`magix score` computes on bf16 weights without --bf16).

Then, in a temporary HF_HOME, it lays the folder out as huggingface_hub's cache does
(models--org--name/blobs/<sha256>, snapshots/<rev>/<file> -> ../../blobs/<sha256>,
refs/main) exactly as tests/scripts/hub_cache.sh does, and checks that huggingface_hub's
scan_cache_dir and try_to_load_from_cache and transformers' from_pretrained(local_files_only)
read it and give the same scores. Usage:

    /work/refenv/bin/python tools/reference/make_hub_cache_fixture.py
"""
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is downloaded: the cache is all there is

import torch
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, "tests", "fixtures", "models", "llama_gqa")
OUT = os.path.join(ROOT, "tests", "fixtures", "models", "llama_gqa_sharded_bf16")


def scores(model):
    out = []
    with open(os.path.join(SRC, "score_input.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    for i, row in enumerate(rows):
        ids = torch.tensor([row["input_ids"]], dtype=torch.int64)
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        logp = torch.log_softmax(logits.double(), dim=-1)[0, :-1, :]
        tgt = ids[0, 1:]
        nll = float(-logp.gather(1, tgt.unsqueeze(-1)).sum())
        n = int(tgt.numel())
        out.append({"index": i, "tokens": n, "nll": nll, "mean_nll": nll / n,
                    "ppl": math.exp(nll / n)})
    return out


def make_cache(folder, hub, repo_id, rev):
    repo = os.path.join(hub, "models--" + repo_id.replace("/", "--"))
    snap = os.path.join(repo, "snapshots", rev)
    os.makedirs(snap)
    os.makedirs(os.path.join(repo, "blobs"))
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(rev)
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        shutil.copyfile(os.path.join(folder, name), os.path.join(repo, "blobs", digest))
        os.symlink(os.path.join("..", "..", "blobs", digest), os.path.join(snap, name))
    return snap


def main():
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(SRC, dtype=torch.float32)
    model = model.to(torch.bfloat16)
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    model.save_pretrained(OUT, max_shard_size="100KB")
    files = sorted(os.listdir(OUT))
    shards = [f for f in files if f.startswith("model-")]
    assert len(shards) >= 3 and "model.safetensors.index.json" in files, files
    # What magix computes without --bf16: the stored bf16 weights, widened, in fp32.
    ref = AutoModelForCausalLM.from_pretrained(OUT, dtype=torch.float32).eval()
    expected = scores(ref)
    with open(os.path.join(OUT, "score_expected.jsonl"), "w") as f:
        for row in expected:
            f.write(json.dumps(row) + "\n")

    from huggingface_hub import scan_cache_dir, try_to_load_from_cache
    with tempfile.TemporaryDirectory() as home:
        hub = os.path.join(home, "hub")
        weights_only = tempfile.mkdtemp(dir=home)
        for name in files:
            if name != "score_expected.jsonl":
                shutil.copyfile(os.path.join(OUT, name), os.path.join(weights_only, name))
        rev = "0123456789abcdef0123456789abcdef01234567"
        snap = make_cache(weights_only, hub, "org/sharded", rev)
        info = scan_cache_dir(hub)
        repos = {r.repo_id: r for r in info.repos}
        assert "org/sharded" in repos and not info.warnings, (repos, info.warnings)
        got = {f.file_name for r in repos["org/sharded"].revisions for f in r.files}
        assert got == set(os.listdir(weights_only)), got
        found = try_to_load_from_cache("org/sharded", "model.safetensors.index.json",
                                       cache_dir=hub)
        assert found == os.path.join(snap, "model.safetensors.index.json"), found
        cached = AutoModelForCausalLM.from_pretrained("org/sharded", cache_dir=hub,
                                                      local_files_only=True,
                                                      dtype=torch.float32).eval()
        again = scores(cached)
        assert again == expected, (again, expected)
    print(f"wrote {OUT}: {len(shards)} shards; the cache layout is read by huggingface_hub "
          f"{__import__('huggingface_hub').__version__} and transformers "
          f"{__import__('transformers').__version__} with identical scores")


if __name__ == "__main__":
    sys.exit(main())
