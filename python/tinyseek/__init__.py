"""tinyseek from Python: `import tinyseek` loads libtinyseek.so, which registers torch.ops.tinyseek.*.

The library is looked up in $TINYSEEK_LIBRARY, then in this package's own folder (where
`pip install` puts it), then in the build folders of the source tree this package sits in
(build/ first).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parents[1]


def _find_library() -> Path:
    env = os.environ.get("TINYSEEK_LIBRARY")
    if env:
        p = Path(env)
        if not p.is_file():
            raise ImportError(f"tinyseek: TINYSEEK_LIBRARY={env} is not a file")
        return p
    installed = _HERE / "libtinyseek.so"
    if installed.is_file():
        return installed
    for build in ["build", *sorted(p.name for p in _ROOT.glob("build*") if p.name != "build")]:
        p = _ROOT / build / "libtinyseek.so"
        if p.is_file():
            return p
    raise ImportError(f"tinyseek: libtinyseek.so not found under {_ROOT}/build; run `make` first "
                      "or set TINYSEEK_LIBRARY")


library_path = _find_library()
torch.ops.load_library(str(library_path))
ops = torch.ops.tinyseek

from . import nn  # noqa: E402  (modules need the ops registered first)
from . import rl  # noqa: E402
from .model import Model, load  # noqa: E402



def set_fused_kernels(on: bool) -> bool:
    """Run the C++ models' fused kernels (the SwiGLU activation; the default) or the torch
    compositions they replace (what `train.fused: false` does for a run). Returns the previous setting."""
    return torch.ops.tinyseek.set_fused_kernels(bool(on))


__all__ = ["ops", "nn", "rl", "library_path", "Model", "load", "set_fused_kernels"]
