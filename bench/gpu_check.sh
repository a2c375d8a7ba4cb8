#!/usr/bin/env bash
# The GPU check of the CUDA target, prepared here and run in one call on a machine with an
# NVIDIA GPU (parity of every committed checkpoint, batch-1 latency per step, throughput
# from batch 1 to 4096 against PyTorch on the same GPU, NVML energy). See bench/gpu_check.py.
#   here:     bash bench/gpu_check.sh prepare [--arch sm_90]   (needs .venv and nvcc; writes runs/gpu-bundle)
#   on a GPU: bash bench/gpu_check.sh run                      (runs/gpu-bundle carried; results in $OUT)
# The GPU machine needs Python with numpy, torch, onnx, tqdm and nvidia-ml-py; TVM's runtime
# and tvm-ffi travel in the bundle, the compiler does not (nor is it needed there).
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-}
shift || true
case "$cmd" in
  prepare)
    exec .venv/bin/python bench/gpu_check.py prepare "$@" ;;
  run)
    bundle=${LSNN_GPU_BUNDLE:-runs/gpu-bundle}
    [ -f "$bundle/bundle.json" ] || { echo "gpu_check: $bundle is missing: run 'bash bench/gpu_check.sh prepare' first" >&2; exit 2; }
    py=${PYTHON:-python3}
    site=$(mktemp -d /tmp/lsnn-site.XXXX)
    cp -r "$bundle/site/." "$site/"
    if compgen -G "$bundle/wheels/*.whl" >/dev/null; then
      "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$bundle"/wheels/*.whl
    fi
    mkdir -p "$site/lsnn"
    for d in compiler reference targets bench; do ln -s "$PWD/$d" "$site/lsnn/$d"; done
    # TVM's CUDA runtime links libcudart.so.13: the toolkit's, or the one pip's nvidia packages carry
    cudart=$("$py" -c 'import nvidia.cuda_runtime as m, os; print(os.path.join(list(m.__path__)[0], "lib"))' 2>/dev/null || true)
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib "$cudart"; do
      if [ -n "$d" ] && [ -d "$d" ]; then LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; fi
    done
    export LD_LIBRARY_PATH PYTHONPATH="$site" TVM_USE_RUNTIME_LIB=1 PYTHONUNBUFFERED=1
    exec "$py" bench/gpu_check.py run --bundle "$bundle" "$@" ;;
  *)
    echo "usage: bash bench/gpu_check.sh prepare|run [options]" >&2; exit 2 ;;
esac
