#!/usr/bin/env bash
# Two hosts on one machine: two network namespaces joined by a veth pair (10.231.0.1 and .2),
# each with its own host name, and Open MPI launching over TCP between them through an rsh agent
# that runs `ip netns exec`. Compared with the same runs on one host (plain mpirun):
#   - magix train on 2x2 and 4x1 meshes (2 ranks per host): the same per-step losses, gradient
#     norms, learning rates and token counts, exactly; and the two-host run again with every
#     collective blocking (--overlap_comm false): the same numbers too;
#   - magix generate (greedy and sampled) on 2x2: the same output file, byte for byte;
#   - a checkpoint written by the two-host run, resumed on one host: the same continued losses as
#     the uninterrupted one-host run, exactly.
# And the up-front checks: a --checkpoint_dir that host 2 sees as another (private) folder, or a
# --train_file / --prompts that differs on host 2, fail before any step with an error naming host
# 2's ranks. Host 2's private folders are bind mounts made inside its own mount namespace.
# Needs root, `ip netns`, unshare and Open MPI; otherwise it says why and exits 77 (skipped).
# Usage: bash multihost.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# shellcheck source=netns_hosts.sh
. "$(dirname "$0")/netns_hosts.sh"
# on WHERE ARGS...: on_one_host (WHERE=one) or on_two_hosts (WHERE=two).
on() { if [ "$1" = one ]; then shift; on_one_host "$@"; else shift; on_two_hosts "$@"; fi; }

TINY=(--model_config "$FIXTURES/train/tiny_config.json"
      --tokenizer_name "$FIXTURES/tokenizers/trained_bytelevel" --max_length 24
      --learning_rate 1e-2 --weight_decay 0.1 --batch_size 8 --max_steps 4 --progress log)
# field KEY FILE: the values of KEY in a metrics file, as written.
field() { grep -o "\"$1\":[^,}]*" "$2" | cut -d: -f2; }
# same_steps A B WHAT: the per-step numbers of two metrics files are identical.
same_steps() {
  local key
  [ "$(wc -l < "$1")" -eq 4 ] && [ "$(wc -l < "$2")" -eq 4 ] || fail "$3: not 4 metrics lines"
  for key in step loss grad_norm lr tokens input_tokens; do
    [ "$(field "$key" "$1")" = "$(field "$key" "$2")" ] \
      || fail "$3: $key differs: $(field "$key" "$1" | tr '\n' ' ') vs $(field "$key" "$2" | tr '\n' ' ')"
  done
}

# Training: 2x2 (with checkpoints at steps 2 and 4) and 4x1, on one host and over two.
for mesh in "2 2" "4 1"; do
  tag="${mesh/ /x}"
  for where in one two; do
    ckpt=()
    [ "$tag" = 2x2 ] && ckpt=(--checkpoint_dir "$WORK/ckpt_$where" --save_steps 2 --max_to_keep 0)
    on "$where" "$MAGIX" train "${TINY[@]}" --train_file "$FIXTURES/train/corpus.jsonl" \
      --mesh_shape $mesh --metrics_file "$WORK/${tag}_$where.jsonl" "${ckpt[@]}" \
      > "$WORK/out" 2> "$WORK/err" || fail "train $tag on $where host(s): $(cat "$WORK/err")"
  done
  # And over two hosts with every collective blocking (--overlap_comm false; on by default).
  on two "$MAGIX" train "${TINY[@]}" --train_file "$FIXTURES/train/corpus.jsonl" \
    --mesh_shape $mesh --overlap_comm false --metrics_file "$WORK/${tag}_blocking.jsonl" \
    > "$WORK/out" 2> "$WORK/err" || fail "train $tag on two hosts, blocking: $(cat "$WORK/err")"
  same_steps "$WORK/${tag}_one.jsonl" "$WORK/${tag}_two.jsonl" "train $tag, two hosts vs one"
  same_steps "$WORK/${tag}_two.jsonl" "$WORK/${tag}_blocking.jsonl" \
    "train $tag on two hosts, overlapped vs blocking collectives"
  echo "train $tag: two hosts give one host's losses, with and without overlap ($(field loss "$WORK/${tag}_two.jsonl" | tr '\n' ' '))"
done
[ -z "$(ls -A "$WORK/ckpt_two" | grep -v '^0000\|^\.lock$')" ] \
  || fail "the storage probe was left in the checkpoint folder: $(ls -A "$WORK/ckpt_two")"

# Resume on one host from the two-host run's step 2: the uninterrupted one-host run's steps 3-4.
cp -r "$WORK/ckpt_two" "$WORK/resume"
rm -rf "$WORK/resume/000004"
head -n 2 "$WORK/2x2_two.jsonl" > "$WORK/resume.jsonl"
on_one_host "$MAGIX" train "${TINY[@]}" --train_file "$FIXTURES/train/corpus.jsonl" \
  --mesh_shape 2 2 --checkpoint_dir "$WORK/resume" --save_steps 2 --max_to_keep 0 \
  --metrics_file "$WORK/resume.jsonl" > "$WORK/out" 2> "$WORK/err" \
  || fail "resume on one host: $(cat "$WORK/err")"
grep -q "resuming from $WORK/resume/000002" "$WORK/err" || fail "did not resume: $(cat "$WORK/err")"
same_steps "$WORK/2x2_one.jsonl" "$WORK/resume.jsonl" "two-host checkpoint resumed on one host"
echo "resume: a two-host checkpoint continues on one host with the one-host run's losses"

# Generation from the trained step, greedy and sampled.
printf 'Hello world\nThe cat\nA red ball\nxyz\n42 is\n' > "$WORK/prompts.txt"
for mode in greedy sampled; do
  extra=()
  [ "$mode" = sampled ] && extra=(--sample --seed 5 --temperature 1.0)
  for where in one two; do
    on "$where" "$MAGIX" generate --model_name_or_path "$WORK/ckpt_one/000004" \
      --prompts "$WORK/prompts.txt" --max_new_tokens 6 --batch_size 2 --mesh_shape 2 2 \
      --output_file "$WORK/gen_${mode}_$where.jsonl" "${extra[@]}" > "$WORK/out" 2> "$WORK/err" \
      || fail "generate ($mode) on $where host(s): $(cat "$WORK/err")"
  done
  cmp -s "$WORK/gen_${mode}_one.jsonl" "$WORK/gen_${mode}_two.jsonl" \
    || fail "generate ($mode): two hosts differ from one: $(diff "$WORK/gen_${mode}_one.jsonl" "$WORK/gen_${mode}_two.jsonl")"
  echo "generate $mode: two hosts write one host's output ($(wc -l < "$WORK/gen_${mode}_two.jsonl") lines)"
done

# expect_two_host_error WANT... -- ARGS: the two-host run fails, its stderr holds every WANT, and
# no training step ran.
expect_two_host_error() {
  local wants=()
  while [ "$1" != "--" ]; do wants+=("$1"); shift; done
  shift
  if on_two_hosts "$@" > "$WORK/out" 2> "$WORK/err"; then fail "expected an error from: $*"; fi
  for want in "${wants[@]}"; do
    grep -qF -- "$want" "$WORK/err" || fail "stderr of '$*' lacks '$want': $(cat "$WORK/err")"
  done
  ! grep -q "^step [0-9]*/" "$WORK/err" || fail "a step ran before the error: $(cat "$WORK/err")"
}

# A checkpoint folder host 2 sees as a private folder of its own.
mkdir -p "$WORK/ckpt_err" "$WORK/host2_ckpt"
MH_MOUNTS2="$WORK/host2_ckpt=$WORK/ckpt_err"
expect_two_host_error "--checkpoint_dir '$WORK/ckpt_err' is not one folder shared by every host" \
  "rank 0 (host $MH_HOST1) wrote the probe file" "host $MH_HOST2 (ranks 2, 3): does not see it" \
  "checkpoints need storage that all hosts share" -- \
  "$MAGIX" train "${TINY[@]}" --train_file "$FIXTURES/train/corpus.jsonl" --mesh_shape 2 2 \
  --checkpoint_dir "$WORK/ckpt_err" --metrics_file "$WORK/err.jsonl"
[ ! -e "$WORK/err.jsonl" ] || fail "the failed run wrote metrics"
[ -z "$(find "$WORK/ckpt_err" "$WORK/host2_ckpt" -mindepth 1)" ] \
  || fail "the failed run left files: $(find "$WORK/ckpt_err" "$WORK/host2_ckpt" -mindepth 1)"
echo "checkpoint folder not shared: refused before the first step"

# A data file that differs on host 2 (one record fewer), for train and train-lora; prompts too.
mkdir -p "$WORK/data" "$WORK/host2_data"
cp "$FIXTURES/train/corpus.jsonl" "$WORK/data/corpus.jsonl"
sed '$d' "$FIXTURES/train/corpus.jsonl" > "$WORK/host2_data/corpus.jsonl"
cp "$WORK/prompts.txt" "$WORK/data/prompts.txt"
printf 'Hello world\n' > "$WORK/host2_data/prompts.txt"
MH_MOUNTS2="$WORK/host2_data=$WORK/data"
size1=$(stat -c %s "$WORK/data/corpus.jsonl") size2=$(stat -c %s "$WORK/host2_data/corpus.jsonl")
expect_two_host_error "--train_file '$WORK/data/corpus.jsonl' is not the same file on every host" \
  "host $MH_HOST1 (ranks 0, 1): $size1 bytes, XXH3" "host $MH_HOST2 (ranks 2, 3): $size2 bytes" \
  "every host must read identical data" -- \
  "$MAGIX" train "${TINY[@]}" --train_file "$WORK/data/corpus.jsonl" --mesh_shape 4 1
expect_two_host_error "--train_file '$WORK/data/corpus.jsonl' is not the same file on every host" \
  "host $MH_HOST2 (ranks 2, 3): $size2 bytes" -- \
  "$MAGIX" train-lora --model_name "$WORK/ckpt_one/000004" --train_file "$WORK/data/corpus.jsonl" \
  --max_length 24 --batch_size 8 --max_steps 2 --mesh_shape 2 2
expect_two_host_error "--prompts '$WORK/data/prompts.txt' is not the same file on every host" \
  "host $MH_HOST2 (ranks 2, 3): 12 bytes" -- \
  "$MAGIX" generate --model_name_or_path "$WORK/ckpt_one/000004" --prompts "$WORK/data/prompts.txt" \
  --max_new_tokens 2 --mesh_shape 2 2 --output_file "$WORK/gen_err.jsonl"
echo "data differing on host 2: refused before the first step (train, train-lora, generate)"
MH_MOUNTS2=""
echo "multihost: OK"
