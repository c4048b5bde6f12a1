#!/usr/bin/env bash
# Build the CUDA binary of llmrl on a machine without a GPU (no system CUDA, no nvcc): the
# compiler and headers come from PyPI's CUDA 13.0 packages (pinned: the H200 machine's driver is
# CUDA 13.0, and PTX from a newer nvcc is rejected there), the CUDA libraries are linked through
# empty stubs carrying the right sonames and resolved at load time on the GPU machine.
# Recipe checked in ../shared/design/reference/cuda_build.md. Output: target/cuda/release/llmrl
# (and examples). On the GPU machine: LD_LIBRARY_PATH=<site-packages>/nvidia/cu13/lib.
# Usage: [FEATURES=nccl] scripts/build_cuda.sh [COMPUTE_CAP]   (default 90 = H100/H200; FEATURES
# adds cargo features to `cuda`, e.g. nccl for data parallel over GPUs, scripts/launch_nccl.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
cap="${1:-90}"
features="cuda${FEATURES:+,$FEATURES}"
venv=target/cuda-toolkit
if [[ ! -x "$venv/bin/pip" ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-runtime==13.0.96" \
  "nvidia-cuda-crt==13.0.88" "nvidia-cuda-cccl==13.0.*" "nvidia-nvvm==13.0.88"
C="$(cd "$venv"/lib/python3*/site-packages/nvidia/cu13 && pwd)"
stubs="$PWD/target/cuda-stubs"
mkdir -p "$stubs"
echo 'void llmrl_cuda_stub(void) {}' > "$stubs/empty.c"
for lib in libcuda.so.1 libnvrtc.so.13 libcurand.so.10 libcublas.so.13 libcublasLt.so.13 libcudart.so.13 libnccl.so.2; do
  base="${lib%%.so*}"
  gcc -shared -fPIC -Wl,-soname,"$lib" -o "$stubs/$base.so" "$stubs/empty.c"
done
export PATH="$C/bin:$PATH" CUDA_ROOT="$C" CUDA_PATH="$C" CUDA_COMPUTE_CAP="$cap"
export CARGO_TARGET_DIR=target/cuda
export RUSTFLAGS="-L $stubs -C link-arg=-Wl,--unresolved-symbols=ignore-all"
cargo build --release --features "$features" --bin llmrl --example gpu_parity --example bench_runtime
# Relink so the CUDA libraries are recorded as NEEDED (the stubs were dropped as unused). Only the
# final binaries: build scripts must stay runnable here, where no libcuda.so.1 exists.
needed=(-C link-arg=-Wl,--no-as-needed -C link-arg=-lcuda -C link-arg=-lnvrtc -C link-arg=-lcurand
  -C link-arg=-lcublas -C link-arg=-lcublasLt -C link-arg=-lcudart)
if [[ "$features" == *nccl* ]]; then needed+=(-C link-arg=-lnccl); fi
cargo rustc --release --features "$features" --bin llmrl -- "${needed[@]}"
for ex in gpu_parity bench_runtime; do
  cargo rustc --release --features "$features" --example "$ex" -- "${needed[@]}"
done
readelf -d target/cuda/release/llmrl | grep NEEDED
# The device call carries at most 64 MiB: strip and pack (≈10 MB); eval/gpu/run.sh unpacks it.
dist=target/cuda/dist
rm -rf "$dist" && mkdir -p "$dist/bin"
cp target/cuda/release/llmrl target/cuda/release/examples/gpu_parity target/cuda/release/examples/bench_runtime "$dist/bin/"
strip "$dist"/bin/*
tar -C "$dist" -cJf "$dist/llmrl-cuda.tar.xz" bin
rm -rf "$dist/bin"
ls -la "$dist/llmrl-cuda.tar.xz"
