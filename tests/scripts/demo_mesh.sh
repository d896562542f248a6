#!/usr/bin/env bash
# magix demo under mpirun: a short run on meshes 2x1 (data parallel) and 1x2 (tensor parallel)
# follows the single-process run's losses step by step (training is chaotic: float rounding
# differences between meshes grow ~10x per 10 steps, so the run is kept to 30 steps), and the
# held-out answers it writes are those a single-process `magix generate` gives from its
# checkpoint.
# Usage: bash demo_mesh.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

QUICK=(--digits 2 --train_examples 2000 --test_examples 64 --steps 30 --batch_size 32
       --learning_rate 3e-3 --warmup_steps 10 --quiet)
"$MAGIX" demo --work_dir "$WORK/1x1" "${QUICK[@]}" > "$WORK/1x1.txt" 2>&1 \
  || fail "1x1: $(cat "$WORK/1x1.txt")"
for mesh in "2 1" "1 2"; do
  name="${mesh/ /x}"
  mpirun --oversubscribe -np 2 "$MAGIX" demo --work_dir "$WORK/$name" --mesh_shape $mesh \
    "${QUICK[@]}" > "$WORK/$name.txt" 2>&1 || fail "$name: $(cat "$WORK/$name.txt")"
  grep -q "exact match on held-out prompts" "$WORK/$name.txt" || fail "$name printed no accuracy"
  "$MAGIX" generate --model_name_or_path "$WORK/$name/checkpoints/000030" \
    --prompts "$WORK/$name/data/test.jsonl" --use_chat_template --max_new_tokens 4 \
    --output_file "$WORK/$name/again.jsonl" > /dev/null 2>&1 || fail "generate from $name's checkpoint"
  python3 - "$WORK/1x1" "$WORK/$name" <<'PY' || fail "mesh $name differs from 1x1"
import json, sys
a, b = sys.argv[1], sys.argv[2]
ma = [json.loads(l) for l in open(f"{a}/metrics.jsonl")]
mb = [json.loads(l) for l in open(f"{b}/metrics.jsonl")]
assert len(ma) == len(mb) == 30, (len(ma), len(mb))
for x, y in zip(ma, mb):
    assert x["step"] == y["step"] and x["tokens"] == y["tokens"], (x, y)
    assert abs(x["loss"] - y["loss"]) <= 1e-4 * abs(x["loss"]), (x, y)
gen = [json.loads(l) for l in open(f"{b}/generated.jsonl")]
again = [json.loads(l) for l in open(f"{b}/again.jsonl")]
assert gen == again, "the mesh run's answers differ from its checkpoint's on one process"
rep = json.load(open(f"{b}/demo_report.json"))
assert rep["mesh"] == [int(v) for v in b.rsplit("/", 1)[1].split("x")], rep["mesh"]
print(f"{b}: losses follow 1x1 (last {mb[-1]['loss']:.6f} vs {ma[-1]['loss']:.6f}), "
      f"{rep['correct']}/64 correct")
PY
done
echo "demo_mesh: OK"
