"""Plots for `tinyseek report`: python -m tinyseek.plots RUNS_JSON OUT_DIR.

RUNS_JSON lists {"variant", "dir"} entries; each dir holds metrics.jsonl. Writes loss.png and
val_loss.png (training and validation loss against step, one line per variant), and a plot
(plot_file(key)) for every metrics key a run lists in its summary.json under "plot_keys" (e.g. "maxvio_batch").
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tinyseek.figures import json_cli, read_jsonl, save_step_figure, step_figure


def plot_series(runs, key: str, title: str, out: Path, smooth: int = 1, unit: str = " (nats)") -> None:
    fig, ax = step_figure()
    for run in runs:
        rows = [r for r in read_jsonl(Path(run["dir"]) / "metrics.jsonl") if r.get(key) is not None]
        if not rows:
            continue
        xs = [r["step"] for r in rows]
        ys = [r[key] for r in rows]
        if smooth > 1:
            ys = [sum(ys[max(0, i - smooth + 1):i + 1]) / len(ys[max(0, i - smooth + 1):i + 1]) for i in range(len(ys))]
        ax.plot(xs, ys, label=run["variant"], marker="o" if len(xs) < 20 else None)
    save_step_figure(fig, ax, key + unit, title, out)


def plot_file(key: str) -> str:
    """The file name of a key's plot: characters other than letters, digits, '.', '_' and '-'
    become '_' ("eval/pass@1" -> "eval_pass_1.png"); experiments/report.cpp names it the same way."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in key) + ".png"


def write_plots(runs, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plot_series(runs, "loss", "training loss (moving average of 10 steps)", out / "loss.png", smooth=10)
    plot_series(runs, "val_loss", "validation loss", out / "val_loss.png")
    for key in plot_keys(runs):
        # Periodic evaluations ("eval/...") are plotted as measured; per-step keys smoothed.
        if key.startswith("eval/"):
            plot_series(runs, key, key, out / plot_file(key), unit="")
        else:
            plot_series(runs, key, f"{key} (moving average of 10 steps)", out / plot_file(key), smooth=10, unit="")


def main(argv) -> int:
    return json_cli(argv, __doc__, write_plots)


def plot_keys(runs) -> list:
    """The union, in first-seen order, of the "plot_keys" lists in the runs' summary.json files."""
    keys = []
    for run in runs:
        path = Path(run["dir"]) / "summary.json"
        if path.is_file():
            for k in json.loads(path.read_text()).get("plot_keys", []):
                if isinstance(k, str) and k not in keys:
                    keys.append(k)
    return keys


if __name__ == "__main__":
    sys.exit(main(sys.argv))
