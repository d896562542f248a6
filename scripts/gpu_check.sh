#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one command (docs/gpu.md): builds magix with the CUDA
# backend into build-gpu (only what the checks run), runs the tests labelled `gpu` (the CUDA
# backend against the CPU backend, op by op) and the op-table sweep on the cuda device (every op
# against fp64 references), and writes a log and a JSON summary.
#
# Usage: scripts/gpu_check.sh [OUT_DIR]        (default ./gpu_check_out)
#   MAGIX_GPU_BUILD_DIR=dir   the build folder (default build-gpu)
#   MAGIX_GPU_REUSE_BUILD=1   do not configure or build: run the test binaries already in
#                             $MAGIX_GPU_BUILD_DIR/bin (a build carried from another machine)
# Each step has a time limit (configure 60 s, build 240 s, gpu tests 100 s, sweep 70 s: under
# 8 minutes in all). Exit status 0 when every step passed. OUT_DIR gets gpu_check.log,
# summary.json and the test results (ctest_gpu.xml, sweep_cuda.json, ops_cuda.json).
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(mkdir -p "${1:-gpu_check_out}" && cd "${1:-gpu_check_out}" && pwd)
build=${MAGIX_GPU_BUILD_DIR:-build-gpu}
reuse=${MAGIX_GPU_REUSE_BUILD:-0}
log="$out/gpu_check.log"
: >"$log"
start=$(date +%s)
steps_json=""
failed=0

# run_step NAME TIMEOUT_S CMD...: runs CMD with its output in the log, records status and time.
run_step() {
  local name=$1 limit=$2
  shift 2
  local t0 status rc
  t0=$(date +%s)
  echo "=== $name ($(date -u +%FT%TZ)): $*" >>"$log"
  timeout "$limit" "$@" >>"$log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then status=pass; elif [ $rc -eq 124 ]; then status=timeout; else status=fail; fi
  [ "$status" = pass ] || failed=1
  echo "=== $name: $status (rc $rc, $(( $(date +%s) - t0 )) s)" >>"$log"
  steps_json+="${steps_json:+,}{\"name\":\"$name\",\"status\":\"$status\",\"rc\":$rc,\"seconds\":$(( $(date +%s) - t0 ))}"
}

device="unknown"
if command -v nvidia-smi >/dev/null; then
  device=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
           | head -1 | tr -d '"\\')
  run_step nvidia_smi 30 nvidia-smi
fi
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

if [ "$reuse" != 1 ]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  run_step configure 60 cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DMAGIX_CUDA=ON -DMAGIX_PYTHON=OFF -DMAGIX_BUILD_BENCH=OFF
  run_step build 240 cmake --build "$build" -j "$(nproc)" --target test_backends test_backends_cuda
  # The CUDA backend against the CPU backend (label gpu; skips without a GPU).
  junit=()
  ctest --help 2>/dev/null | grep -q -- --output-junit && junit=(--output-junit "$out/ctest_gpu.xml")
  run_step ctest_gpu 100 ctest --test-dir "$build" -L gpu -j 4 --output-on-failure --timeout 60 \
    "${junit[@]}"
else
  run_step ops_cuda 100 "$build/bin/test_backends_cuda" --gtest_output="json:$out/ops_cuda.json"
fi
# The op-table sweep on the cuda device (every op against fp64 references, error table at the end).
run_step sweep_cuda 70 "$build/bin/test_backends" --gtest_filter='*/cuda' \
  --gtest_output="json:$out/sweep_cuda.json"

ok=true
[ $failed -eq 0 ] || ok=false
cat >"$out/summary.json" <<EOF
{"ok":$ok,"device":"$device","commit":"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)","reused_build":$([ "$reuse" = 1 ] && echo true || echo false),"seconds":$(( $(date +%s) - start )),"steps":[$steps_json]}
EOF
cat "$out/summary.json"
exit $failed
