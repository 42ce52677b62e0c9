"""Decoding against transformers, measured in one run: tinyseek's C++ generator (tinyseek.load(...)
.generate, KV-cached, absorbed MLA decode) and transformers' generate on the same weights (the
model exported with `tinyseek export --format hf`), greedy, the same prompts, new tokens and
threads. Models: tiny-V3 (configs/tiny_v3.yaml's model, as DeepseekV3ForCausalLM) and the dense
quickstart model (configs/quickstart.yaml, as LlamaForCausalLM), randomly initialised (decoding
speed does not depend on the weights' values). Each case is timed `--repeats` times, the fastest
counts (the first is a warm-up in effect). Prints a table of tokens/s and ratios, writes JSON.

    PYTHONPATH=python .venv/bin/python benchmarks/peer_decode.py [--threads 2] [--out peer_decode.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import yaml

import tinyseek

ROOT = Path(__file__).resolve().parents[1]


def model_config(name: str, context: int) -> dict:
    c = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    c.pop("variants", None)
    c["data"] = {"seq_len": context}
    return c


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--prompts", default="128,2048")
    ap.add_argument("--models", default="tiny_v3,quickstart")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="peer_decode.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import transformers  # noqa: PLC0415 (pinned in the project venv: scripts/setup.sh)

    batches = [int(x) for x in a.batches.split(",")]
    prompts = [int(x) for x in a.prompts.split(",")]
    rows = []
    gen = torch.Generator().manual_seed(1)
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            cfg = model_config(name, max(prompts) + a.new_tokens + 8)
            ours = tinyseek.Model.from_config(cfg)
            hf_dir = Path(tmp) / name
            ours.export_hf(hf_dir)
            theirs = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True,
                                                                       dtype=torch.float32).eval()
            arch = json.loads((hf_dir / "config.json").read_text())["architectures"][0]
            for B in batches:
                for P in prompts:
                    x = torch.randint(32, 127, (B, P), generator=gen)
                    n = a.new_tokens

                    def run_ours():
                        return ours.generate(x, max_new_tokens=n)

                    def run_theirs():
                        with torch.no_grad():
                            return theirs.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                                   attention_mask=torch.ones_like(x), pad_token_id=0)

                    t_ours, t_theirs = best_time(run_ours, a.repeats), best_time(run_theirs, a.repeats)
                    same = run_ours() == run_theirs()[:, P:].tolist()
                    row = {"model": name, "hf_class": arch, "batch": B, "prompt": P, "new_tokens": n,
                           "tinyseek_tok_s": B * n / t_ours, "transformers_tok_s": B * n / t_theirs,
                           "ratio": t_theirs / t_ours, "same_tokens": same}
                    rows.append(row)
                    print(f"{name:10s} {arch:22s} B={B:<3d} prompt={P:<5d} tinyseek {row['tinyseek_tok_s']:8.1f} tok/s"
                          f"  transformers {row['transformers_tok_s']:8.1f} tok/s  {row['ratio']:5.2f}x"
                          f"  same tokens: {same}", flush=True)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
    out = {"machine": {"cpu": model_name, "threads": a.threads, "python": platform.python_version(),
                       "torch": torch.__version__, "transformers": transformers.__version__},
           "note": "whole generate() calls (prefill + decode), greedy; ratio = transformers time / tinyseek time",
           "rows": rows}
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print("\n| model | batch | prompt | tinyseek tok/s | transformers tok/s | ratio | same tokens |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['model']} ({r['hf_class']}) | {r['batch']} | {r['prompt']} | {r['tinyseek_tok_s']:.1f} | "
              f"{r['transformers_tok_s']:.1f} | {r['ratio']:.2f}x | {r['same_tokens']} |")
    print(f"\n{model_name}, {a.threads} threads; JSON: {a.out}")


if __name__ == "__main__":
    main()
