"""README's "From Python" examples, run as written against a small tiny-V3 run trained here:
tinyseek.load, generation (plain and speculative), a model from a config with MTP, a Python
fine-tuning loop over the C++ model that lowers the loss, and one GRPO step with a Python reward."""
import contextlib
import io
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from conftest import tinyseek_bin

ROOT = Path(__file__).resolve().parents[2]


def readme_blocks():
    text = (ROOT / "README.md").read_text()
    section = text.split("### From Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = readme_blocks()
    assert len(blocks) == 3
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "tiny_v3.yaml", tmp_path / "configs" / "tiny_v3.yaml")
    c = yaml.safe_load((ROOT / "configs" / "tiny_v3.yaml").read_text())
    c["data"].update(seq_len=96, synthetic_bytes=60000)
    c["model"]["n_layers"] = 2
    c["train"].update(steps=20, batch_size=4, warmup_steps=2, eval_every=20, eval_batches=1, log_every=10,
                      checkpoint_every=20)
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(c, sort_keys=False))
    r = subprocess.run([tinyseek_bin(), "run", "small.yaml", "--variant", "tiny_v3", "--no-report"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "runs" / "tiny_v3" / "tiny_v3").is_dir()
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block, "README.md", "exec"), ns)
    lines = out.getvalue().splitlines()
    assert ns["fresh"].mtp_depth == 2 and ns["model"].mtp_depth == 1
    losses = [float(l.split()[1]) for l in lines if re.fullmatch(r"\d+ [0-9.]+", l)]
    assert len(losses) == 10 and losses[-1] < 0.8 * losses[0], losses
    assert ns["tokens"].shape == (8, 4 + 8) and ns["logp"].shape == (8, 8)
    assert ns["loss"].requires_grad is True or ns["loss"].grad_fn is not None
