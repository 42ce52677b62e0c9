"""Plots for study reports (called by the tinyseek CLI; matplotlib, no display).

    python -m tinyseek.study_plots fp8_accumulation METRICS_JSONL OUT_PNG
        error of the FP8 GEMM emulator against K, one line per (accumulator, promotion)
    python -m tinyseek.study_plots loss_error RUNS_JSON OUT_PNG
        relative training-loss error of each run against the first one (the baseline), per step
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tinyseek.figures import plt, read_jsonl, save, save_step_figure, step_figure


def fp8_accumulation(metrics: Path, out: Path) -> None:
    rows = read_jsonl(metrics)
    series: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        series.setdefault((r["accumulator"], r["promote_interval"]), []).append(r)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    for ax, key, title in ((axes[0], "max_err_rel", "max |err| / max |ref|"),
                           (axes[1], "median_rel", "median |err| / |ref|")):
        for (acc, promote), rs in series.items():
            rs = sorted(rs, key=lambda r: r["K"])
            label = f"{acc}, " + (f"promote every {promote}" if promote else "no promotion")
            ax.plot([r["K"] for r in rs], [100 * max(r[key], 1e-12) for r in rs], marker="o",
                    linestyle="-" if promote == 0 else "--", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("K (reduction length)")
        ax.set_ylabel(title + " (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle("FP8 GEMM accumulation error (CPU emulator vs exact float64)")
    save(fig, out)


def loss_error(runs_json: Path, out: Path, window: int = 10) -> None:
    runs = json.loads(Path(runs_json).read_text())

    def losses(run):
        rows = read_jsonl(Path(run["dir"]) / "metrics.jsonl")
        return {r["step"]: r["loss"] for r in rows if r.get("loss") is not None}

    base = losses(runs[0])
    fig, ax = step_figure()
    for run in runs[1:]:
        cur = losses(run)
        steps = sorted(s for s in cur if s in base)
        xs, ys = [], []
        for i in range(len(steps)):
            w = steps[max(0, i - window + 1):i + 1]
            xs.append(steps[i])
            ys.append(100 * (sum(cur[s] for s in w) / sum(base[s] for s in w) - 1))
        ax.plot(xs, ys, label=run["variant"])
    ax.axhline(0, color="black", linewidth=0.8)
    save_step_figure(fig, ax, f"relative loss error vs {runs[0]['variant']} (%)",
                     f"training loss relative to {runs[0]['variant']} ({window}-step means)", out)


def main(argv) -> int:
    if len(argv) != 4 or argv[1] not in ("fp8_accumulation", "loss_error"):
        print(__doc__, file=sys.stderr)
        return 2
    {"fp8_accumulation": fp8_accumulation, "loss_error": loss_error}[argv[1]](Path(argv[2]), Path(argv[3]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
