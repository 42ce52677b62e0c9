"""Checkpoint integrity: every checkpoint file is listed with its size and CRC-32 in manifest.json;
a flipped byte, a truncation or a deletion of any file of the newest checkpoint makes `--resume`
fall back to the checkpoint before it, say which file was damaged, and end exactly where an
uninterrupted run ends; with no intact checkpoint it exits 2 naming the damage; `generate` refuses
damaged weights in one line."""
import json
import shutil
import subprocess

import pytest
from safetensors.torch import load_file

from conftest import tinyseek_bin

CONFIG = """\
kind: pretrain
name: ckpt
data: {seq_len: 32, synthetic_bytes: 60000}
model: {d_model: 32, n_layers: 2, n_heads: 2, ffn_hidden: 64}
train: {steps: 6, batch_size: 4, warmup_steps: 2, eval_every: 3, eval_batches: 2, checkpoint_every: 2}
"""
FILES = ["model.safetensors", "trainer_state.pt", "state.json", "manifest.json"]


def run(args, cwd):
    return subprocess.run([tinyseek_bin(), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def flip(path):
    b = bytearray(path.read_bytes())
    b[len(b) // 2] ^= 0x10
    path.write_bytes(bytes(b))


def truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def delete(path):
    path.unlink()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run of 8 steps stopped at step 6 (train.stop_at; checkpoints at 4 and 6 kept) and one trained
    to 8 uninterrupted."""
    root = tmp_path_factory.mktemp("ckpt")
    cfg = root / "c.yaml"
    cfg.write_text(CONFIG)
    for out, stop in [("six", 6), ("eight", 0)]:
        r = run(["run", str(cfg), "--set", f"output.dir={root / out}", "--set", "train.steps=8", "--set",
                 f"train.stop_at={stop}", "--no-report"], root)
        assert r.returncode == 0, r.stdout + r.stderr
    return root, cfg


def test_the_manifest_lists_every_file_with_size_and_crc(runs):
    root, _ = runs
    step = root / "six" / "ckpt" / "default" / "checkpoints" / "step_00000006"
    m = json.loads((step / "manifest.json").read_text())
    assert m["step"] == 6 and sorted(m["files"]) == sorted(FILES[:3])
    for name, e in m["files"].items():
        assert (step / name).stat().st_size == e["bytes"] and len(e["crc32"]) == 8


@pytest.mark.parametrize("damage", [flip, truncate, delete])
@pytest.mark.parametrize("name", FILES)
def test_resume_falls_back_past_a_damaged_checkpoint(runs, tmp_path, damage, name):
    root, cfg = runs
    shutil.copytree(root / "six", tmp_path / "out")
    ckpts = tmp_path / "out" / "ckpt" / "default" / "checkpoints"
    damage(ckpts / "step_00000006" / name)
    r = run(["run", str(cfg), "--set", f"output.dir={tmp_path / 'out'}", "--set", "train.steps=8", "--resume",
             "--no-report"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming at step 4" in r.stdout
    said = [l for l in r.stdout.splitlines() if "skipped damaged checkpoints" in l]
    assert len(said) == 1 and "step_00000006" in said[0] and (name in said[0] or "manifest.json" in said[0])
    # Continuing from step 4 ends exactly where the uninterrupted 8-step run ends.
    got = load_file(str(ckpts / "step_00000008" / "model.safetensors"))
    want = load_file(str(root / "eight" / "ckpt" / "default" / "checkpoints" / "step_00000008" /
                         "model.safetensors"))
    assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in got)


def test_no_intact_checkpoint_exits_2_naming_the_damage(runs, tmp_path):
    root, cfg = runs
    shutil.copytree(root / "six", tmp_path / "out")
    ckpts = tmp_path / "out" / "ckpt" / "default" / "checkpoints"
    flip(ckpts / "step_00000006" / "model.safetensors")
    truncate(ckpts / "step_00000004" / "trainer_state.pt")
    r = run(["run", str(cfg), "--set", f"output.dir={tmp_path / 'out'}", "--set", "train.steps=8", "--resume"],
            tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no intact checkpoint under ")
    assert "step_00000006/model.safetensors: CRC-32" in err[0] and "step_00000004/trainer_state.pt:" in err[0]


def test_generate_refuses_damaged_weights(runs, tmp_path):
    root, _ = runs
    shutil.copytree(root / "six", tmp_path / "out")
    variant = tmp_path / "out" / "ckpt" / "default"
    flip(variant / "checkpoints" / "step_00000006" / "model.safetensors")
    r = run(["generate", str(variant), "--prompt", "ab", "--max-new-tokens", "4"], tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().count("\n") == 0 and "model.safetensors: CRC-32" in r.stderr
