#!/usr/bin/env bash
# Installs whatever is missing for tinyseek on a fresh Debian machine, and nothing that is there:
#   1. Debian packages (compilers' companions, Eigen, yaml-cpp, GoogleTest, Google Benchmark, ...)
#   2. the project virtualenv .venv with the pinned torch wheel (its LibTorch is what we link)
# A second call checks and returns within a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."

# torch 2.11.0 from PyPI is the CUDA 13.0 build: it matches nvcc 13.0 on this machine and the torch
# the H200 device machine carries, so one LibTorch ABI serves the CPU build, CI and the GPU check.
TORCH_VERSION=2.11.0
PY_PACKAGES=("torch==${TORCH_VERSION}" "numpy==2.4.6" "pytest==9.2.0" "safetensors==0.8.0" "matplotlib==3.11.2" "pyyaml==6.0.4")
DEB_PACKAGES=(cmake ninja-build ccache g++ libeigen3-dev libyaml-cpp-dev googletest libgtest-dev
              libbenchmark-dev libcli11-dev nlohmann-json3-dev python3-venv)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
stamp=.venv/.tinyseek-setup-${TORCH_VERSION}
if [ ! -f "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PY --version)"
    "$PY" -m venv .venv
  fi
  echo "setup: installing ${PY_PACKAGES[*]} into .venv (torch is large: a first install takes minutes)"
  .venv/bin/pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  # `import tinyseek` from the venv: the package source sits in python/, the library in build/.
  site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$(pwd)/python" > "$site/tinyseek-src.pth"
  touch "$stamp"
fi
