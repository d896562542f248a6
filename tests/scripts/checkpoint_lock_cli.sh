#!/usr/bin/env bash
# The lock on a checkpoint dir: while another process holds it (here flock(1), with the content
# a magix run writes), `magix train` and `magix train-lora` on that --checkpoint_dir are refused
# at once, naming the holder's pid and host, and so are all the ranks of an mpirun (no hang);
# once the holder is gone its stale lock file does not block.
# Usage: bash checkpoint_lock_cli.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
export OMP_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
WORK="$(mktemp -d)"
HOLDER=""
trap '[ -n "$HOLDER" ] && kill "$HOLDER" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
TINY=(--model_config "$FIXTURES/train/tiny_config.json"
      --tokenizer_name "$FIXTURES/tokenizers/trained_bytelevel"
      --train_file "$FIXTURES/train/corpus.jsonl" --max_length 24 --learning_rate 1e-2
      --batch_size 8 --max_steps 2 --checkpoint_dir "$WORK/ckpt")
command -v flock > /dev/null || { echo "checkpoint_lock_cli: flock(1) missing, skipped"; exit 0; }

mkdir "$WORK/ckpt"
( exec 9> "$WORK/ckpt/.lock"; flock -x 9; echo "pid $BASHPID host lock-test-host since 0" >&9
  touch "$WORK/ready"; exec sleep 120 ) &
HOLDER=$!
for _ in $(seq 100); do [ -e "$WORK/ready" ] && break; sleep 0.1; done
[ -e "$WORK/ready" ] || fail "the holder did not take the lock"

WANT="is in use by another run (pid $HOLDER host lock-test-host"
for cmd in train train-lora; do
  start=$(date +%s)
  if timeout 60 "$MAGIX" $cmd "${TINY[@]}" > "$WORK/stdout" 2> "$WORK/stderr"; then
    fail "$cmd ran while the checkpoint dir was locked"
  fi
  grep -qF -- "$WANT" "$WORK/stderr" || fail "$cmd: stderr lacks '$WANT': $(cat "$WORK/stderr")"
  [ $(( $(date +%s) - start )) -lt 30 ] || fail "$cmd was not refused at once"
done
if command -v mpirun > /dev/null; then
  timeout 120 mpirun -np 2 --oversubscribe "$MAGIX" train "${TINY[@]}" --mesh_shape 2 1 \
    > "$WORK/stdout" 2> "$WORK/stderr"
  rc=$?
  [ $rc -ne 0 ] || fail "mpirun train ran while the checkpoint dir was locked"
  [ $rc -ne 124 ] || fail "mpirun train hung on a locked checkpoint dir"
  grep -qF -- "$WANT" "$WORK/stderr" || fail "mpirun: stderr lacks '$WANT': $(cat "$WORK/stderr")"
fi
[ -z "$(ls "$WORK/ckpt")" ] || fail "a refused run wrote into the dir: $(ls "$WORK/ckpt")"

# The holder dies (as a killed run would): its lock file stays, stale, and blocks nothing.
kill "$HOLDER"; wait "$HOLDER" 2>/dev/null; HOLDER=""
[ -e "$WORK/ckpt/.lock" ] || fail "the lock file vanished"
"$MAGIX" train "${TINY[@]}" > "$WORK/stdout" 2> "$WORK/stderr" \
  || fail "a stale lock file blocked the run: $(cat "$WORK/stderr")"
grep -q "^pid [0-9]* host " "$WORK/ckpt/.lock" || fail "lock file content: $(cat "$WORK/ckpt/.lock")"
echo "checkpoint_lock_cli: OK"
