#!/usr/bin/env bash
# Installs every Debian package magix's build, tests and benchmarks need. Idempotent; run as root.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git xz-utils python3
  # GEMM engine, opened with dlopen at run time (docs/kernels.md): OpenBLAS, OpenMP build.
  # The other candidates measured by bench_gemm: BLIS (OpenMP build) and oneDNN.
  libopenblas0-openmp libblis4-openmp libdnnl2
  # bf16 GEMM engine (linked): oneDNN's matmul primitive, headers and CMake config.
  libdnnl-dev
  libopenmpi-dev openmpi-bin
  nlohmann-json3-dev libpcre2-dev libicu-dev libcli11-dev libfmt-dev libxxhash-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "magix: all build dependencies are installed"
