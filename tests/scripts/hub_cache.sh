#!/usr/bin/env bash
# A sharded bf16 model (saved by transformers) laid out as huggingface_hub's cache does
# (models--ORG--NAME/blobs/<sha256>, snapshots/<rev>/<file> -> ../../blobs/<sha256>, refs/main)
# scores by hub name exactly like its plain folder, and like transformers; --revision picks a
# branch or a commit; a link out of the repository is refused.
# Usage: bash hub_cache.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
MODEL="$FIXTURES/models/llama_gqa_sharded_bf16"
INPUT="$FIXTURES/models/llama_gqa/score_input.jsonl"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# make_cache <hub dir> <org/name> <rev>: the model's files as blobs + relative symlinks.
make_cache() {
  local repo="$1/models--${2/\//--}" rev="$3"
  mkdir -p "$repo/blobs" "$repo/snapshots/$rev" "$repo/refs"
  for path in "$MODEL"/*; do
    local f="${path##*/}" h
    [ "$f" != score_expected.jsonl ] || continue
    h=$(sha256sum "$path" | cut -d' ' -f1)
    cp "$path" "$repo/blobs/$h"
    ln -s "../../blobs/$h" "$repo/snapshots/$rev/$f"
  done
}

compare() {  # compare <got> <want>: same records, nll within 1e-5 relative
  python3 - "$1" "$2" <<'PY' || fail "scores differ: $1 vs $2"
import json, math, sys
got = [json.loads(l) for l in open(sys.argv[1])]
want = [json.loads(l) for l in open(sys.argv[2])]
assert len(got) == len(want) == 4, (len(got), len(want))
for g, w in zip(got, want):
    assert g["index"] == w["index"] and g["tokens"] == w["tokens"], (g, w)
    for k in ("nll", "mean_nll", "ppl"):
        assert math.isclose(g[k], w[k], rel_tol=1e-5), (k, g, w)
PY
}

REV=0123456789abcdef0123456789abcdef01234567
make_cache "$WORK/home/hub" org/sharded "$REV"
echo "$REV" > "$WORK/home/hub/models--org--sharded/refs/main"

"$MAGIX" score --model_name_or_path "$MODEL" --input "$INPUT" --output_file "$WORK/plain.jsonl" \
  > /dev/null || fail "score of the plain folder"
compare "$WORK/plain.jsonl" "$MODEL/score_expected.jsonl"
HF_HOME="$WORK/home" "$MAGIX" score --model_name_or_path org/sharded --input "$INPUT" \
  --output_file "$WORK/hub.jsonl" > /dev/null 2> "$WORK/err" || fail "score by hub name: $(cat "$WORK/err")"
cmp -s "$WORK/plain.jsonl" "$WORK/hub.jsonl" || fail "the hub cache scores differ from the plain folder"

# --revision: a branch of its own, and a commit hash; one that is absent names what is there.
OTHER=fedcba9876543210fedcba9876543210fedcba98
make_cache "$WORK/home/hub" org/sharded "$OTHER"
echo "$OTHER" > "$WORK/home/hub/models--org--sharded/refs/dev"
echo "0000000000000000000000000000000000000000" > "$WORK/home/hub/models--org--sharded/refs/main"
HF_HOME="$WORK/home" "$MAGIX" score --model_name_or_path org/sharded --revision dev --input "$INPUT" \
  --output_file "$WORK/dev.jsonl" > /dev/null 2> "$WORK/err" || fail "--revision dev: $(cat "$WORK/err")"
cmp -s "$WORK/plain.jsonl" "$WORK/dev.jsonl" || fail "--revision dev scores differ"
HF_HOME="$WORK/home" "$MAGIX" score --model_name_or_path org/sharded --revision "$REV" --input "$INPUT" \
  --output_file "$WORK/rev.jsonl" > /dev/null 2> "$WORK/err" || fail "--revision <hash>: $(cat "$WORK/err")"
cmp -s "$WORK/plain.jsonl" "$WORK/rev.jsonl" || fail "--revision <hash> scores differ"
if HF_HOME="$WORK/home" "$MAGIX" score --model_name_or_path org/sharded --revision v9 --input "$INPUT" \
  --output_file "$WORK/v9.jsonl" > /dev/null 2> "$WORK/err"; then fail "an absent revision was accepted"; fi
grep -q "revision 'v9' is not in the local HF cache" "$WORK/err" || fail "message: $(cat "$WORK/err")"
grep -q "dev" "$WORK/err" || fail "the message does not list the refs: $(cat "$WORK/err")"
[ ! -e "$WORK/v9.jsonl" ] || fail "a failed score left its output"
# refs/main names a snapshot that was never downloaded.
if HF_HOME="$WORK/home" "$MAGIX" score --model_name_or_path org/sharded --input "$INPUT" \
  --output_file "$WORK/main.jsonl" > /dev/null 2> "$WORK/err"; then fail "a missing snapshot was accepted"; fi
grep -q "incomplete download" "$WORK/err" || fail "message: $(cat "$WORK/err")"

# A shard link that leaves the repository (into another repository's blobs) is refused.
make_cache "$WORK/home/hub" org/evil "$REV"
SNAP="$WORK/home/hub/models--org--evil/snapshots/$REV"
target=$(readlink "$SNAP/model-00002-of-00003.safetensors")
rm "$SNAP/model-00002-of-00003.safetensors"
ln -s "../../../models--org--sharded/blobs/${target##*/}" "$SNAP/model-00002-of-00003.safetensors"
if HF_HOME="$WORK/home" "$MAGIX" score --model_name_or_path org/evil --input "$INPUT" \
  --output_file "$WORK/evil.jsonl" > /dev/null 2> "$WORK/err"; then fail "an escaping link was accepted"; fi
grep -q "outside the hub cache repository" "$WORK/err" || fail "message: $(cat "$WORK/err")"
echo "hub_cache: OK"
