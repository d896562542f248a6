#!/usr/bin/env bash
# A rank that dies (SIGKILL) or fails with an error must not leave the others hanging: the run
# ends, non-zero, within the time limit, and the output names the failed rank and the operation
# the others were waiting in.
set -u
probe=$1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
fail=0
for mode in kill throw; do
  out=$(timeout 60 mpirun -np 3 --oversubscribe "$probe" "$mode" 1 2>&1)
  rc=$?
  echo "--- $mode (exit $rc)"; echo "$out"
  if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then echo "FAIL: $mode: exit $rc"; fail=1; fi
  echo "$out" | grep -q "all_reduce over the world axis" || { echo "FAIL: $mode: operation not named"; fail=1; }
  if [ "$mode" = throw ]; then
    echo "$out" | grep -q "error on rank 1 of 3: injected failure" || { echo "FAIL: throw: failed rank not named"; fail=1; }
  else
    echo "$out" | grep -Eq "rank 1 .*(exited on signal 9|Killed)|process rank 1 .*signal 9" || { echo "FAIL: kill: failed rank not named"; fail=1; }
  fi
done
exit $fail
