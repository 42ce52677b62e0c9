"""Where a training step's time goes: the torch profiler over tinyseek's C++ model driven from
Python (tinyseek.Model: the same forward and backward ops as the trainer), batch 16 x 128, AdamW,
clipping, 2 threads, no MTP; 5 profiled steps after 3. Prints the ops by self CPU time.

    PYTHONPATH=python .venv/bin/python benchmarks/profile_step.py [--models quickstart,tiny_v3] [--rows 14]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml
from torch.profiler import ProfilerActivity, profile

import tinyseek

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="quickstart,tiny_v3")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=14)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for name in a.models.split(","):
        c = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
        c.pop("variants", None)
        c["data"] = {"seq_len": 128}
        c["model"].setdefault("mtp", {})["depth"] = 0
        m = tinyseek.Model.from_config(c).train()
        opt = torch.optim.AdamW(m.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
        x = torch.randint(32, 127, (16, 129), generator=torch.Generator().manual_seed(1))

        def step():
            logits = m(x[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()) + m.aux_loss()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            m.after_optimizer_step()

        for _ in range(3):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(5):
                step()
        print(f"\n{name}: 5 steps")
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows, max_name_column_width=44))


if __name__ == "__main__":
    main()
