"""Pipeline schedule chart as PNG: python -m tinyseek.pipeline_chart SCHEDULE_JSON OUT_PNG.

SCHEDULE_JSON is what `tinyseek pipeline show --out DIR` writes (csrc/parallel/chart.h, to_json).
One row per rank, time on x, one box per compute, drawn like the DualPipe README's figure:
colour follows the micro-batch (those entering at rank 0 in cool hues, those entering at the
last rank in warm hues), the pass sets the shade (F light, B medium, W dark, fused BW medium
and hatched), and an overlapped F&B is one black-bordered box, forward on top, backward below.
"""
from __future__ import annotations

import colorsys
import sys
from pathlib import Path

from matplotlib.patches import Patch, Rectangle

from tinyseek.figures import json_cli, plt, save

SHADE = {"F": 0.82, "B": 0.58, "W": 0.36, "BW": 0.58}


def colour(data: dict, mb: int, direction: int, op: str):
    """RGB for a micro-batch in a pass: hue from the micro-batch and its direction, lightness from the pass."""
    m = data["microbatches"]
    per_dir = m // 2 if data["kind"] == "dualpipe" else m
    i = mb - (per_dir if direction == 1 else 0)
    frac = (i % max(per_dir, 1)) / max(per_dir, 1)
    hue = (0.45 + 0.35 * frac) if direction == 0 else (0.98 + 0.17 * frac) % 1.0
    return colorsys.hls_to_rgb(hue, SHADE[op], 0.65)


def box(ax, x, y, w, h, face, hatch=None, label=None, edge="white", lw=0.4):
    ax.add_patch(Rectangle((x, y), w, h, facecolor=face, edgecolor=edge, linewidth=lw, hatch=hatch))
    if label is not None and w > 0:
        ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=6, color="black", clip_on=True)


def draw(data: dict, out: Path) -> None:
    ranks = data["ranks"]
    total = data["total"] or 1.0
    width = min(24.0, max(8.0, 0.09 * sum(1 for r in data["actions"] for a in r if a["op"] not in ("SEND", "RECV"))))
    fig, ax = plt.subplots(figsize=(width, 0.5 * ranks + 1.6), dpi=150)
    row_h = 0.8
    for r, actions in enumerate(data["actions"]):
        y = ranks - 1 - r  # rank 0 on top
        for a in actions:
            op = a["op"]
            if op in ("SEND", "RECV"):
                continue
            x0, w = a["start"], a["end"] - a["start"]
            if op == "FB":
                half = row_h / 2
                box(ax, x0, y + half, w, half, colour(data, a["mb"], a["dir"], "F"), label=str(a["mb"]))
                box(ax, x0, y, w, half, colour(data, a["bwd_mb"], a["bwd_dir"], "BW"), hatch="///", label=str(a["bwd_mb"]))
                ax.add_patch(Rectangle((x0, y), w, row_h, fill=False, edgecolor="black", linewidth=1.2))
            else:
                box(ax, x0, y, w, row_h, colour(data, a["mb"], a["dir"], op), hatch="///" if op == "BW" else None,
                    label=str(a["mb"]))
    ax.set_xlim(0, total)
    ax.set_ylim(-0.2, ranks)
    ax.set_yticks([ranks - 1 - r + row_h / 2 for r in range(ranks)])
    ax.set_yticklabels([f"rank {r}" for r in range(ranks)])
    ax.set_xlabel("time")
    ax.set_title(f"{data['kind']}: {ranks} ranks, {data['stages']} stages, {data['microbatches']} micro-batches; "
                 f"step {total:g}, critical bubble {data['critical_bubble']:g}")
    grey = (0.6, 0.6, 0.6)
    legend = [Patch(facecolor=colorsys.hls_to_rgb(0.6, SHADE[k], 0.0), label=name)
              for k, name in (("F", "forward (F)"), ("B", "backward for inputs (B)"), ("W", "backward for weights (W)"))]
    legend.append(Patch(facecolor=colorsys.hls_to_rgb(0.6, SHADE["BW"], 0.0), hatch="///", label="full backward (BW)"))
    legend.append(Patch(facecolor="white", edgecolor="black", label="F&B overlapped: F top, BW bottom"))
    legend.append(Patch(facecolor=colorsys.hls_to_rgb(0.55, 0.6, 0.65), label="entered at rank 0"))
    if data["kind"] == "dualpipe":
        legend.append(Patch(facecolor=colorsys.hls_to_rgb(0.02, 0.6, 0.65), label=f"entered at rank {ranks - 1}"))
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4, fontsize=7, frameon=False,
              edgecolor=grey)
    out.parent.mkdir(parents=True, exist_ok=True)
    save(fig, out)


def main(argv) -> int:
    return json_cli(argv, __doc__, draw)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
