"""Weak scaling of data- and expert-parallel pretraining on this machine (Gloo, ranks sharing its
cores): tiny-V3 (configs/tiny_v3_distributed.yaml's model) with a fixed batch per rank, on 1, 2
and 4 ranks, with the gradient all-reduce overlapped with the backward and after it.

Printed per run: step time (rank 0's mean over the timed steps), tokens/s of the whole job, the
all-reduce wait per step (time the step spends waiting for gradient buckets after its backward;
with overlap off that is the whole reduction), and a simple model's prediction of the step time:

    predicted(W) = t(1) * max(1, W * threads / cores) + wait_after_backward(W)

(the ranks divide the cores; the reduction measured without overlap comes on top). Writes the
table as JSON with --json. Usage:

    PYTHONPATH=python .venv/bin/python benchmarks/scale_out.py [--steps 40] [--per-rank 4] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("TINYSEEK_BIN", ROOT / "build" / "tinyseek"))
CONFIG = ROOT / "configs" / "tiny_v3_distributed.yaml"


def run(out: Path, name: str, ranks: int, expert: int, overlap: bool, steps: int, per_rank: int) -> dict:
    cmd = [str(BIN), "run"] if ranks == 1 else [str(BIN), "launch", "--nproc", str(ranks)]
    sets = {"name": name, "output.dir": str(out), "parallel.expert": expert, "train.steps": steps,
            "train.batch_size": per_rank * ranks, "train.eval_every": 10 ** 6, "train.checkpoint_every": 10 ** 6,
            "train.log_every": 10 ** 6, "train.threads": 1, "dist.overlap_grad_sync": str(overlap).lower()}
    cmd += [str(CONFIG), "--no-report"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    s = json.loads((out / name / "default" / "summary.json").read_text())
    m = [json.loads(l) for l in (out / name / "default" / "metrics.jsonl").read_text().splitlines()]
    timed = [1.0 / x["tokens_per_s"] * s["tokens_per_step"] for x in m if "tokens_per_s" in x][3:]  # after 3 warm-up steps
    step_ms = 1e3 * sum(timed) / len(timed)
    return {"ranks": ranks, "expert_parallel": max(expert, 1), "overlap": overlap, "step_ms": step_ms,
            "tokens_per_s": s["tokens_per_step"] / step_ms * 1e3, "final_loss": s["final_train_loss"],
            "wait_ms": s.get("grad_sync", {}).get("wait_ms_per_step", 0.0),
            "buckets": s.get("grad_sync", {}).get("buckets", 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--per-rank", type=int, default=4, help="sequences per rank and step")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        layouts = [(1, 1, True), (2, 1, True), (2, 1, False), (4, 1, True), (4, 1, False), (2, 2, True),
                   (4, 2, True), (4, 2, False)]
        for ranks, expert, overlap in layouts:
            name = f"w{ranks}e{expert}{'o' if overlap else 'n'}"
            rows.append(run(out, name, ranks, expert, overlap, a.steps, a.per_rank))
            print(f"  measured {name}: {rows[-1]['step_ms']:.1f} ms/step", file=sys.stderr)
    t1 = rows[0]["step_ms"]
    after = {(r["ranks"], r["expert_parallel"]): r["wait_ms"] for r in rows if not r["overlap"]}
    for r in rows:
        r["predicted_step_ms"] = t1 * max(1.0, r["ranks"] / cores) + after.get((r["ranks"], r["expert_parallel"]), 0.0)
    print(f"tiny-V3, {a.per_rank} sequences x 128 tokens per rank, 1 thread per rank, {cores} cores, Gloo")
    print("| ranks | experts split over | all-reduce | step ms | predicted ms | job tok/s | wait ms/step | buckets |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['ranks']} | {r['expert_parallel']} | {'overlapped' if r['overlap'] else 'after backward'} | "
              f"{r['step_ms']:.1f} | {r['predicted_step_ms']:.1f} | {r['tokens_per_s']:,.0f} | {r['wait_ms']:.2f} | "
              f"{r['buckets']} |")
    if a.json:
        a.json.write_text(json.dumps({"cores": cores, "per_rank": a.per_rank, "steps": a.steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
