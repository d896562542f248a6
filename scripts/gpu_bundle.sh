#!/usr/bin/env bash
# Builds, on this machine, the binaries of the GPU check (scripts/gpu_check.sh) with the CUDA
# backend, and collects them with the shared libraries a GPU machine would lack into one folder,
# so that the check runs there without building (docs/gpu.md, "Running from a bundle"):
#
#   scripts/gpu_bundle.sh [BUNDLE_DIR]            (default gpu_bundle, git-ignored)
#   MAGIX_GPU_BUILD_DIR=dir                       the build folder (default build-gpu)
#
# then on the GPU machine, from the repository root (the fixtures travel with the working tree):
#
#   MAGIX_GPU_REUSE_BUILD=1 MAGIX_GPU_BUNDLE=gpu_bundle scripts/gpu_check.sh
#
# BUNDLE_DIR/bundle.tar.xz (xz: the binaries, ICU's data, oneDNN and OpenBLAS are 190 MiB
# unpacked) holds bin/: test_backends, test_backends_cuda, test_gpu, test_gpu_nccl and bench_gpu
# (stripped), and lib/: every library
# `ldd` resolves for them, and OpenBLAS (which the CPU backend dlopens, as libopenblas.so.0 from
# the library path when the Debian path is absent) with its own dependencies, except those the
# GPU machine has itself: glibc (libc, libm, libdl, librt, libpthread, the loader), the
# compiler's runtime (libstdc++, libgcc_s), the driver (libcuda) and cuBLAS (libcublas,
# libcublasLt: the CUDA backend dlopens libcublasLt.so.<major> from the GPU machine's toolkit,
# src/backends/cuda/cublaslt_library.cpp). libcudart is carried (under 1 MiB). NCCL is not
# carried either: libnccl.so.2 is 208 MiB (NCCL 2.28, CUDA 13.0), over the 64 MiB a working tree
# may carry, and magix dlopens it (it is not in ldd's list); gpu_check.sh finds the GPU machine's
# own (the toolkit's lib64, or PyTorch's nvidia-nccl wheel through MAGIX_NCCL_LIBRARY). gpu_check.sh
# unpacks bundle.tar.xz into BUNDLE_DIR. BUNDLE_DIR/manifest.txt lists each file and its
# unpacked size. Fails when the bundle and the repository's tracked files together are over
# 64 MiB (what a working tree may carry to a lent GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=${1:-gpu_bundle}
build=${MAGIX_GPU_BUILD_DIR:-build-gpu}
limit_mib=64
targets=(test_backends test_backends_cuda test_gpu test_gpu_nccl bench_gpu)

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DMAGIX_CUDA=ON \
  -DMAGIX_PYTHON=OFF -DMAGIX_BUILD_BENCH=ON >/dev/null
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib"
openblas=${MAGIX_BLAS_LIBRARY:-/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0}
for t in "${targets[@]}"; do
  cp "$build/bin/$t" "$bundle/bin/"
  strip --strip-unneeded "$bundle/bin/$t"
done

# Libraries the GPU machine provides itself (by file name).
provided='^(libc|libm|libdl|librt|libpthread|libutil|libresolv|ld-linux-x86-64|linux-vdso|libstdc\+\+|libgcc_s|libcuda|libcublas|libcublasLt)\.so'
declare -A seen=()
collect() {  # collect FILE: the libraries FILE needs (ldd: the whole closure)
  while read -r name path; do
    [ -n "$path" ] || continue
    if [[ "$name" =~ $provided ]] || [ -n "${seen[$name]:-}" ]; then continue; fi
    seen[$name]=1
    cp -L "$path" "$bundle/lib/$name"
  done < <(ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
}
for t in "${targets[@]}"; do collect "$build/bin/$t"; done
cp -L "$openblas" "$bundle/lib/libopenblas.so.0"
collect "$openblas"
# Nothing unresolved here (a library missing on this machine would be missing there too).
if ldd "$bundle"/bin/* | grep -q 'not found'; then
  ldd "$bundle"/bin/* | grep 'not found' >&2
  echo "gpu_bundle: unresolved libraries (above)" >&2
  exit 1
fi

(cd "$bundle" && find bin lib -type f -printf '%s\t%p\n' | sort -k2) >"$bundle/manifest.txt"
unpacked=$(du -sb "$bundle" | cut -f1)
binaries=$(ls "$bundle/bin" | wc -l)
tar -C "$bundle" -cJf "$bundle/bundle.tar.xz" bin lib
rm -rf "$bundle/bin" "$bundle/lib"
bytes=$(du -sb "$bundle" | cut -f1)
# The working tree travels beside it: the tracked files count towards the same limit.
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
echo "gpu_bundle: $bundle: $(mib "$bytes") MiB ($(mib "$unpacked") MiB unpacked; $binaries binaries, $(grep -c $'\tlib/' "$bundle/manifest.txt") libraries: manifest.txt); with the tracked files ($(mib "$tree") MiB): $(mib $((bytes + tree))) MiB"
if [ $((bytes + tree)) -gt $((limit_mib * 1048576)) ]; then
  echo "gpu_bundle: with the working tree, over the ${limit_mib} MiB a lent GPU machine takes" >&2
  exit 1
fi
