#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one command (docs/gpu.md): builds magix with the CUDA
# backend into build-gpu (only what the checks run), or runs a bundle built elsewhere
# (scripts/gpu_bundle.sh), and runs:
#   - the tests labelled `gpu`: the CUDA backend against the CPU backend op by op
#     (test_backends_cuda), and tests/gpu (test_gpu: the fixture families' bf16 NLL and gradients
#     against HF, 20 training steps against the CPU, greedy generation against the CPU);
#   - test_gpu_nccl: NCCL collectives of CUDA tensors against the host path, one process (a group
#     of one NCCL rank), and under mpirun -np 2 where 2 GPUs and mpirun are there (NcclTwoRanks);
#   - the op-table sweep on the cuda device (every op against fp64 references);
#   - bench_gpu (train-step tokens/s and MFU of a ~1B Llama, attention TFLOP/s, decode tokens/s),
#     last; its JSON goes into the summary.
# It writes a log and a JSON summary.
#
# Usage: scripts/gpu_check.sh [OUT_DIR]        (default ./gpu_check_out)
#   MAGIX_GPU_BUILD_DIR=dir   the build folder (default build-gpu)
#   MAGIX_GPU_REUSE_BUILD=1   do not configure or build: run the binaries already in
#                             $MAGIX_GPU_BUNDLE/bin (with $MAGIX_GPU_BUNDLE/lib on
#                             LD_LIBRARY_PATH) when MAGIX_GPU_BUNDLE is set, else in
#                             $MAGIX_GPU_BUILD_DIR/bin (a build carried from another machine)
#   MAGIX_GPU_BUNDLE=dir      the bundle of scripts/gpu_bundle.sh (with MAGIX_GPU_REUSE_BUILD=1)
# Each step has a time limit. From a bundle (the way on the lent GPU machines, which cannot build
# magix): nvidia-smi 30 s, unpack 30 s, op parity 80 s, tests/gpu 110 s, NCCL 30 s (and 90 s
# on two ranks where there are 2 GPUs), sweep 70 s, bench 150 s: 500 s (590 s), under 10 minutes. Building here instead adds configure 60 s and build 240 s
# (ctest -L gpu 150 s in place of the two test steps). Exit status 0 when every step passed. OUT_DIR gets gpu_check.log,
# summary.json (with the bench's JSON under "bench") and the test results (ctest_gpu.xml or
# ops_cuda.json and gpu_tests.json, sweep_cuda.json, bench_gpu.out).
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
# With STEP_STDOUT=file, CMD's standard output goes to that file (then into the log too).
run_step() {
  local name=$1 limit=$2
  shift 2
  local t0 status rc
  t0=$(date +%s)
  echo "=== $name ($(date -u +%FT%TZ)): $*" >>"$log"
  if [ -n "${STEP_STDOUT:-}" ]; then
    timeout --kill-after=10 "$limit" "$@" >"$STEP_STDOUT" 2>>"$log"
    rc=$?
    cat "$STEP_STDOUT" >>"$log"
  else
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    rc=$?
  fi
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
# cuBLASLt comes from the machine's CUDA toolkit (the CUDA backend dlopens libcublasLt.so.<major>):
# the toolkit's lib64, else the copy in Python's nvidia-cublas package (PyTorch's).
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ! ls /usr/local/cuda/lib64/libcublasLt.so.* >/dev/null 2>&1 && command -v python3 >/dev/null; then
  pylt=$(python3 - 2>/dev/null <<'PY'
import glob, os, site
for d in site.getsitepackages():
    for f in sorted(glob.glob(os.path.join(d, "nvidia", "**", "libcublasLt.so.*"), recursive=True)):
        print(os.path.dirname(f)); raise SystemExit
PY
)
  [ -n "$pylt" ] && export LD_LIBRARY_PATH="$pylt:$LD_LIBRARY_PATH"
fi
# NCCL (dlopened at the first collective of CUDA tensors over several ranks, libnccl.so.2): the
# library path (the toolkit's lib64 above), else the copy in Python's nvidia-nccl package
# (PyTorch's), passed as MAGIX_NCCL_LIBRARY.
if [ -z "${MAGIX_NCCL_LIBRARY:-}" ] && ! ls /usr/local/cuda/lib64/libnccl.so.2 >/dev/null 2>&1 &&
   command -v python3 >/dev/null; then
  pynccl=$(python3 - 2>/dev/null <<'PY'
import glob, os, site
for d in site.getsitepackages():
    for f in sorted(glob.glob(os.path.join(d, "nvidia", "**", "libnccl.so.2"), recursive=True)):
        print(f); raise SystemExit
PY
)
  [ -n "$pynccl" ] && export MAGIX_NCCL_LIBRARY="$pynccl"
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
bin="$build/bin"
if [ "$reuse" = 1 ] && [ -n "${MAGIX_GPU_BUNDLE:-}" ]; then
  bin="${MAGIX_GPU_BUNDLE%/}/bin"
  # The binaries and libraries travel packed (scripts/gpu_bundle.sh); tar's xz, else Python's.
  if [ ! -d "${MAGIX_GPU_BUNDLE%/}/lib" ]; then
    run_step unpack_bundle 30 bash -c 'tar -C "$1" -xJf "$1/bundle.tar.xz" 2>/dev/null ||
      python3 -c "import sys, tarfile; tarfile.open(sys.argv[1] + \"/bundle.tar.xz\").extractall(sys.argv[1])" "$1"' \
      _ "${MAGIX_GPU_BUNDLE%/}"
  fi
  export LD_LIBRARY_PATH="$(cd "${MAGIX_GPU_BUNDLE%/}/lib" && pwd):$LD_LIBRARY_PATH"
fi
# tests/gpu reads the fixtures of this working tree (the binaries may come from another machine).
export MAGIX_FIXTURES_DIR="$PWD/tests/fixtures"
echo "=== LD_LIBRARY_PATH=$LD_LIBRARY_PATH MAGIX_NCCL_LIBRARY=${MAGIX_NCCL_LIBRARY:-}" >>"$log"

if [ "$reuse" != 1 ]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  run_step configure 60 cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DMAGIX_CUDA=ON -DMAGIX_PYTHON=OFF -DMAGIX_BUILD_BENCH=ON
  run_step build 240 cmake --build "$build" -j "$(nproc)" --target test_backends \
    test_backends_cuda test_gpu test_gpu_nccl bench_gpu
  # Label gpu: the CUDA backend against the CPU backend, and tests/gpu (each on the emulated
  # device and on the GPU; the GPU instances skip without one).
  junit=()
  ctest --help 2>/dev/null | grep -q -- --output-junit && junit=(--output-junit "$out/ctest_gpu.xml")
  run_step ctest_gpu 150 ctest --test-dir "$build" -L gpu -j 4 --output-on-failure --timeout 60 \
    "${junit[@]}"
else
  run_step ops_cuda 80 "$bin/test_backends_cuda" --gtest_output="json:$out/ops_cuda.json"
  run_step gpu_tests 110 "$bin/test_gpu" --gtest_output="json:$out/gpu_tests.json"
  run_step nccl_tests 30 "$bin/test_gpu_nccl" --gtest_output="json:$out/nccl_tests.json"
  gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | wc -l)
  if [ "${gpus:-0}" -ge 2 ] && command -v mpirun >/dev/null; then
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 run_step nccl_2ranks 90 \
      mpirun -np 2 "$bin/test_gpu_nccl" --gtest_filter='NcclTwoRanks.*'
  else
    echo "=== nccl_2ranks: not run (${gpus:-0} GPU(s); needs 2 and mpirun)" >>"$log"
  fi
fi
# The op-table sweep on the cuda device (every op against fp64 references, error table at the end).
run_step sweep_cuda 70 "$bin/test_backends" --gtest_filter='*/cuda' \
  --gtest_output="json:$out/sweep_cuda.json"
# Throughput, last (its JSON, the last JSON line of its output, goes into the summary).
OMP_NUM_THREADS=$(nproc) STEP_STDOUT="$out/bench_gpu.out" run_step bench_gpu 150 \
  "$bin/bench_gpu" --device cuda
# The last JSON line: the whole object, or what a run cut short had measured.
bench_json=$(grep '^{' "$out/bench_gpu.out" 2>/dev/null | tail -n 1)
case "$bench_json" in
  "{"*"}") ;;
  *) bench_json=null ;;
esac

ok=true
[ $failed -eq 0 ] || ok=false
cat >"$out/summary.json" <<EOF
{"ok":$ok,"device":"$device","commit":"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)","reused_build":$([ "$reuse" = 1 ] && echo true || echo false),"seconds":$(( $(date +%s) - start )),"steps":[$steps_json],"bench":$bench_json}
EOF
cat "$out/summary.json"
exit $failed
