"""The `tinyseek` CLI end to end: config errors exit 2 and write nothing; a tiny run writes the
documented layout; its checkpoint loads with safetensors; report renders."""
import json
import subprocess
from pathlib import Path

import pytest

from safetensors.torch import load_file

from conftest import tinyseek_bin

TINY = """\
kind: pretrain
name: clitest
data: {seq_len: 32, synthetic_bytes: 60000}
model: {d_model: 32, n_layers: 2, n_heads: 2, ffn_hidden: 64}
train: {steps: 6, batch_size: 4, warmup_steps: 2, eval_every: 3, eval_batches: 2, checkpoint_every: 3}
variants:
  small: {}
  wide: {model.d_model: 48}
"""


def run(args, cwd):
    return subprocess.run([tinyseek_bin(), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_misspelt_key_exits_2_with_file_line_and_suggestion(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: bad\nmodel:\n  d_model: 32\n  n_hedas: 2\n")
    r = run(["run", str(cfg)], tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"{cfg}:4: model.n_hedas: unknown key; did you mean 'model.n_heads'?" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_usage_errors_exit_2(tmp_path):
    assert run(["run"], tmp_path).returncode == 2
    assert run(["frobnicate"], tmp_path).returncode == 2
    assert run(["run", str(tmp_path / "missing.yaml")], tmp_path).returncode == 2
    r = run(["run", "--help"], tmp_path)
    assert r.returncode == 0 and "--resume" in r.stdout


def test_run_layout_checkpoint_and_report(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    r = run(["run", str(cfg), "--set", "train.steps=6"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    root = tmp_path / "runs" / "clitest"
    for variant in ["small", "wide"]:
        d = root / variant
        for f in ["config.resolved.yaml", "metrics.jsonl", "summary.json", "checkpoints/latest"]:
            assert (d / f).exists(), f
        summary = json.loads((d / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps"] == 6
        step_dir = d / "checkpoints" / (d / "checkpoints" / "latest").read_text().strip()
        weights = load_file(str(step_dir / "model.safetensors"))
        assert "embed.weight" in weights and "blocks.0.attn.wq.weight" in weights
        assert weights["embed.weight"].shape[1] == (32 if variant == "small" else 48)
    report = (root / "report.md").read_text()
    assert "| small |" in report and "| wide |" in report
    assert (root / "plots" / "loss.png").stat().st_size > 1000

    # `report` over existing runs re-renders the comparison.
    r = run(["report", str(root), "--out", str(tmp_path / "rep")], tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rep" / "report.md").exists()

    # --resume skips completed variants.
    r = run(["run", str(cfg), "--resume"], tmp_path)
    assert r.returncode == 0 and "already completed" in r.stdout


def test_variant_option_runs_only_the_named_variants(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    r = run(["run", str(cfg), "--variant", "wide", "--no-report"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    root = tmp_path / "runs" / "clitest"
    assert (root / "wide" / "summary.json").exists() and not (root / "small").exists()
    r = run(["run", str(cfg), "--variant", "narrow"], tmp_path)
    assert r.returncode == 2
    assert "--variant narrow:" in r.stderr and "(it has: small, wide)" in r.stderr


def test_ctrl_c_saves_checkpoint_and_resume_finishes(tmp_path):
    import signal
    import time

    cfg = tmp_path / "long.yaml"
    cfg.write_text(TINY.split("variants:")[0].replace("steps: 6", "steps: 400").replace("checkpoint_every: 3",
                                                                                       "checkpoint_every: 1000"))
    p = subprocess.Popen([tinyseek_bin(), "run", str(cfg)], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "runs" / "clitest" / "default" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or metrics.stat().st_size == 0):
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, out + err
    assert "interrupted at step" in out
    d = tmp_path / "runs" / "clitest" / "default"
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    stopped = summary["steps"]
    assert 0 < stopped < 400
    assert (d / "checkpoints" / "latest").read_text().strip() == f"step_{stopped:08d}"
    r = run(["run", str(cfg), "--resume"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resuming at step {stopped}" in r.stdout
    assert json.loads((d / "summary.json").read_text())["steps"] == 400


# Names that would leave the output folder or reach a shell (they did, before names were checked
# and the plot helper was started without one).
BAD_NAMES = ["x'; touch PWNED; echo '", "/", "..", "../../escaped", "a/b", "", "$(touch PWNED)", "`touch PWNED`"]


def test_names_that_are_not_one_path_component_exit_2_and_write_nothing(tmp_path):
    for bad in BAD_NAMES:
        cfg = tmp_path / "bad.yaml"
        cfg.write_text(TINY.replace("name: clitest", "name: " + json.dumps(bad)))
        r = run(["run", str(cfg)], tmp_path)
        assert r.returncode == 2, (bad, r.stderr)
        assert f"{cfg}:2: name: " in r.stderr, (bad, r.stderr)
        cfg.write_text(TINY.replace("  wide:", "  " + json.dumps(bad or "x/y") + ":"))
        r = run(["run", str(cfg)], tmp_path)
        assert r.returncode == 2, (bad, r.stderr)
        assert "variants: '" in r.stderr, (bad, r.stderr)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "PWNED").exists()
    assert not (tmp_path.parent / "escaped").exists()


def test_output_dir_with_shell_characters_reaches_no_shell(tmp_path):
    # Any folder name is allowed for output.dir; the report's plot helper gets it as an argument.
    odd = "o'; touch PWNED; echo '$(touch PWNED2)"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.split("variants:")[0] + f"output: {{dir: {json.dumps(odd)}}}\n")
    r = run(["run", str(cfg)], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    root = tmp_path / odd / "clitest"
    assert (root / "report.md").exists() and (root / "plots" / "loss.png").stat().st_size > 1000
    assert not list(tmp_path.glob("PWNED*"))


def test_an_invalid_second_variant_exits_2_before_the_first_runs(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("  wide: {model.d_model: 48}", "  wide: {model.n_heads: 3}"))
    r = run(["run", str(cfg)], tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip() == (f"error: {cfg}:8 (variant 'wide'): model.n_heads: must divide model.d_model (32), "
                                f"got 3")
    assert "clitest/small" not in r.stdout and not (tmp_path / "runs").exists()
    # The kind is checked the same way, against the registered kinds.
    cfg.write_text(TINY.replace("kind: pretrain", "kind: pretrian"))
    r = run(["run", str(cfg)], tmp_path)
    assert r.returncode == 2 and f"{cfg}:1: kind: expected one of: pretrain," in r.stderr
    assert "did you mean 'pretrain'?" in r.stderr and not (tmp_path / "runs").exists()


def test_resume_of_a_completed_run_with_more_steps_continues(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.split("variants:")[0])
    assert run(["run", str(cfg), "--no-report"], tmp_path).returncode == 0
    r = run(["run", str(cfg), "--no-report", "--resume", "--set", "train.steps=9"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming at step 6" in r.stdout
    summary = json.loads((tmp_path / "runs" / "clitest" / "default" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 9


def test_inputs_that_are_not_one_config_exit_2_in_one_line_and_write_nothing(tmp_path):
    # Regressions: each of these once trained the default model.
    cases = {
        "empty.yaml": ("", "the config is empty"),
        "comment.yaml": ("# nothing but a comment\n", "the config is empty"),
        "null.yaml": ("~\n", "the config is empty"),
        "dup.yaml": ("name: a\ntrain: {steps: 2}\nname: b\n", ":3: duplicate key 'name'"),
        "dup_nested.yaml": ("model:\n  d_model: 32\n  d_model: 64\n", ":3: duplicate key 'd_model'"),
        "two.yaml": ("name: a\n---\nname: b\n", ":2: a second YAML document"),
        # Found by fuzz/config_fuzz.cpp: yaml-cpp's LoadAll never returned on a lone ','.
        "comma.yaml": (",", ":1: a second YAML document"),
        # Also found by the fuzzer: a key that is a list or a mapping escaped as yaml-cpp's exception.
        "complex_key.yaml": ("model:\n  ? [a, b]\n  : 1\n", ":2: a key must be a plain name, got a list"),
        # Resource bombs: aliases standing for 10^7 values, a file of 1.1 MB, 4096 threads.
        "bomb.yaml": ("name: a\nx0: &x0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
                      + "".join(f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 10)}]\n" for i in range(1, 7)),
                      "more than 100000 values"),
        "huge.yaml": ("name: a\n" + "# padding\n" * 110000, "bytes; a config is at most 1 MiB"),
        "threads.yaml": ("name: a\ntrain: {threads: 4096}\n", ":2: train.threads:"),
    }
    for file, (text, message) in cases.items():
        cfg = tmp_path / file
        cfg.write_text(text)
        r = run(["run", str(cfg)], tmp_path)
        assert r.returncode == 2, (file, r.stderr)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (file, r.stderr)
    (tmp_path / "dir.yaml").mkdir()
    for path, message in [(tmp_path / "dir.yaml", "got a directory"), (Path("/dev/null"), "got a device")]:
        r = run(["run", str(path)], tmp_path)
        assert r.returncode == 2 and message in r.stderr, (path, r.stderr)
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_another_model_and_lists_other_changes(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    r = run(["run", str(cfg), "--variant", "small", "--no-report"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    d = tmp_path / "runs" / "clitest" / "small"
    before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    for key, value in [("model.d_model", "48"), ("data.seq_len", "16"), ("seed", "7")]:
        r = run(["run", str(cfg), "--variant", "small", "--resume", "--set", f"{key}={value}"], tmp_path)
        assert r.returncode == 2, r.stdout + r.stderr
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and f"--resume: {key} is {value} here but" in err[0], err
        assert "(runs/clitest/small/config.resolved.yaml)" in err[0]
        assert {p: p.read_bytes() for p in d.rglob("*") if p.is_file()} == before  # nothing written
    # A variant's own override is located at its line in the config.
    r = run(["run", str(cfg), "--variant", "wide", "--no-report"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    edited = tmp_path / "edited.yaml"
    edited.write_text(TINY.replace("wide: {model.d_model: 48}", "wide: {model.d_model: 64}"))
    r = run(["run", str(edited), "--variant", "wide", "--resume"], tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {edited}:"), r.stderr
    # Other changes resume, listed in one line.
    r = run(["run", str(cfg), "--variant", "small", "--resume", "--no-report", "--set", "train.steps=8",
             "--set", "train.lr=0.001"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    line = [l for l in r.stdout.splitlines() if "resuming with changed settings" in l]
    assert len(line) == 1 and "train.steps: 6 -> 8" in line[0] and "train.lr: " in line[0] and "-> 0.001" in line[0]
    assert "resuming at step 6" in r.stdout


def test_ctrl_c_stops_the_fp8_accumulation_study(tmp_path):
    """Ctrl-C ends a study that is not a training loop too: exit 130, the measured lines kept."""
    import signal
    import time

    root = Path(__file__).resolve().parents[2]
    p = subprocess.Popen([tinyseek_bin(), "run", str(root / "configs" / "fp8_accumulation.yaml"), "--set",
                          f"output.dir={tmp_path / 'runs'}"], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    metrics = None
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list((tmp_path / "runs").glob("*/*/metrics.jsonl"))
        if found and found[0].stat().st_size > 0:
            metrics = found[0]
            break
        time.sleep(0.05)
    assert metrics is not None, "no GEMM measured within 120 s"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, out + err
    assert "interrupted after" in out
    summary = json.loads((metrics.parent / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] >= 1


def test_sizes_beyond_this_machine_exit_2_naming_the_key_before_writing(tmp_path):
    # Regressions: these ended in the allocator's raw message, or in the kernel's OOM kill.
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    # Far beyond any machine: 1 TiB of weights and optimizer state; petabytes of logits; 4 TiB of
    # activations.
    for key, sets in [("model.d_model", ["model.d_model=65536"]),
                      ("model.vocab_size", ["model.vocab_size=1048576", "train.batch_size=16384"]),
                      ("train.batch_size", ["train.batch_size=1048576"])]:
        r = run(["run", str(cfg), "--variant", "small", *[a for s in sets for a in ("--set", s)]], tmp_path)
        assert r.returncode == 2, (key, r.stderr)
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and f"{key}: training needs at least" in err[0] and "this machine has" in err[0], err
    assert not (tmp_path / "runs").exists()


def test_checkpoint_clean_up_sweeps_what_killed_saves_left(tmp_path):
    # A kill during a save or during the removal of an old checkpoint leaves temp folders and
    # files; the next save removes them, and a removed checkpoint never stays half deleted.
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("steps: 6", "steps: 12"))
    assert run(["run", str(cfg), "--variant", "small", "--set", "train.stop_at=6"], tmp_path).returncode == 0
    ckpt = tmp_path / "runs" / "clitest" / "small" / "checkpoints"
    (ckpt / ".tmp_step_00000009").mkdir()
    (ckpt / ".tmp_step_00000009" / "model.safetensors.tmp.1").write_text("partial")
    (ckpt / ".trash_step_00000001").mkdir()
    (ckpt / "latest.tmp.4242").write_text("step_0000")
    r = run(["run", str(cfg), "--variant", "small", "--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "step_00000009", "step_00000012"]


STUDY_MEASUREMENTS = {
    # The attention ablation times decoding at contexts up to 4096 after training; the MTP study
    # decodes held-out prompts plain and speculatively. Both loops run far longer than 5 s here.
    "attention_ablation": (["decode_bench.steps=2000"], "mha"),
    "mtp": (["spec_bench.repeats=50", "data.seq_len=64", "spec_bench.prompt_tokens=16",
             "spec_bench.new_tokens=32", "train.batch_size=4"], "no_mtp"),
}


@pytest.mark.parametrize("study", sorted(STUDY_MEASUREMENTS))
def test_ctrl_c_during_a_studys_measurements_stops_them_at_once(tmp_path, study):
    # A Ctrl-C once the first variant's training is over lands in its measurement loop, which
    # checks the flag every iteration: exit 130 within seconds, the next variant not started, the
    # summary written whole with status "interrupted" and no partial measurements, no report.
    import signal
    import time
    root = Path(__file__).resolve().parents[2]
    sets, first = STUDY_MEASUREMENTS[study]
    args = [f"output.dir={tmp_path}", "train.steps=3", "train.log_every=1", "train.eval_every=3",
            "train.eval_batches=1", "train.warmup_steps=1", *sets]
    cmd = [tinyseek_bin(), "run", str(root / "configs" / f"{study}.yaml")]
    for a in args:
        cmd += ["--set", a]
    p = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        if "step 3 val_loss" in line:  # the training is over; the measurements start
            break
    time.sleep(1.0)  # well inside the measurement loop
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=120)[0]
    took = time.monotonic() - sent
    assert p.returncode == 130, out[-3000:]
    assert took < 5, f"{took:.1f} s from SIGINT to exit"
    assert "interrupted during the measurements" in out, out[-3000:]
    runs = [d for d in tmp_path.iterdir() if d.is_dir()]
    assert len(runs) == 1, runs
    assert [v.name for v in runs[0].iterdir() if v.is_dir()] == [first]  # the next variant never started
    d = runs[0] / first
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["interrupted_during"] == "measurements"
    assert not any(k.startswith(("decode_tok_s", "tok_s_")) for k in summary), sorted(summary)
    assert not (runs[0] / "report.md").exists()
    assert not [f for f in d.rglob("*") if ".tmp" in f.name], "a temp file was left behind"
