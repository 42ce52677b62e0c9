"""kind: grpo end to end: a base model pretrained here on a task corpus (data.source: task), then
GRPO from it. Rewards rise on a task made easy on purpose; a resume inside a rollout batch (mu 2,
with a reference model) continues bit for bit; a missing init_from exits 2; generate reads the
GRPO run's policy."""
import json
import subprocess
from pathlib import Path

import pytest

from conftest import tinyseek_bin

# One-digit sums; the base model is trained only briefly, so its samples at temperature 1 often
# break the <think>/<answer> template. The rollouts are rewarded for the format only: a task made
# easy on purpose, where a short GRPO run must raise the reward.
BASE = """\
name: rltest
seed: 3
data: {source: task, seq_len: 64, synthetic_bytes: 300000}
task: {name: arithmetic, ops: "+", digits_min: 1, digits_max: 1, corpus_digits_min: 1, corpus_digits_max: 1}
model: {d_model: 64, n_layers: 2, n_heads: 2, ffn_hidden: 160}
train: {steps: 120, batch_size: 16, lr: 3.0e-3, warmup_steps: 10, eval_every: 120, eval_batches: 2,
        checkpoint_every: 120, log_every: 40}
grpo: {init_from: base, prompts_per_step: 8, group_size: 8, max_completion_length: 44, eval_problems: 64, eval_k: 4,
       accuracy_weight: 0.0}
variants:
  base: {kind: pretrain}
  rl:
    kind: grpo
    train: {steps: 30, lr: 1.0e-3, min_lr_ratio: 1.0, warmup_steps: 0, weight_decay: 0.0, eval_every: 30,
            log_every: 5, checkpoint_every: 10}
"""


def run(args, cwd, timeout=600):
    return subprocess.run([tinyseek_bin(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def metrics(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl")
    cfg = root / "rl.yaml"
    cfg.write_text(BASE)
    r = run(["run", str(cfg), "--variant", "base", "--no-report"], root)
    assert r.returncode == 0, r.stdout + r.stderr
    return root, cfg


def test_grpo_raises_reward(base):
    root, cfg = base
    r = run(["run", str(cfg), "--variant", "rl"], root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "held-out pass@1" in r.stdout and "reward" in r.stdout
    rows = metrics(root / "runs/rltest/rl/metrics.jsonl")
    steps = [m for m in rows if "reward" in m]
    assert len(steps) == 30
    first = sum(m["reward"] for m in steps[:6]) / 6
    last = sum(m["reward"] for m in steps[-6:]) / 6
    assert last > first + 0.15, (first, last)
    assert all(m["rewards/accuracy/mean"] == m["accuracy"] for m in steps)  # accuracy is logged, not rewarded
    for m in steps:
        for k in ("reward_std", "rewards/format/mean", "rewards/accuracy/mean", "frac_reward_zero_std",
                  "entropy", "clip_ratio/region_mean", "completions/mean_length", "completions/clipped_ratio",
                  "grad_norm", "lr", "sample_tokens_per_s", "train_tokens_per_s"):
            assert k in m, k
        assert "kl" not in m  # beta 0: no reference, no KL (as TRL logs it)
    # Groups whose 8 samples all got the format right have equal rewards (and no gradient).
    assert any(m["frac_reward_zero_std"] > 0 for m in steps)
    evals = [m for m in rows if "eval/pass@1" in m]
    assert [m["step"] for m in evals] == [0, 30]
    s = json.loads((root / "runs/rltest/rl/summary.json").read_text())
    assert s["heldout_pass@1_start"] == evals[0]["eval/pass@1"] and s["heldout_pass@1"] == evals[1]["eval/pass@1"]
    report = (root / "runs/rltest/report.md").read_text()
    assert "heldout_pass@1_start" in report
    # The GRPO run's policy generates through tinyseek generate.
    g = run(["generate", str(root / "runs/rltest/rl"), "--prompt", "Compute 3+4.\n", "--temperature", "0",
             "--max-new-tokens", "44", "--stop", "</answer>", "--json"], root)
    assert g.returncode == 0, g.stderr
    assert json.loads(g.stdout)["completions"][0]["text"].startswith("<think>")


def test_resume_inside_a_rollout_batch_is_bit_exact(base):
    root, cfg = base
    sets = ["--set", "train.steps=6", "--set", "grpo.num_iterations=2", "--set", "grpo.beta=0.04",
            "--set", "train.checkpoint_every=100", "--set", "train.eval_every=100", "--set", "grpo.eval_k=0"]
    sets += ["--set", f"grpo.init_from={root / 'runs/rltest/base'}"]
    full = run(["run", str(cfg), "--variant", "rl", "--no-report", "--set", "output.dir=full", *sets], root)
    assert full.returncode == 0, full.stdout + full.stderr
    a = run(["run", str(cfg), "--variant", "rl", "--no-report", "--set", "output.dir=part", "--set",
             "train.stop_at=3", *sets], root)
    assert a.returncode == 0, a.stdout + a.stderr
    b = run(["run", str(cfg), "--variant", "rl", "--no-report", "--set", "output.dir=part", "--resume", *sets], root)
    assert b.returncode == 0, b.stdout + b.stderr
    assert "resuming at step 3" in b.stdout
    keys = ("loss", "reward", "kl", "grad_norm", "ratio")
    want = [{k: m.get(k) for k in keys} for m in metrics(root / "full/rltest/rl/metrics.jsonl") if "loss" in m]
    got = [{k: m.get(k) for k in keys} for m in metrics(root / "part/rltest/rl/metrics.jsonl") if "loss" in m]
    assert got == want
    assert any(m["kl"] > 0 for m in want[1:])  # the reference is used
    ckpt = "checkpoints/step_00000006/model.safetensors"
    assert (root / "full/rltest/rl" / ckpt).read_bytes() == (root / "part/rltest/rl" / ckpt).read_bytes()


def test_init_from_missing_run_exits_2(base):
    root, cfg = base
    r = run(["run", str(cfg), "--variant", "rl", "--set", "grpo.init_from=nowhere", "--no-report"], root)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "grpo.init_from" in r.stderr and "nowhere" in r.stderr
    r = run(["run", str(cfg), "--variant", "rl", "--set", "grpo.init_from=", "--no-report"], root)
    assert r.returncode == 2 and "grpo.init_from" in r.stderr
    r = run(["run", str(cfg), "--variant", "rl", "--set", "grpo.max_completion_length=60", "--no-report"], root)
    assert r.returncode == 2 and "data.seq_len" in r.stderr


def test_nonfinite_loss_stops_with_exit_3_and_the_checkpoint_intact(base):
    root, cfg = base
    sets = ["--set", "train.steps=6", "--set", "train.checkpoint_every=2", "--set", "train.eval_every=100",
            "--set", "grpo.eval_k=0", "--set", "train.debug_nan_step=3", "--set", "output.dir=nan",
            "--set", f"grpo.init_from={root / 'runs/rltest/base'}"]
    r = run(["run", str(cfg), "--variant", "rl", "--no-report", *sets], root)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "step 4: non-finite loss" in r.stdout + r.stderr
    ckpts = sorted(p.name for p in (root / "nan/rltest/rl/checkpoints").iterdir() if p.name.startswith("step_"))
    assert ckpts[-1] == "step_00000002", ckpts
    s = json.loads((root / "nan/rltest/rl/summary.json").read_text())
    assert s["status"] == "nonfinite"
    # With on_nonfinite: skip the run completes, counting the skipped update.
    r = run(["run", str(cfg), "--variant", "rl", "--no-report", *sets, "--set", "train.on_nonfinite=skip"], root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((root / "nan/rltest/rl/summary.json").read_text())["skipped_steps"] == 1


def test_resume_falls_back_past_a_damaged_grpo_checkpoint(base):
    """GRPO checkpoints carry the manifest too: a damaged newest one is skipped, named, and the run
    continued from the one before ends as the uninterrupted run does."""
    root, cfg = base
    sets = ["--set", "train.steps=6", "--set", "train.checkpoint_every=2", "--set", "train.eval_every=100",
            "--set", "grpo.eval_k=0", "--set", f"grpo.init_from={root / 'runs/rltest/base'}"]
    full = run(["run", str(cfg), "--variant", "rl", "--no-report", "--set", "output.dir=dfull", *sets], root)
    assert full.returncode == 0, full.stdout + full.stderr
    a = run(["run", str(cfg), "--variant", "rl", "--no-report", "--set", "output.dir=dpart", "--set",
             "train.stop_at=4", *sets], root)
    assert a.returncode == 0, a.stdout + a.stderr
    weights = root / "dpart/rltest/rl/checkpoints/step_00000004/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    b = run(["run", str(cfg), "--variant", "rl", "--no-report", "--set", "output.dir=dpart", "--resume", *sets], root)
    assert b.returncode == 0, b.stdout + b.stderr
    assert "resuming at step 2" in b.stdout and "step_00000004/model.safetensors: CRC-32" in b.stdout
    ckpt = "checkpoints/step_00000006/model.safetensors"
    assert (root / "dfull/rltest/rl" / ckpt).read_bytes() == (root / "dpart/rltest/rl" / ckpt).read_bytes()


@pytest.mark.parametrize("how", ["ctrl_c", "sigkill"])
def test_grpo_stopped_mid_run_resumes_to_the_uninterrupted_run(base, how):
    """Ctrl-C (a checkpoint at the stop, exit 130) or SIGKILL (no checkpoint: resume from the last
    periodic one) in the middle of a GRPO run, then --resume: the uninterrupted run's metrics and
    weights, bit for bit."""
    import os
    import signal
    root, cfg = base
    sets = ["--set", "train.steps=8", "--set", "train.checkpoint_every=3", "--set", "train.eval_every=100",
            "--set", "grpo.eval_k=0", "--set", "train.log_every=1", "--set", f"grpo.init_from={root / 'runs/rltest/base'}"]
    full_dir = root / f"full_{how}"
    full = run(["run", str(cfg), "--variant", "rl", "--no-report", "--set", f"output.dir={full_dir}", *sets], root)
    assert full.returncode == 0, full.stdout + full.stderr
    part_dir = root / f"part_{how}"
    p = subprocess.Popen([tinyseek_bin(), "run", str(cfg), "--variant", "rl", "--no-report", "--set",
                          f"output.dir={part_dir}", *sets], cwd=root, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        if "step 5/8" in line:
            break
    p.send_signal(signal.SIGINT if how == "ctrl_c" else signal.SIGKILL)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == (130 if how == "ctrl_c" else -signal.SIGKILL), out[-2000:]
    b = run(["run", str(cfg), "--variant", "rl", "--no-report", "--set", f"output.dir={part_dir}", "--resume", *sets],
            root)
    assert b.returncode == 0, b.stdout + b.stderr
    keys = ("loss", "reward", "grad_norm")
    want = [{k: m.get(k) for k in keys} for m in metrics(full_dir / "rltest/rl/metrics.jsonl") if "loss" in m]
    got = [{k: m.get(k) for k in keys} for m in metrics(part_dir / "rltest/rl/metrics.jsonl") if "loss" in m]
    assert got == want
    ckpt = "checkpoints/step_00000008/model.safetensors"
    assert (full_dir / "rltest/rl" / ckpt).read_bytes() == (part_dir / "rltest/rl" / ckpt).read_bytes()
