#!/usr/bin/env bash
# Checkpoints restore onto any mesh: a save on 2x2 read back on 1x4, 4x1, 2x2 and 1x1 (no
# launcher) gives every rank's boxes bitwise (llama_gqa; phi3's fused tensors on 1x2, 2x1, 1x1); a 2x1 save with FSDP and replicated tensors writes
# each element once.
# Usage: bash checkpoint_mesh.sh <checkpoint_mesh_probe binary>
set -u
BIN="$1"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
run() {  # run NP ARGS...: mpirun with NP ranks (NP=0: no launcher)
  local np=$1
  shift
  if [ "$np" = 0 ]; then
    timeout 120 "$BIN" "$@"
  else
    timeout 120 mpirun --oversubscribe -np "$np" "$BIN" "$@"
  fi || { echo "FAIL: $*"; fail=1; }
}
run 4 save "$work/ck" 2 2
run 4 restore "$work/ck" 1 4
run 4 restore "$work/ck" 4 1
run 4 restore "$work/ck" 2 2
run 2 restore "$work/ck" 2 1
run 0 restore "$work/ck" 1 1
run 2 once "$work/once"
# phi3's fused qkv_proj / gate_up_proj: each rank saves one box per part.
run 4 save "$work/phi3" 2 2 phi3
run 2 restore "$work/phi3" 1 2 phi3
run 2 restore "$work/phi3" 2 1 phi3
run 0 restore "$work/phi3" 1 1 phi3
exit $fail
