"""Pipeline parallelism across processes (Gloo on CPU), through the `tinyseek` CLI.

- every schedule with 4 ranks gives the loss and gradients of sequential training (<= 1e-6);
- a rank that dies mid-step makes the others exit non-zero within 60 s, naming it, both under
  torchrun-style variables alone (their watchdogs) and under `tinyseek launch` (which posts the
  death to the store);
- `pipeline show` writes SVG/JSON/PNG and `pipeline simulate --json` reports the formula;
- libtinyseek.so defines no gloo symbol (the gloo headers are used for declarations only).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = Path(os.environ.get("TINYSEEK_LIBRARY", ROOT / "build" / "libtinyseek.so"))
BIN = LIB.parent / "tinyseek"
PARITY = ROOT / "configs" / "pipeline_parity.yaml"

pytestmark = pytest.mark.skipif(not BIN.exists(), reason=f"{BIN} not built")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_launch_every_schedule_matches_sequential(tmp_path):
    t0 = time.time()
    p = subprocess.run([str(BIN), "launch", "--nproc", "4", str(PARITY), "--no-report", "--set", f"output.dir={tmp_path}"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    variants = ["1f1b", "zb1p", "dualpipe", "dualpipev", "dualpipe_batched", "dualpipe_moe", "1f1b_mtp", "zb1p_mtp",
                "dualpipe_mtp", "dualpipev_mtp"]
    for v in variants:
        summary = json.loads((tmp_path / "pipeline_parity" / v / "summary.json").read_text())
        parity = summary["parity"]
        assert parity["max_grad_rel_diff"] <= 1e-6, (v, parity)
        assert parity["loss_rel_diff"] <= 1e-6, (v, parity)
        assert summary["status"] == "completed"
        assert (tmp_path / "pipeline_parity" / v / "timeline_measured.svg").exists()
        # The simulator's prediction from this run's own durations (computes and postings).
        pred, costs = summary["predicted_from_run_costs"], summary["run_costs_s"]
        assert pred["step_s"] > 0 and 0 <= pred["bubble_fraction"] < 1, (v, pred)
        assert costs["F"] > 0 and costs["post"] >= 0, (v, costs)
        # ... and from its CPU times with the ranks sharing the cores (CPU runs only).
        pred, cpu = summary["predicted_from_run_cpu"], summary["run_cpu_costs_s"]
        assert pred["step_s"] > 0 and 0 <= pred["bubble_fraction"] < 1, (v, pred)
        assert cpu["F"] > 0 and cpu["post"] >= 0 and cpu["message"] >= 0, (v, cpu)
        assert summary["cores"] >= 1
        assert summary["step_ms"] == summary["step_s"] * 1e3
    # MoE: every rank's checkpoint (its stages) holds a moved loss-free bias, equal on DualPipe's two
    # copies of a stage (rank r holds stages r and 3 - r, as does rank 3 - r).
    from safetensors.torch import load_file
    import torch
    ckpt = tmp_path / "pipeline_parity" / "dualpipe_moe" / "checkpoints"
    w = [load_file(str(ckpt / f"rank_{r}" / "step_00000003" / "model.safetensors")) for r in range(4)]
    for r in range(4):
        for stage in (r, 3 - r):
            for block in (2 * stage, 2 * stage + 1):
                bias = w[r][f"blocks.{block}.ffn.expert_bias"]
                assert bias.abs().sum() > 0, (r, block)
                assert torch.equal(bias, w[3 - r][f"blocks.{block}.ffn.expert_bias"]), (r, block)
    # MTP with 1F1B: ranks 0 (first stage) and 3 (last stage, the MTP modules) each train a copy of
    # the embedding; summing its gradient keeps the copies equal bit for bit.
    for v in ("1f1b_mtp", "zb1p_mtp"):
        ckpt = tmp_path / "pipeline_parity" / v / "checkpoints"
        e0, e3 = (load_file(str(ckpt / f"rank_{r}" / "step_00000002" / "model.safetensors")) for r in (0, 3))
        assert torch.equal(e0["embed.weight"], e3["embed.weight"]), v
    # Every rank reported its own comparison, prefixed by the launcher.
    for r in range(4):
        assert f"[rank {r}] pipeline_parity/dualpipe: parity on rank {r}" in p.stdout
    print(f"parity across {len(variants)} variants in {time.time() - t0:.1f} s")


def run_ranks(tmp_path, extra):
    """Starts 4 ranks as torchrun would (no launcher); returns [(rc, stderr, seconds)]."""
    port = free_port()
    procs, t0 = [], time.time()
    for r in range(4):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE="4", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        cmd = [str(BIN), "run", str(PARITY), "--no-report", "--set", f"output.dir={tmp_path}", *extra]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            err += "\n(test: killed after 90 s)"
        out.append((p.returncode, err, time.time() - t0))
    return out


DEATH = ["--set", "pipeline.schedule=1f1b", "--set", "pipeline.debug_exit_rank=2",
         "--set", "pipeline.debug_exit_after=5", "--set", "pipeline.check_sequential=false",
         "--set", "dist.dead_after_s=2"]


def test_dead_rank_stops_the_others_naming_it(tmp_path):
    results = run_ranks(tmp_path, DEATH)
    assert results[2][0] == 17, results[2]
    for r in (0, 1, 3):
        rc, err, seconds = results[r]
        assert rc != 0, (r, err[-2000:])
        assert seconds < 60, (r, seconds)
        assert "rank 2" in err, (r, err[-2000:])


def test_launch_names_the_dead_rank(tmp_path):
    t0 = time.time()
    p = subprocess.run([str(BIN), "launch", "--nproc", "4", str(PARITY), "--no-report", "--set", f"output.dir={tmp_path}", *DEATH],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr[-3000:]
    assert time.time() - t0 < 60
    assert "tinyseek launch: rank 2 exited with code 17" in p.stderr, p.stderr[-3000:]
    assert "tinyseek launch: failed: rank 2" in p.stderr
    # The launcher posts the death to the store at once: every survivor stops naming rank 2 (their
    # own watchdogs do the same without a launcher: test_dead_rank_stops_the_others_naming_it).
    for r in (0, 1, 3):
        lines = [l for l in p.stderr.splitlines() if l.startswith(f"[rank {r}] error:")]
        assert lines and "rank 2 exited with code 17" in lines[-1], (r, p.stderr[-3000:])


def test_pipeline_show_writes_svg_json_png(tmp_path):
    p = subprocess.run([str(BIN), "pipeline", "show", "--schedule", "dualpipe", "--ranks", "8", "--microbatches", "20",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "r7 " in p.stdout or "r7|" in p.stdout or "r7" in p.stdout
    stem = tmp_path / "dualpipe_r8_m20"
    assert stem.with_suffix(".svg").read_text().startswith("<svg")
    data = json.loads(stem.with_suffix(".json").read_text())
    assert data["ranks"] == 8 and data["microbatches"] == 20
    png = stem.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000


def test_pipeline_simulate_json_reports_the_formula():
    # README: 1F1B bubble (PP-1)(F+B) with B the full backward; here B=2 (input) + W=1.
    p = subprocess.run([str(BIN), "pipeline", "simulate", "--schedule", "1f1b", "--ranks", "4", "--microbatches", "8",
                        "--costs", "3,2,1,6", "--json"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["formula_bubble"] == pytest.approx(3 * (3 + 2 + 1))
    assert j["critical_bubble"] == pytest.approx(j["formula_bubble"])
    assert len(j["bubble"]) == 4 and len(j["peak_activations"]) == 4
    bad = subprocess.run([str(BIN), "pipeline", "simulate", "--costs", "1,x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--costs" in bad.stderr


def test_pipeline_simulate_shared_cores_with_message_cpu():
    def sim(*extra):
        p = subprocess.run([str(BIN), "pipeline", "simulate", "--schedule", "1f1b", "--ranks", "4", "--microbatches",
                            "8", "--costs", "3,2,1,6", "--json", *extra], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)
    # On one core everything is back to back: 4 ranks x 8 micro-batches x (F + B + W), plus one
    # message_cpu for each of the 2 x 3 x 8 messages.
    assert sim("--cores", "1")["total"] == pytest.approx(4 * 8 * 6)
    j = sim("--cores", "1", "--message-cpu", "0.5")
    assert j["total"] == pytest.approx(4 * 8 * 6 + 48 * 0.5) and j["message_cpu"] == 0.5
    bad = subprocess.run([str(BIN), "pipeline", "simulate", "--message-cpu", "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--cores" in bad.stderr


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm not installed")
def test_library_defines_no_gloo_symbols():
    out = subprocess.run(["nm", "-C", "--defined-only", str(LIB)], capture_output=True, text=True, check=True).stdout
    gloo = [line for line in out.splitlines() if " gloo::" in line]
    assert not gloo, gloo[:10]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
