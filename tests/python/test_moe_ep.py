"""Expert parallelism for the MoE layer across processes (Gloo on CPU), through `tinyseek launch`:
every rank's output and gradients match the single-process layer (configs/moe_ep_parity.yaml)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = Path(os.environ.get("TINYSEEK_LIBRARY", ROOT / "build" / "libtinyseek.so"))
BIN = LIB.parent / "tinyseek"
CONFIG = ROOT / "configs" / "moe_ep_parity.yaml"

pytestmark = pytest.mark.skipif(not BIN.exists(), reason=f"{BIN} not built")


@pytest.mark.parametrize("nproc,expert,groups", [(2, 0, 1), (4, 0, 1), (4, 2, 2)],
                         ids=["2ranks", "4ranks", "4ranks_ep2_x_dp2"])
def test_expert_parallel_matches_single_process(tmp_path, nproc, expert, groups):
    p = subprocess.run([str(BIN), "launch", "--nproc", str(nproc), str(CONFIG), "--no-report",
                        "--set", f"output.dir={tmp_path}", "--set", f"parallel.expert={expert}"],
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    ep = expert or nproc
    for v, experts in [("v2_softmax_top2", 8), ("v3_sigmoid_groups", 16)]:
        s = json.loads((tmp_path / "moe_ep_parity" / v / "summary.json").read_text())
        assert s["status"] == "completed" and s["ranks"] == nproc and s["expert_parallel"] == ep, s
        assert s["experts_per_rank"] == experts // ep, s
        assert s["parity"]["max_rel_diff"] <= 1e-5, s["parity"]
        for r in range(nproc):
            assert (f"[rank {r}] moe_ep_parity/{v}: expert-parallel parity on rank {r} of {nproc} "
                    f"({groups} expert-parallel group(s) of {ep} ranks, {experts // ep} experts per rank)") in p.stdout


def test_expert_group_must_divide_the_ranks(tmp_path):
    p = subprocess.run([str(BIN), "launch", "--nproc", "4", str(CONFIG), "--no-report",
                        "--set", f"output.dir={tmp_path}", "--set", "parallel.expert=3"],
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert "parallel.expert: 3 does not divide the 4 ranks of this job" in p.stdout + p.stderr


def test_experts_must_divide_over_the_ranks(tmp_path):
    p = subprocess.run([str(BIN), "launch", "--nproc", "3", str(CONFIG), "--no-report", "--set", f"output.dir={tmp_path}"],
                       capture_output=True, text=True, timeout=240)
    assert p.returncode != 0
    assert "model.moe.n_routed_experts: expert parallelism over 3 ranks needs a multiple of 3, got 8" in (
        p.stdout + p.stderr)


def test_ctrl_c_during_the_timed_passes_stops_every_rank(tmp_path):
    import signal
    import time

    p = subprocess.Popen([str(BIN), "launch", "--nproc", "2", str(CONFIG), "--no-report", "--set",
                          f"output.dir={tmp_path}", "--set", "train.steps=100000"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        if "expert-parallel parity on rank" in line:
            break
    time.sleep(0.5)  # inside the timed passes
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 130, out[-3000:]
    assert time.monotonic() - t0 < 10, out[-3000:]
    assert "interrupted during the timed passes" in out, out[-3000:]
    assert not (tmp_path / "moe_ep_parity" / "v3_sigmoid_groups").exists()  # the next variant never began
