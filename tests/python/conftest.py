import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))


def tinyseek_bin() -> str:
    env = os.environ.get("TINYSEEK_BIN")
    if env:
        return env
    for b in sorted(ROOT.glob("build*/tinyseek")):
        return str(b)
    raise RuntimeError("tinyseek binary not found; build first or set TINYSEEK_BIN")
