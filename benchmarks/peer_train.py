"""Training steps against PyTorch, measured in one run: tinyseek's trainer (`tinyseek run`, kind
pretrain, C++) against the same architecture in transformers (the model exported with `tinyseek
export --format hf`: LlamaForCausalLM for the dense model, DeepseekV3ForCausalLM for tiny-V3, pure
PyTorch, eager) and against torch.compile of it. Same initial weights, batch (16 x 128 bytes of the
same synthetic corpus), AdamW (lr 3e-3, betas 0.9/0.95, weight decay 0.1, eps 1e-8), gradient
clipping at 1.0, threads; no MTP module (transformers has none). tinyseek's number is its trainer's tokens/s (summary.json: training
steps only); the PyTorch loops time `--steps` steps after `--warmup` untimed ones. Prints a table,
writes JSON.

    PYTHONPATH=python .venv/bin/python benchmarks/peer_train.py [--models quickstart,tiny_v3] [--out peer_train.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def tinyseek_bin() -> str:
    return os.environ.get("TINYSEEK_BIN", str(ROOT / "build" / "tinyseek"))


def time_loop(model, batches, steps: int, warmup: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8)
    model.train()

    def step(x):
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    for i in range(warmup):
        step(batches[i % len(batches)])
    t = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="quickstart,tiny_v3")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", default="peer_train.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import transformers  # noqa: PLC0415 (pinned in the project venv)

    B, T = 16, 128
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in a.models.split(","):
            c = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
            c.pop("variants", None)
            c.update(kind="pretrain", name=name, output={"dir": str(tmp / "runs")})
            c["data"] = {"source": "synthetic", "seq_len": T}
            # transformers builds no MTP module: both sides train the main model alone.
            c["model"].setdefault("mtp", {})["depth"] = 0
            c["train"] = {"steps": a.steps + a.warmup, "batch_size": B, "lr": 3e-3, "warmup_steps": 0,
                          "min_lr_ratio": 1.0, "weight_decay": 0.1, "grad_clip": 1.0, "eval_every": 10 ** 6,
                          "eval_batches": 1, "checkpoint_every": 10 ** 6, "log_every": 10 ** 6,
                          "threads": a.threads}
            cfg_path = tmp / f"{name}.yaml"
            cfg_path.write_text(yaml.safe_dump(c))

            def tinyseek_tok_s(fused: bool) -> float:
                run = f"{name}_{'fused' if fused else 'unfused'}"
                r = subprocess.run([tinyseek_bin(), "run", str(cfg_path), "--no-report", "--set", f"name={run}",
                                    "--set", f"train.fused={'true' if fused else 'false'}"], capture_output=True,
                                   text=True, timeout=3600)
                assert r.returncode == 0, r.stdout + r.stderr
                return json.loads((tmp / "runs" / run / "default" / "summary.json").read_text())["tokens_per_s"]

            # train.fused: false is the same step through the torch ops the fused kernels replace.
            unfused = tinyseek_tok_s(False)
            ours = tinyseek_tok_s(True)
            # The same model, freshly initialised by the same seed, exported for transformers.
            c0 = dict(c, train=dict(c["train"], steps=1, lr=0.0))
            c0["name"] = name + "_init"
            (tmp / "init.yaml").write_text(yaml.safe_dump(c0))
            r = subprocess.run([tinyseek_bin(), "run", str(tmp / "init.yaml"), "--no-report"], capture_output=True,
                               text=True, timeout=600)
            assert r.returncode == 0, r.stdout + r.stderr
            hf_dir = tmp / f"{name}_hf"
            r = subprocess.run([tinyseek_bin(), "export", str(tmp / "runs" / c0["name"]), "--format", "hf",
                                "--out", str(hf_dir)], capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stderr
            corpus = torch.randint(32, 127, (64, T + 1), generator=torch.Generator().manual_seed(1))
            batches = [corpus[i:i + B] for i in range(0, 64, B)]
            arch = json.loads((hf_dir / "config.json").read_text())["architectures"][0]

            def load():
                return transformers.AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True,
                                                                         dtype=torch.float32)

            eager = B * T * a.steps / time_loop(load(), batches, a.steps, a.warmup)
            compiled = None
            if not a.no_compile:
                compiled = B * T * a.steps / time_loop(torch.compile(load()), batches, a.steps, a.warmup)
            row = {"model": name, "hf_class": arch, "tinyseek_tok_s": ours, "tinyseek_unfused_tok_s": unfused,
                   "fused_gain": ours / unfused, "eager_tok_s": eager,
                   "compile_tok_s": compiled, "vs_eager": ours / eager,
                   "vs_compile": ours / compiled if compiled else None}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"batch": [B, T], "threads": a.threads, "steps": a.steps, "torch": torch.__version__,
           "transformers": transformers.__version__, "rows": rows}
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print("\n| model | tinyseek tok/s | unfused (train.fused: false) | PyTorch eager tok/s | torch.compile tok/s "
          "| vs eager | vs compile |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        comp = f"{r['compile_tok_s']:,.0f}" if r["compile_tok_s"] else "-"
        vc = f"{r['vs_compile']:.2f}x" if r["vs_compile"] else "-"
        print(f"| {r['model']} ({r['hf_class']}) | {r['tinyseek_tok_s']:,.0f} | {r['tinyseek_unfused_tok_s']:,.0f} | "
              f"{r['eager_tok_s']:,.0f} | {comp} | "
              f"{r['vs_eager']:.2f}x | {vc} |")


if __name__ == "__main__":
    main()
