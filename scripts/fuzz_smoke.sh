#!/usr/bin/env bash
# Fuzz smoke test: builds every libFuzzer target of `magix_fuzz` with clang (Debug, ASan +
# UBSan) and runs each `fuzz_*` executable for a few seconds on a copy of its seed corpus
# (tests/fuzz/corpus/<name without fuzz_>/) with its dictionary (tests/fuzz/<name>.dict) when
# there is one. Targets are found by name, so a new target needs no change here.
#   scripts/fuzz_smoke.sh [BUILD_DIR]     (default: build-fuzz; FUZZ_SECONDS per target, 15)
# Exit status: 0 all ran clean, 1 a target crashed or broke an invariant (the end of its log is
# printed, the input kept under BUILD_DIR/fuzz-artifacts/), 77 clang++ is absent (ctest: skipped).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build-fuzz}"
mkdir -p "$build"
build="$(cd "$build" && pwd)"  # absolute: the targets run in a temporary folder
seconds="${FUZZ_SECONDS:-15}"

if ! command -v clang++ >/dev/null || ! command -v clang >/dev/null; then
  echo "fuzz_smoke: clang++ not found: skipped"
  exit 77
fi

start=$(date +%s)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DMAGIX_FUZZ=ON -DMAGIX_BUILD_TESTS=OFF \
  -DMAGIX_BUILD_BENCH=OFF >/dev/null
# Only the fuzz targets: they compile the sources they test themselves (not magix_core).
cmake --build "$build" --target magix_fuzz -j "${FUZZ_JOBS:-2}"
echo "fuzz_smoke: built in $(($(date +%s) - start)) s"

work="$(mktemp -d /tmp/fuzz_smoke.XXXXXX)"
trap 'rm -rf "$work"' EXIT
failed=0
found=0
for exe in "$build"/bin/fuzz_*; do
  [[ -x "$exe" && -f "$exe" ]] || continue
  found=$((found + 1))
  target="$(basename "$exe")"
  name="${target#fuzz_}"
  corpus="$work/corpus_$name"  # a copy: the run adds inputs to it
  mkdir -p "$corpus"
  if [[ -d "$root/tests/fuzz/corpus/$name" ]]; then
    cp -r "$root/tests/fuzz/corpus/$name/." "$corpus/"
  fi
  args=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
        -artifact_prefix="$work/$name-")
  if [[ -f "$root/tests/fuzz/$name.dict" ]]; then
    args+=(-dict="$root/tests/fuzz/$name.dict")
  fi
  log="$work/$name.log"
  if (cd "$work" && "$exe" "${args[@]}" "$corpus") >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz_smoke: $target: ok, ${runs:-?} runs in $seconds s"
  else
    failed=1
    echo "fuzz_smoke: $target: FAILED; end of its log:"
    tail -n 60 "$log"
    for crash in "$work/$name"-*; do
      [[ -f "$crash" ]] || continue
      mkdir -p "$build/fuzz-artifacts"
      keep="$build/fuzz-artifacts/$(basename "$crash")"
      cp "$crash" "$keep"
      echo "fuzz_smoke: input kept as $keep (replay: $exe $keep)"
    done
  fi
done
if ((found == 0)); then
  echo "fuzz_smoke: no fuzz_* executable in $build/bin"
  exit 1
fi
echo "fuzz_smoke: $found targets in $(($(date +%s) - start)) s"
exit "$failed"
