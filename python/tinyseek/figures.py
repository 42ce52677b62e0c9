"""What the plotting CLIs (plots, study_plots, pipeline_chart) share: matplotlib without a display,
reading JSON lines, the figure of series against the training step, and saving a figure."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the CLIs run headless, under the tinyseek binary
import matplotlib.pyplot as plt  # noqa: E402  (the plotting modules take pyplot from here, after use())


def read_jsonl(path: Path) -> list:
    """The records of a JSON-lines file (metrics.jsonl), blank lines skipped."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def save(fig, out: Path) -> None:
    """Lays out, writes and closes the figure (closed: a report draws many)."""
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def step_figure():
    """(fig, ax) for series against the training step, the size every run plot shares."""
    return plt.subplots(figsize=(7, 4.2), dpi=120)


def save_step_figure(fig, ax, ylabel: str, title: str, out: Path) -> None:
    """Labels a step_figure (step on x, grid, one legend entry per run) and saves it."""
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, out)


def json_cli(argv, doc: str, write) -> int:
    """`python -m MODULE IN_JSON OUT`: write(the parsed IN_JSON, Path(OUT)); 2 and the usage (doc) on
    stderr for any other argument count."""
    if len(argv) != 3:
        print(doc, file=sys.stderr)
        return 2
    write(json.loads(Path(argv[1]).read_text()), Path(argv[2]))
    return 0
