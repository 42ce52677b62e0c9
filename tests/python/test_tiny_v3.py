"""The tiny DeepSeek-V3 of the default run (configs/tiny_v3.yaml) end to end, shrunk: every feature
on (MLA with a low-rank query, group-limited sigmoid routing, the loss-free bias, the sequence-wise
loss, MTP) and FP8 as a variant; a run stopped half-way and resumed ends bit-identical to an
uninterrupted one; the trained run generates, speculatively too; the report compares the models.
And the default run's config stays within its budget."""
import json
import subprocess
from pathlib import Path

import yaml
from safetensors.torch import load_file

from conftest import tinyseek_bin

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "tiny_v3.yaml"


def run(args, cwd):
    return subprocess.run([tinyseek_bin(), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def small_config(tmp_path, steps=6):
    """configs/tiny_v3.yaml with its model as it is (but two layers), tiny data and steps, small
    decode contexts, and an FP8 variant of tiny-V3."""
    c = yaml.safe_load(CONFIG.read_text())
    c["data"].update(seq_len=32, synthetic_bytes=60000)
    c["model"]["n_layers"] = 2
    c["train"].update(steps=steps, batch_size=4, warmup_steps=2, eval_every=2, eval_batches=2, log_every=1,
                      checkpoint_every=2)
    c["decode_bench"].update(context_min=16, context_max=64, steps=2, warmup_steps=1, batch_size=2)
    c["variants"]["tiny_v3_fp8"] = {"precision": {"kind": "fp8", "fp8_recipe": "blockwise"}}
    path = tmp_path / "tiny_v3_small.yaml"
    path.write_text(yaml.safe_dump(c, sort_keys=False))  # variant order matters
    return path


def test_tiny_v3_config_has_every_v3_feature():
    m = yaml.safe_load(CONFIG.read_text())["model"]
    assert m["attention"]["kind"] == "mla" and m["attention"]["q_lora_rank"] > 0
    moe = m["moe"]
    assert m["ffn"] == "moe" and moe["score_func"] == "sigmoid" and moe["n_shared_experts"] == 1
    assert moe["n_group"] > 1 and 1 <= moe["topk_group"] < moe["n_group"] and moe["routed_scaling_factor"] != 1
    assert moe["first_k_dense"] >= 1 and moe["loss_free"] and moe["seq_aux_loss_alpha"] == 1e-4
    assert m["mtp"]["depth"] == 1


def test_tiny_v3_trains_resumes_bit_exactly_generates_and_reports(tmp_path):
    cfg = small_config(tmp_path)
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    r = run(["run", str(cfg), "--set", f"output.dir={whole}"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    last = r.stdout.strip().splitlines()[-1]  # the config's next steps, with the run's folder
    assert last.startswith(f"next: try `build/tinyseek generate {whole / 'tiny_v3' / 'tiny_v3'} ")
    assert "configs/r1_zero_countdown.yaml" in last
    variants = ["tiny_v3", "dense_same_active", "tiny_v3_fp8"]
    for variant in variants:  # each stopped at step 3 (train.stop_at), then resumed
        common = ["run", str(cfg), "--set", f"output.dir={halves}", "--variant", variant, "--no-report"]
        r = run(common + ["--set", "train.stop_at=3"], tmp_path)
        assert r.returncode == 0 and "stopped at step 3" in r.stdout, r.stdout + r.stderr
        r = run(common + ["--resume"], tmp_path)
        assert r.returncode == 0 and "resuming at step 3" in r.stdout, r.stdout + r.stderr

    for variant in variants:
        a, b = whole / "tiny_v3" / variant, halves / "tiny_v3" / variant
        ma = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
        mb = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
        drop = {"tokens_per_s"}
        assert [{k: v for k, v in x.items() if k not in drop} for x in ma] == \
               [{k: v for k, v in x.items() if k not in drop} for x in mb], variant
        wa = load_file(str(a / "checkpoints" / "step_00000006" / "model.safetensors"))
        wb = load_file(str(b / "checkpoints" / "step_00000006" / "model.safetensors"))
        assert wa.keys() == wb.keys()
        for k in wa:
            assert wa[k].equal(wb[k]), (variant, k)
        s = json.loads((a / "summary.json").read_text())
        assert s["steps"] == 6 and s["active_parameters"] <= s["total_parameters"]
        assert s["decode_tok_s_16"] > 0 and s["decode_tok_s_64"] > 0

    tv3 = whole / "tiny_v3" / "tiny_v3"
    weights = load_file(str(tv3 / "checkpoints" / "step_00000006" / "model.safetensors"))
    for name in ["blocks.1.attn.wq_a.weight", "blocks.1.ffn.router", "blocks.1.ffn.expert_bias", "mtp.0.eh_proj.weight"]:
        assert name in weights, name
    assert "blocks.0.ffn.w1.weight" in weights  # first_k_dense
    assert weights["blocks.1.ffn.expert_bias"].abs().sum() > 0  # the loss-free bias moved
    metrics = [json.loads(x) for x in (tv3 / "metrics.jsonl").read_text().splitlines()]
    assert any("mtp_loss/1" in x for x in metrics) and any("aux_loss" in x for x in metrics)

    report = (whole / "tiny_v3" / "report.md").read_text()
    assert "## Cost: `tiny_v3` against the baselines" in report
    assert "| dense_same_active |" in report and "| tiny_v3_fp8 |" in report
    assert (whole / "tiny_v3" / "plots" / "val_loss_vs_flops.png").stat().st_size > 1000

    for speculative in ["none", "mtp"]:
        r = run(["generate", str(tv3), "--prompt", "The ", "--max-new-tokens", "8", "--temperature", "0",
                 "--speculative", speculative, "--json"], tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout)
        assert len(out["completions"][0]["tokens"]) == 8


def test_default_run_stays_within_its_budget():
    """`make run` must end within 3 minutes on 2 cores once built. Its cost is set by these numbers
    (on a 2-core Xeon it took 90 s with them): two variants of at most 300 steps of 16 x 128 tokens,
    evaluations of at most 8 batches every 25 steps or more, decoding at contexts up to 2048."""
    c = yaml.safe_load(CONFIG.read_text())
    assert c["kind"] == "cost_study" and len(c["variants"]) == 2
    t, d, dec = c["train"], c["data"], c["decode_bench"]
    for name, v in c["variants"].items():
        steps = v.get("train", {}).get("steps", t["steps"])
        assert steps * t["batch_size"] * d["seq_len"] <= 300 * 16 * 128, name
        assert "precision" not in v, f"{name}: the FP8 emulator is for configs/cost_study.yaml"
    assert t["eval_every"] >= 25 and t["eval_batches"] <= 8
    assert dec["context_max"] <= 2048 and dec["batch_size"] * dec["steps"] <= 32
    # The Makefile's default run is this config.
    assert "tinyseek run configs/tiny_v3.yaml" in (ROOT / "Makefile").read_text()


def test_cost_study_trains_the_default_runs_models():
    """configs/cost_study.yaml repeats tiny_v3.yaml's model and baseline (YAML has no include):
    they must not drift apart."""
    small = yaml.safe_load(CONFIG.read_text())
    full = yaml.safe_load((ROOT / "configs" / "cost_study.yaml").read_text())
    assert full["kind"] == "cost_study" and full["model"] == small["model"] and full["data"] == small["data"]
    for name, v in small["variants"].items():
        assert full["variants"][name] == v, name
    assert list(full["variants"])[0] == "tiny_v3"  # the first variant is the model under study
    assert full["decode_bench"]["context_min"] == 512 and full["decode_bench"]["context_max"] == 8192
    assert full["variants"]["tiny_v3_fp8"]["precision"]["kind"] == "fp8"
    assert "dense_same_total" in full["variants"]
