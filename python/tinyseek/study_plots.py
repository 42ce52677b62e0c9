"""Plots for study reports (called by the tinyseek CLI; matplotlib, no display).

    python -m tinyseek.study_plots fp8_accumulation METRICS_JSONL OUT_PNG
        error of the FP8 GEMM emulator against K, one line per (accumulator, promotion)
    python -m tinyseek.study_plots loss_error RUNS_JSON OUT_PNG
        relative training-loss error of each run against the first one (the baseline), per step
    python -m tinyseek.study_plots loss_vs_flops RUNS_JSON OUT_PNG
        validation loss against cumulative training FLOPs (step * the run's "flops_per_step"), one
        line per run, log-scaled FLOPs
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


def loss_vs_flops(runs_json: Path, out: Path) -> None:
    runs = json.loads(Path(runs_json).read_text())
    fig, ax = step_figure()
    for run in runs:
        rows = [r for r in read_jsonl(Path(run["dir"]) / "metrics.jsonl") if r.get("val_loss") is not None]
        xs = [r["step"] * run["flops_per_step"] for r in rows]
        ax.plot(xs, [r["val_loss"] for r in rows], marker="o", markersize=3, label=run["variant"])
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (matrix products, counted from the shapes)")
    ax.set_ylabel("validation loss (nats)")
    ax.set_title("validation loss against training compute")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    save(fig, out)


PLOTS = {"fp8_accumulation": fp8_accumulation, "loss_error": loss_error, "loss_vs_flops": loss_vs_flops}


def main(argv) -> int:
    if len(argv) != 4 or argv[1] not in PLOTS:
        print(__doc__, file=sys.stderr)
        return 2
    PLOTS[argv[1]](Path(argv[2]), Path(argv[3]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
