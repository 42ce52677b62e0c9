"""Data and expert parallelism in pretraining across processes (Gloo on CPU), through the CLI:

- 2 and 4 data-parallel ranks, expert parallelism over 2 ranks, 2 x 2 (EP x DP) and 4, each give
  one process's losses on the same global batch over 20 steps (fp32 reduction order), its final
  weights, and its loss-free bias exactly;
- a checkpoint saved on 4 ranks (EP 2 x DP 2) resumes on 4, 2 and 1 ranks with the uninterrupted
  run's losses; generate reads the sharded checkpoint as one model;
- `torchrun --no-python tinyseek run` trains as `tinyseek launch` does;
- a rank killed with SIGKILL stops the others within seconds, naming it;
- layouts that cannot work exit 2 naming the key.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = Path(os.environ.get("TINYSEEK_LIBRARY", ROOT / "build" / "libtinyseek.so"))
BIN = LIB.parent / "tinyseek"

pytestmark = pytest.mark.skipif(not BIN.exists(), reason=f"{BIN} not built")

# An MoE model with loss-free balancing, the sequence-wise balance loss and one MTP module: every
# piece whose gradient or statistics must be combined across ranks.
CONFIG = """\
kind: pretrain
name: dp
seed: 7
data: {source: synthetic, seq_len: 32, synthetic_bytes: 200000}
model:
  d_model: 64
  n_layers: 2
  n_heads: 4
  ffn_hidden: 128
  ffn: moe
  moe: {n_routed_experts: 8, top_k: 2, n_shared_experts: 1, expert_hidden: 32, loss_free: true,
        seq_aux_loss_alpha: 0.001}
  mtp: {depth: 1}
train: {steps: 20, batch_size: 8, lr: 3.0e-3, warmup_steps: 2, eval_every: 10, eval_batches: 2, log_every: 5,
        checkpoint_every: 10, threads: 1}
dist: {dead_after_s: 2}
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("dp")
    (d / "dp.yaml").write_text(CONFIG)
    return d


def run(work, name, nproc=1, *extra, resume=False, timeout=240):
    cmd = [str(BIN), "run"] if nproc == 1 else [str(BIN), "launch", "--nproc", str(nproc)]
    cmd += [str(work / "dp.yaml"), "--no-report", "--set", f"output.dir={work / 'runs'}", "--set", f"name={name}"]
    for e in extra:
        cmd += ["--set", e]
    if resume:
        cmd.append("--resume")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    return p


def metrics(work, name):
    return [json.loads(l) for l in (work / "runs" / name / "default" / "metrics.jsonl").read_text().splitlines()]


def weights(work, name):
    import tinyseek
    return dict(tinyseek.load(work / "runs" / name / "default").state_dict())


def assert_same_run(work, name, base="one"):
    a, b = metrics(work, base), metrics(work, name)
    assert [m["step"] for m in a] == [m["step"] for m in b]
    for x, y in zip(a, b):
        for key in ("loss", "val_loss", "mtp_loss/1", "aux_loss", "val_mtp_loss/1"):
            if key in x:
                assert abs(x[key] - y[key]) <= 1e-5 * abs(x[key]) + 1e-7, (name, x["step"], key, x[key], y[key])
    wa, wb = weights(work, base), weights(work, name)
    assert wa.keys() == wb.keys()
    for k, v in wa.items():
        if "expert_bias" in k:  # signs of the summed loads: exactly one process's
            assert (wb[k] == v).all(), (name, k)
            assert v.abs().sum() > 0, k
        elif v.is_floating_point():
            # AdamW's normalized update turns reduction-order differences of near-zero gradients
            # into ~1e-5 of a weight over 20 steps.
            rel = ((wb[k] - v).norm() / v.norm()).item()
            assert rel <= 1e-4, (name, k, rel)


@pytest.fixture(scope="module")
def one(work):
    run(work, "one")
    return work


@pytest.mark.parametrize("nproc,expert", [(2, 0), (4, 0), (2, 2), (4, 2), (4, 4)],
                         ids=["dp2", "dp4", "ep2", "ep2_x_dp2", "ep4"])
def test_parallel_training_equals_one_process(one, nproc, expert):
    name = f"n{nproc}e{expert}"
    p = run(one, name, nproc, f"parallel.expert={expert}")
    summary = json.loads((one / "runs" / name / "default" / "summary.json").read_text())
    assert summary["ranks"] == nproc and summary["expert_parallel"] == max(expert, 1)
    assert summary["parameters"] == json.loads((one / "runs" / "one" / "default" / "summary.json").read_text())[
        "parameters"]
    assert summary["grad_sync"]["buckets"] >= 1
    assert f"{nproc} ranks ({8 // nproc} sequences each" in p.stdout
    assert_same_run(one, name)


def test_checkpoint_of_4_ranks_resumes_on_4_2_and_1(one):
    run(one, "cut", 4, "parallel.expert=2", "train.stop_at=10")
    step = one / "runs" / "cut" / "default" / "checkpoints" / "step_00000010"
    files = sorted(p.name for p in step.iterdir())
    assert files == ["manifest.json", "shard0.model.safetensors", "shard0.optim.safetensors",
                     "shard1.model.safetensors", "shard1.optim.safetensors", "state.json"], files
    state = json.loads((step / "state.json").read_text())
    assert state["shards"]["count"] == 2 and "blocks.0.ffn.w13.weight" in state["shards"]["split"]
    for nproc, expert in [(4, 2), (2, 2), (2, 0), (1, 0)]:
        name = f"resumed{nproc}e{expert}"
        shutil.copytree(one / "runs" / "cut", one / "runs" / name)
        run(one, name, nproc, f"parallel.expert={expert}", resume=True)
        assert_same_run(one, name)
    # generate reads the sharded checkpoint as one model: the same tokens as from one process's.
    outs = []
    for name in ("one", "resumed2e2"):
        p = subprocess.run([str(BIN), "generate", str(one / "runs" / name / "default"), "--prompt", "abc",
                            "--max-new-tokens", "8", "--temperature", "0", "--json"], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stderr
        outs.append(json.loads(p.stdout)["completions"][0]["tokens"])
    assert outs[0] == outs[1]


def test_damaged_shard_falls_back_to_the_older_checkpoint(one):
    run(one, "dmg", 2, "parallel.expert=2", "train.stop_at=20", "train.checkpoint_every=5")
    ckpt = one / "runs" / "dmg" / "default" / "checkpoints"
    # A flipped byte in shard 1 of the newest checkpoint; the run had stopped at 20 = train.steps,
    # so raise train.steps to resume.
    f = ckpt / "step_00000020" / "shard1.optim.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    p = run(one, "dmg", 2, "parallel.expert=2", "train.steps=22", resume=True)
    assert "shard1.optim.safetensors: CRC-32" in p.stdout + p.stderr, p.stdout[-3000:]
    assert "resuming at step 15" in p.stdout + p.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_trains_like_launch(one):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside this Python")
    cmd = [str(torchrun), "--nproc-per-node", "2", "--master-port", str(free_port()), "--no-python", str(BIN), "run",
           str(one / "dp.yaml"), "--no-report", "--set", f"output.dir={one / 'runs'}", "--set", "name=torchrun",
           "--set", "parallel.expert=2"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert_same_run(one, "torchrun")


def test_killed_rank_stops_the_others_naming_it(work):
    port, procs = free_port(), []
    for r in range(2):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        cmd = [str(BIN), "run", str(work / "dp.yaml"), "--no-report", "--set", f"output.dir={work / 'runs'}",
               "--set", "name=killed", "--set", "train.steps=100000", "--set", "train.log_every=1"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    # Rank 0 prints progress; once training runs, rank 1 dies without a word.
    deadline = time.time() + 120
    for line in procs[0].stdout:
        if "step 3/" in line or time.time() > deadline:
            break
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.time()
    try:
        _, err = procs[0].communicate(timeout=60)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        pytest.fail("rank 0 still running 60 s after rank 1 was killed")
    assert procs[0].returncode != 0
    assert time.time() - t0 < 30, time.time() - t0
    assert "rank 1" in err, err[-3000:]


@pytest.mark.parametrize("nproc,sets,message", [
    (1, ["parallel.expert=2"], "parallel.expert: 2 needs a job of a multiple of 2 ranks"),
    (4, ["parallel.expert=3"], "parallel.expert: 3 does not divide the 4 ranks of this job"),
    (2, ["parallel.data=4"], "parallel.data: 4 data-parallel ranks, but this job has 2"),
    (4, ["train.batch_size=6"], "train.batch_size: 6 sequences do not split over the 4 ranks"),
    (2, ["parallel.expert=2", "model.ffn=dense"], "expert parallelism splits the routed experts"),
], ids=["ep_on_one_process", "ep_does_not_divide", "data_mismatch", "batch_split", "ep_without_moe"])
def test_impossible_layouts_exit_2_before_writing(work, nproc, sets, message):
    out = work / "bad"
    cmd = [str(BIN), "run"] if nproc == 1 else [str(BIN), "launch", "--nproc", str(nproc)]
    cmd += [str(work / "dp.yaml"), "--no-report", "--set", f"output.dir={out}"]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert message in p.stdout + p.stderr, p.stdout[-2000:] + p.stderr[-2000:]
    assert not out.exists() or not any(out.rglob("*.json*"))


def test_distributed_tiny_v3_config_keeps_tiny_v3s_model():
    """configs/tiny_v3_distributed.yaml repeats configs/tiny_v3.yaml's model and data: they must not drift."""
    import yaml
    a = yaml.safe_load((ROOT / "configs" / "tiny_v3.yaml").read_text())
    b = yaml.safe_load((ROOT / "configs" / "tiny_v3_distributed.yaml").read_text())
    assert a["model"] == b["model"] and a["data"] == b["data"] and a["seed"] == b["seed"]
    assert b["kind"] == "pretrain" and b["parallel"]["expert"] == 2


@pytest.mark.parametrize("variant", ["1f1b", "dualpipe_moe"])
def test_pipeline_with_data_parallelism_equals_one_pipeline(tmp_path, variant):
    """4 ranks as 2 data-parallel pipelines of 2 (M micro-batches each) train as one 2-rank pipeline
    over the same 2M micro-batches: losses, every rank's weights, the loss-free bias."""
    parity = ROOT / "configs" / "pipeline_parity.yaml"
    common = ["--variant", variant, "--no-report", "--set", "train.steps=5", "--set", "train.checkpoint_every=5"]
    runs = {"dp": (4, ["--set", "parallel.data=2", "--set", "pipeline.check_sequential=true"]),
            "one": (2, ["--set", "pipeline.microbatches=16", "--set", "pipeline.check_sequential=false"])}
    out = {}
    for name, (nproc, extra) in runs.items():
        p = subprocess.run([str(BIN), "launch", "--nproc", str(nproc), str(parity), *common, "--set",
                            f"output.dir={tmp_path / name}", *extra], capture_output=True, text=True, timeout=240)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        out[name] = p.stdout
    assert "on 4 ranks (gloo backend) as 2 data-parallel pipelines of 2" in out["dp"], out["dp"][-2000:]
    a, b = (metrics_at(tmp_path / n / "pipeline_parity" / variant) for n in ("dp", "one"))
    assert len(a) == len(b) == 5
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-5 * abs(y), (a, b)
    s = json.loads((tmp_path / "dp" / "pipeline_parity" / variant / "summary.json").read_text())
    assert s["data_parallel"] == 2 and s["pipeline_ranks"] == 2 and s["ranks"] == 4
    assert s["parity"]["max_grad_rel_diff"] <= 1e-6  # each pipeline against sequential training of its rows
    from safetensors.torch import load_file
    for r in range(2):  # pipeline rank r: rank r of the 2-rank job, ranks r and r + 2 of the 4-rank one
        one = load_file(str(tmp_path / "one" / "pipeline_parity" / variant / "checkpoints" / f"rank_{r}" /
                            "step_00000005" / "model.safetensors"))
        for g in (r, r + 2):
            dp = load_file(str(tmp_path / "dp" / "pipeline_parity" / variant / "checkpoints" / f"rank_{g}" /
                               "step_00000005" / "model.safetensors"))
            for k, v in one.items():
                if "expert_bias" in k:
                    assert (dp[k] == v).all(), (g, k)
                elif v.is_floating_point() and v.norm() > 0:
                    assert ((dp[k] - v).norm() / v.norm()).item() <= 1e-4, (g, k)


def metrics_at(run_dir: Path) -> list[float]:
    return [json.loads(l)["loss"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(l)]


def test_check_takes_the_rank_count():
    cfg = str(ROOT / "configs" / "tiny_v3_distributed.yaml")
    p = subprocess.run([str(BIN), "check", cfg, "--nproc", "4"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "4 ranks" in p.stdout, p.stdout + p.stderr
    p = subprocess.run([str(BIN), "check", cfg], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "parallel.expert: 2 needs a job of a multiple of 2 ranks" in p.stderr, p.stderr


@pytest.mark.parametrize("how", ["sigkill", "ctrl_c"])
def test_multi_rank_job_stopped_then_resumed_equals_one_process(one, how):
    """SIGKILL of the launcher and every rank mid-run (no checkpoint at the stop), or Ctrl-C (a
    checkpoint at the stop, exit 130): --resume on 2 ranks ends as the uninterrupted run."""
    name = f"stopped_{how}"
    cmd = [str(BIN), "launch", "--nproc", "2", str(one / "dp.yaml"), "--no-report", "--set",
           f"output.dir={one / 'runs'}", "--set", f"name={name}", "--set", "parallel.expert=2", "--set",
           "train.checkpoint_every=3", "--set", "train.log_every=1"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    for line in p.stdout:
        if "step 8/20" in line:
            break
    if how == "sigkill":
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    else:
        p.send_signal(signal.SIGINT)
        rest = p.communicate(timeout=60)[0]
        assert p.returncode == 130, rest[-2000:]
        assert "checkpoint saved, continue with --resume" in rest
    summary = one / "runs" / name / "default" / "summary.json"
    assert how == "ctrl_c" or not summary.exists()
    run(one, name, 2, "parallel.expert=2", "train.checkpoint_every=3", resume=True)
    assert_same_run(one, name)


def test_ctrl_c_stops_a_pipeline_under_launch_and_it_resumes(tmp_path):
    parity = ROOT / "configs" / "pipeline_parity.yaml"
    common = [str(BIN), "launch", "--nproc", "2", str(parity), "--variant", "1f1b", "--no-report", "--set",
              f"output.dir={tmp_path}", "--set", "pipeline.check_sequential=false", "--set", "train.log_every=1",
              "--set", "train.steps=40", "--set", "train.checkpoint_every=1000"]
    p = subprocess.Popen(common, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        if "step 3/40" in line:
            break
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 130, out[-3000:]
    assert "interrupted at step" in out and "checkpoint saved" in out, out[-3000:]
    ckpt = tmp_path / "pipeline_parity" / "1f1b" / "checkpoints"
    assert (ckpt / "rank_0" / "latest").exists() and (ckpt / "rank_1" / "latest").exists()
    r = subprocess.run(common + ["--resume"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resuming at step" in r.stdout
    assert json.loads((tmp_path / "pipeline_parity" / "1f1b" / "summary.json").read_text())["steps"] == 40


@pytest.mark.parametrize("dying", [1, 0])
def test_rank_dying_before_the_rendezvous_stops_the_job_within_seconds(work, dying):
    """A rank exits before it joins (fault injection), within seconds, long before the launcher's
    20 s grace or the 60 s rendezvous timeout. Rank 1: `tinyseek launch` posts it to the store,
    and rank 0, still waiting in the rendezvous, stops at once naming it. Rank 0, the store's host:
    nothing can be posted, so the launcher ends the others at once."""
    env = dict(os.environ, TINYSEEK_DEBUG_EXIT_BEFORE_JOIN=str(dying))
    t0 = time.time()
    p = subprocess.run([str(BIN), "launch", "--nproc", "2", str(work / "dp.yaml"), "--no-report", "--set",
                        f"output.dir={work / 'startup'}"], capture_output=True, text=True, timeout=120, env=env)
    elapsed = time.time() - t0
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    assert elapsed < 12, elapsed
    assert f"tinyseek launch: rank {dying} exited with code 17" in p.stderr, p.stderr[-2000:]
    if dying == 1:
        assert "[rank 0] error: rank 0: the job stopped before every rank joined (1 of 2)" in p.stderr, p.stderr[-2000:]
    else:
        assert "the rendezvous store (rank 0) is gone; stopping the other ranks now" in p.stderr, p.stderr[-2000:]
