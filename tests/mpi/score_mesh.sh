#!/usr/bin/env bash
# magix score --mesh_shape D M under mpirun gives the per-example NLL of one process (and of
# transformers, score_expected.jsonl), for data, model and mixed meshes, with batches that do
# not divide the examples evenly.
# Usage: bash score_mesh.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIX="$2/models/llama_gqa"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$MAGIX" score --model_name_or_path "$FIX" --input "$FIX/score_input.jsonl" \
  --output_file "$work/one.jsonl" --batch_size 1 >/dev/null || { echo "FAIL: 1 process"; exit 1; }
fail=0
for spec in "2 2 1 1" "2 1 2 3" "4 2 2 1" "4 -1 2 2"; do
  set -- $spec
  np=$1 d=$2 m=$3 bs=$4
  out="$work/mesh_${d}x${m}.jsonl"
  if ! timeout 120 mpirun --oversubscribe -np "$np" "$MAGIX" score --model_name_or_path "$FIX" \
      --input "$FIX/score_input.jsonl" --output_file "$out" --batch_size "$bs" \
      --mesh_shape "$d" "$m" >"$work/log" 2>&1; then
    echo "FAIL: mesh $d x $m"; cat "$work/log"; fail=1; continue
  fi
  python3 - "$work/one.jsonl" "$out" "$FIX/score_expected.jsonl" "$d x $m" <<'PY' || fail=1
import json, sys
one, mesh, ref = ([json.loads(l) for l in open(p)] for p in sys.argv[1:4])
assert len(one) == len(mesh) == len(ref), "line counts differ"
for a, b, r in zip(one, mesh, ref):
    assert a["index"] == b["index"] and a["tokens"] == b["tokens"] == r["tokens"], (a, b, r)
    assert abs(a["nll"] - b["nll"]) <= 1e-6 * abs(a["nll"]), ("mesh vs one process", a, b)
    assert abs(b["nll"] - r["nll"]) <= 1e-5 * abs(r["nll"]), ("mesh vs transformers", b, r)
print("mesh", sys.argv[4], "ok:", len(mesh), "examples")
PY
done
# User rules: everything replicated (plain data parallelism) on 2x1 gives the same numbers;
# rules the decoder cannot honour (a row-parallel q_proj on the model axis) are a load-time
# error naming the parameter.
echo '[[".*", []]]' > "$work/replicated.json"
if ! timeout 120 mpirun --oversubscribe -np 2 "$MAGIX" score --model_name_or_path "$FIX" \
    --input "$FIX/score_input.jsonl" --output_file "$work/replicated.jsonl" --mesh_shape 2 1 \
    --partition_rules "$work/replicated.json" >"$work/log" 2>&1; then
  echo "FAIL: replicated rules on 2x1"; cat "$work/log"; fail=1
elif ! python3 -c "
import json, sys
a = [json.loads(l) for l in open('$work/one.jsonl')]
b = [json.loads(l) for l in open('$work/replicated.jsonl')]
assert len(a) == len(b) and all(abs(x['nll'] - y['nll']) <= 1e-6 * abs(x['nll']) for x, y in zip(a, b))
"; then
  echo "FAIL: replicated rules change the numbers"; fail=1
fi
cat > "$work/row_q.json" <<'JSON'
[["q_proj\\.weight$", ["data", "model"]],
 ["(embed_tokens|lm_head)\\.weight$", ["model", "data"]],
 ["(k|v|gate|up)_proj\\.weight$", ["model", "data"]], ["(o|down)_proj\\.weight$", ["data", "model"]]]
JSON
if timeout 120 mpirun --oversubscribe -np 2 "$MAGIX" score --model_name_or_path "$FIX" \
    --input "$FIX/score_input.jsonl" --output_file "$work/rules_out.jsonl" --mesh_shape 1 2 \
    --partition_rules "$work/row_q.json" >"$work/log" 2>&1; then
  echo "FAIL: a row-parallel q_proj was accepted"; fail=1
elif ! grep -q "q_proj.weight" "$work/log"; then
  echo "FAIL: the rules error does not name q_proj"; cat "$work/log"; fail=1
fi

# A mesh the model cannot be split over: a clear error naming the parameter, on every rank.
if timeout 120 mpirun --oversubscribe -np 3 "$MAGIX" score --model_name_or_path "$FIX" \
    --input "$FIX/score_input.jsonl" --output_file "$work/bad.jsonl" --mesh_shape -1 1 \
    >"$work/log" 2>&1; then
  echo "FAIL: a 3x1 mesh was accepted"; fail=1
elif ! grep -q "model.embed_tokens.weight.*does not divide by the 'data' axis (size 3)" "$work/log"; then
  echo "FAIL: 3x1 error does not name the parameter"; cat "$work/log"; fail=1
elif [ -e "$work/bad.jsonl" ]; then
  echo "FAIL: output left behind"; fail=1
fi
exit $fail
