"""Every comparison against the tools a user would pick instead, in one command: the training step
against PyTorch eager and torch.compile (peer_train.py), decoding against transformers' generate
(peer_decode.py) and the GRPO step against TRL's GRPOTrainer (peer_grpo.py), one after another
on this machine with the same threads. Prints each table and writes one JSON with all results.

    PYTHONPATH=python .venv/bin/python benchmarks/peers.py [--threads 2] [--out peers.json] [--quick]

--quick runs shorter versions (fewer steps and repeats, no 2048-token prompts) to check that
everything runs; its numbers are noisier.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("peers.json"))
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    t = ["--threads", str(a.threads)]
    quick = {"peer_train": ["--steps", "6", "--warmup", "2"],
             "peer_decode": ["--prompts", "128", "--repeats", "1", "--new-tokens", "16"],
             "peer_grpo": ["--steps", "3"]}
    results = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "threads": a.threads,
               "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("peer_train", "peer_decode", "peer_grpo"):
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, str(HERE / f"{name}.py"), *t, "--out", str(out), *(quick[name] if a.quick else [])]
            print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
            p = subprocess.run(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if p.returncode != 0:
                sys.exit(f"{name} failed:\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
            print("\n".join(l for l in p.stdout.splitlines() if l.startswith(("|", "GRPO", "sampling", "model", "Training",
                                                                                "Decoding", "tiny", "quick"))),
                  flush=True)
            results[name] = json.loads(out.read_text())
    a.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
