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
PY_PACKAGES=("torch==${TORCH_VERSION}" "numpy==2.4.6" "pytest==9.2.0" "safetensors==0.8.0" "matplotlib==3.11.2" "pyyaml==6.0.4"
             "transformers==5.25.0"   # Hugging Face interop tests (docs/interop.md)
             "trl==1.16.0"            # the GRPO peer benchmark (benchmarks/peer_grpo.py)
             "scikit-build-core==1.1.2")  # `pip install --no-build-isolation .` (pyproject.toml)
DEB_PACKAGES=(cmake ninja-build ccache g++ zlib1g-dev libeigen3-dev libyaml-cpp-dev googletest libgtest-dev
              libbenchmark-dev libcli11-dev nlohmann-json3-dev python3-venv
              libgloo-dev   # gloo headers only, to compile against torch's ProcessGroupGloo (docs/distributed.md)
              clang libclang-rt-14-dev)  # libFuzzer, for scripts/fuzz.sh

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

# The virtualenv lives in a per-user cache keyed by the pinned torch version, and .venv links to
# it: a fresh clone (CI, a second checkout) reuses the multi-gigabyte install instead of
# downloading it again. Set TINYSEEK_VENV to put it elsewhere.
PY=${PYTHON:-python3}
VENV=${TINYSEEK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tinyseek/venv-torch-${TORCH_VERSION}}
stamp="$VENV/.tinyseek-setup"
if [ ! -f "$stamp" ] || ! cmp -s scripts/setup.sh "$stamp"; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $($PY --version)"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
  fi
  echo "setup: installing ${PY_PACKAGES[*]} (torch is large: a first install takes minutes)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  cp scripts/setup.sh "$stamp"
fi
if [ "$(readlink .venv 2>/dev/null)" != "$VENV" ]; then
  if [ -e .venv ] && [ ! -L .venv ]; then
    echo "setup: .venv exists and is not a link to $VENV; leaving it (set TINYSEEK_VENV=$(pwd)/.venv to use it)" >&2
  else
    ln -sfn "$VENV" .venv
  fi
fi
# The venv is shared by every checkout, so it must not point `import tinyseek` at one of them: an
# earlier setup wrote tinyseek-src.pth for the checkout that ran it last; remove it. A checkout's
# package is imported with PYTHONPATH=<checkout>/python; an installed one with `pip install`.
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -f "$site/tinyseek-src.pth"
