"""The GRPO peer benchmark runs end to end (benchmarks/peer_grpo.py: tinyseek's trainer and TRL's
GRPOTrainer on the same exported model) and reports what it measured. No timing is asserted:
ratios are the benchmark's output, not a test's. The format reward TRL calls is the trainer's own."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_format_reward_is_the_trainers_rule():
    import tinyseek.rl
    assert tinyseek.rl.format_reward(["<think>add</think> <answer>12</answer>", "12", "<answer>1</answer>"]) == [
        1.0, 0.0, 0.0]


def test_peer_grpo_runs_both_trainers(tmp_path):
    pytest.importorskip("trl")
    out = tmp_path / "peer_grpo.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "peer_grpo.py"), "--steps", "2", "--prompts", "2",
                        "--group", "4", "--completion", "16", "--threads", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r = json.loads(out.read_text())
    for side in ("tinyseek", "trl"):
        assert r[side]["step_s"] > 0 and len(r[side]["steps_s"]) == 2
        assert r[side]["completion_mean_length"] == 16.0, r
    assert r["ratio"] > 0 and "| tinyseek" in p.stdout
