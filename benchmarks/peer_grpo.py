"""A GRPO step against TRL's GRPOTrainer, measured in one run on the same model and settings.

The model is configs/r1_zero_arithmetic.yaml's (a dense 4-layer transformer), built by tinyseek
and exported with `tinyseek export --format hf` (LlamaForCausalLM): tinyseek's trainer starts
from it through `grpo.init_from: hf:DIR`, TRL's from the same folder. Both run steps of the same
shape: P prompts x G samples of at most L new tokens at temperature 1, one optimizer step per
batch (mu 1), the "grpo" loss with beta 0.001 (a frozen reference model), group-scaled
advantages, AdamW at lr 2e-4, the R1-Zero format reward (tinyseek.rl.format_reward: the
trainer's own C++ rule, called from TRL's reward function) and the same threads. The prompts are
arithmetic problems of the task's form ("Compute 123+456.\\n"). The weights are random, so
tinyseek's completions run to L tokens (they stop at "</answer>"), and TRL's are held to L
(min_new_tokens; its EOS would be byte 0); the table shows the mean length on each side.

A step's time is the mean over steps 2..N (the first warms up). Prints a table and writes JSON.

    PYTHONPATH=python .venv/bin/python benchmarks/peer_grpo.py [--steps 5] [--threads 2] [--out peer_grpo.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import yaml

import tinyseek
import tinyseek.rl

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("TINYSEEK_BIN", ROOT / "build" / "tinyseek"))


def base_config() -> dict:
    c = yaml.safe_load((ROOT / "configs" / "r1_zero_arithmetic.yaml").read_text())
    c.pop("variants", None)
    return c


def tinyseek_steps(cfg: dict, hf_dir: Path, out: Path, steps: int, threads: int, P: int, G: int, L: int) -> dict:
    c = dict(cfg)
    c.update(kind="grpo", name="peer_grpo")
    c["train"] = {"steps": steps, "lr": 2.0e-4, "min_lr_ratio": 1.0, "warmup_steps": 0, "weight_decay": 0.0,
                  "eval_every": 10 ** 6, "log_every": 1, "checkpoint_every": 10 ** 6, "threads": threads}
    c["grpo"] = dict(c["grpo"], init_from=f"hf:{hf_dir}", prompts_per_step=P, group_size=G, max_completion_length=L,
                     beta=0.001, num_iterations=1, loss_type="grpo", temperature=1.0, eval_k=0, eval_problems=1,
                     accuracy_weight=0.0)
    c["output"] = {"dir": str(out)}
    path = out / "peer_grpo.yaml"
    path.write_text(yaml.safe_dump(c))
    p = subprocess.run([str(BIN), "run", str(path), "--no-report"], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"tinyseek GRPO failed:\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    m = [json.loads(l) for l in (out / "peer_grpo" / "default" / "metrics.jsonl").read_text().splitlines()]
    rows = [x for x in m if "loss" in x]
    secs = [x["num_tokens"] / x["tokens_per_s"] for x in rows]
    return {"step_s": sum(secs[1:]) / len(secs[1:]), "steps_s": secs,
            "completion_mean_length": sum(x["completions/mean_length"] for x in rows) / len(rows),
            "sample_share": sum(x["sample_share"] for x in rows[1:]) / len(rows[1:])}


def trl_steps(hf_dir: Path, out: Path, steps: int, threads: int, P: int, G: int, L: int, seed: int) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(threads)
    rng = random.Random(seed)
    prompts = [f"Compute {rng.randint(100, 999)}{rng.choice('+-')}{rng.randint(100, 999)}.\n" for _ in range(P * steps)]
    tok = AutoTokenizer.from_pretrained(hf_dir)
    # The exported byte-level tokenizer has no special tokens; TRL pads (and stops at EOS) with
    # byte 0, which no prompt holds. tinyseek stops at "</answer>" instead.
    tok.pad_token = tok.eos_token = tok.convert_ids_to_tokens(0)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    def reward(completions, **kwargs):
        return tinyseek.rl.format_reward(completions)

    class Clock(TrainerCallback):
        def __init__(self):
            self.t, self.steps = None, []

        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.steps.append(time.perf_counter() - self.t)

    clock = Clock()
    args = GRPOConfig(output_dir=str(out / "trl"), per_device_train_batch_size=P * G, num_generations=G,
                      steps_per_generation=1, max_completion_length=L, num_iterations=1, beta=0.001,
                      loss_type="grpo", scale_rewards="group", temperature=1.0, learning_rate=2.0e-4,
                      lr_scheduler_type="constant", weight_decay=0.0, max_steps=steps, logging_steps=1,
                      report_to="none", use_cpu=True, bf16=False, save_strategy="no", shuffle_dataset=False,
                      disable_dropout=True, seed=seed,
                      # every completion L tokens long, as tinyseek's are from random weights
                      generation_kwargs={"min_new_tokens": L})
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]), processing_class=tok,
                          callbacks=[clock])
    # The time TRL spends sampling (its single-turn generation, transformers' generate inside).
    generate, sampling = trainer._generate_single_turn, []

    def timed_generate(*args, **kwargs):
        t = time.perf_counter()
        out = generate(*args, **kwargs)
        sampling.append(time.perf_counter() - t)
        return out

    trainer._generate_single_turn = timed_generate
    trainer.train()
    secs = clock.steps
    lengths = [float(h["completions/mean_length"]) for h in trainer.state.log_history if "completions/mean_length" in h]
    return {"step_s": sum(secs[1:]) / len(secs[1:]), "steps_s": secs,
            "completion_mean_length": sum(lengths) / max(len(lengths), 1),
            "sample_share": sum(sampling[1:]) / sum(secs[1:]) if len(sampling) == len(secs) else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--completion", type=int, default=96)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    import transformers
    import trl

    cfg = base_config()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(cfg["seed"])
        model = tinyseek.Model.from_config(dict(cfg, kind="pretrain"))
        hf_dir = tmp / "hf"
        model.export_hf(hf_dir)
        ours = tinyseek_steps(cfg, hf_dir, tmp, a.steps, a.threads, a.prompts, a.group, a.completion)
        theirs = trl_steps(hf_dir, tmp, a.steps, a.threads, a.prompts, a.group, a.completion, cfg["seed"])
    ratio = theirs["step_s"] / ours["step_s"]
    print(f"GRPO step, {a.prompts} prompts x {a.group} samples, <= {a.completion} new tokens, mu 1, beta 0.001, "
          f"{a.threads} threads, {platform.processor() or platform.machine()}")
    print("| trainer | step s | completion mean length | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| tinyseek (sampling {100 * ours['sample_share']:.0f}% of the step) | {ours['step_s']:.3f} | "
          f"{ours['completion_mean_length']:.1f} | **{ratio:.2f}x** |")
    print(f"| TRL {trl.__version__} GRPOTrainer (transformers {transformers.__version__}; sampling "
          f"{100 * theirs['sample_share']:.0f}%) | {theirs['step_s']:.3f} | {theirs['completion_mean_length']:.1f} | "
          f"1.00x |")
    so, st = ours["step_s"] * ours["sample_share"], theirs["step_s"] * theirs["sample_share"]
    print(f"sampling: tinyseek {so:.3f} s, TRL {st:.3f} s ({st / so:.2f}x); the rest of the step (log-probabilities "
          f"of policy and reference, loss, backward, AdamW): tinyseek {ours['step_s'] - so:.3f} s, TRL "
          f"{theirs['step_s'] - st:.3f} s ({(theirs['step_s'] - st) / (ours['step_s'] - so):.2f}x)")
    if a.out:
        a.out.write_text(json.dumps({"tinyseek": ours, "trl": theirs, "ratio": ratio, "threads": a.threads,
                                     "prompts": a.prompts, "group": a.group, "completion": a.completion,
                                     "steps": a.steps, "trl_version": trl.__version__}, indent=2))


if __name__ == "__main__":
    main()
