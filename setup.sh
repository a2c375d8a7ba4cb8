#!/usr/bin/env bash
# Set up everything lsnn needs, then run the main job on the embedded default.
#   bash setup.sh                 install, then `lsnn bench --quick` on the committed checkpoints
#   bash setup.sh --install-only  install only (what CI does before the tests)
set -euo pipefail
cd "$(dirname "$0")"

# Fashion-MNIST (smnist); the Cortex-M toolchain, its C library and QEMU (Cortex-M targets)
DEBS=(dataset-fashion-mnist gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm make)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "==> installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || echo "apt-get update failed; trying the install with the lists at hand" >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "==> not root: please install the Debian packages: sudo apt-get install ${missing[*]}" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
echo "==> installing lsnn and its pinned dependencies into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
echo "==> building the fused ALIF/LI training kernels (C++; training falls back to the eager reference without them)"
.venv/bin/python -c "from lsnn.reference import fused; fused.build()"

if [ "${1:-}" = "--install-only" ]; then
  exit 0
fi
echo "==> lsnn bench --quick on the committed checkpoints"
.venv/bin/lsnn bench --quick --out runs/bench-quick
