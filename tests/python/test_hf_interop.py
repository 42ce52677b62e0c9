"""Hugging Face interop (csrc/train/hf.h): `tinyseek export --format hf` opens in transformers with
the same logits (fp32, 1e-4 relative) and the same greedy tokens, for dense MHA and GQA (as Llama),
MLA with and without a low-rank query, and tiny DeepSeek-V3 (group-limited sigmoid routing with a
trained correction bias, a dense first layer, two MTP modules exported as DeepSeek's checkpoint
stores them); the tokenizer and a text-generation pipeline work offline; a checkpoint made by
transformers imports (hf:DIR) and exports back bit for bit; train.init_from and grpo.init_from
take hf:DIR; what transformers cannot represent exits 2 naming the key, writing nothing."""
import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import tinyseek
from conftest import tinyseek_bin

transformers = pytest.importorskip("transformers")

PROMPT = b"First Citizen:\nBefore we proceed any further, hear me speak."


def run(args, cwd, timeout=600):
    return subprocess.run([tinyseek_bin(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


MODELS = {
    "mha": {"d_model": 48, "n_layers": 2, "n_heads": 4, "ffn_hidden": 96},
    "gqa": {"d_model": 48, "n_layers": 2, "n_heads": 4, "ffn_hidden": 96, "attention": {"kind": "gqa", "n_kv_heads": 2}},
    "mla": {"d_model": 48, "n_layers": 2, "n_heads": 4, "ffn_hidden": 96,
            "attention": {"kind": "mla", "kv_lora_rank": 24, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8,
                          "v_head_dim": 12}},
    "v3": {"d_model": 64, "n_layers": 3, "n_heads": 4, "ffn_hidden": 96, "ffn": "moe",
           "attention": {"kind": "mla", "q_lora_rank": 40, "kv_lora_rank": 32, "qk_nope_head_dim": 16,
                         "qk_rope_head_dim": 8, "v_head_dim": 16},
           "moe": {"n_routed_experts": 8, "n_shared_experts": 1, "top_k": 2, "expert_hidden": 32, "first_k_dense": 1,
                   "score_func": "sigmoid", "routed_scaling_factor": 2.5, "n_group": 4, "topk_group": 2,
                   "loss_free": True, "bias_update_speed": 0.02, "seq_aux_loss_alpha": 1.0e-4},
           "mtp": {"depth": 2}},
}


def config(name, model, **top):
    c = {"kind": "pretrain", "name": name, "seed": 5,
         "data": {"source": "synthetic", "seq_len": 64, "synthetic_bytes": 60000},
         "model": model,
         "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "eval_every": 4, "eval_batches": 1,
                   "log_every": 2, "checkpoint_every": 4}}
    c.update(top)
    return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One trained run per model of MODELS (4 steps each), and its export."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for name, model in MODELS.items():
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config(name, model, output={"dir": str(root / "runs")})))
        r = run(["run", str(path), "--no-report"], root)
        assert r.returncode == 0, r.stdout + r.stderr
        run_dir = root / "runs" / name
        hf_dir = root / f"{name}_hf"
        r = run(["export", str(run_dir), "--format", "hf", "--out", str(hf_dir)], root)
        assert r.returncode == 0, r.stdout + r.stderr
        out[name] = (run_dir, hf_dir)
    return root, out


def hf_model(path):
    m = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    return m.eval()


def rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name,arch", [("mha", "llama"), ("gqa", "llama"), ("mla", "deepseek_v3"), ("v3", "deepseek_v3")])
def test_exported_logits_and_greedy_tokens_match_transformers(trained, name, arch):
    root, runs = trained
    run_dir, hf_dir = runs[name]
    cfg = json.loads((hf_dir / "config.json").read_text())
    assert cfg["model_type"] == arch
    ours, theirs = tinyseek.load(run_dir), hf_model(hf_dir)
    x = torch.tensor([list(PROMPT)], dtype=torch.long)
    with torch.no_grad():
        a, b = ours(x), theirs(x).logits
    assert a.shape == b.shape
    print(f"\nparity {name} ({arch}): max |logit diff| / max |logit| = {rel_diff(a, b):.2e}")
    assert rel_diff(a, b) < 1e-4
    # Greedy decoding: transformers' generate against tinyseek generate (the CLI, KV-cached).
    prompt = PROMPT[:20]
    hf_tokens = theirs.generate(torch.tensor([list(prompt)]), max_new_tokens=16, do_sample=False)[0, len(prompt):]
    r = run(["generate", str(run_dir), "--prompt", prompt.decode(), "--temperature", "0", "--max-new-tokens", "16",
             "--json"], root)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["completions"][0]["tokens"] == hf_tokens.tolist()


def test_v3_export_layout_bias_and_mtp(trained):
    _, runs = trained
    run_dir, hf_dir = runs["v3"]
    cfg = json.loads((hf_dir / "config.json").read_text())
    assert cfg["first_k_dense_replace"] == 1 and cfg["n_group"] == 4 and cfg["topk_group"] == 2
    assert cfg["rope_interleave"] and cfg["q_lora_rank"] == 40 and cfg["num_nextn_predict_layers"] == 2
    t = load_file(hf_dir / "model.safetensors")
    ours = dict(tinyseek.load(run_dir).named_parameters()) | dict(tinyseek.load(run_dir).named_buffers())
    # The trained correction bias is exported (and matters: the logits above match with it).
    bias = t["model.layers.1.mlp.gate.e_score_correction_bias"]
    assert bias.abs().max() > 0 and torch.equal(bias, ours["blocks.1.ffn.expert_bias"])
    assert "model.layers.0.mlp.gate_proj.weight" in t and "model.layers.0.mlp.gate.weight" not in t
    w13 = ours["blocks.2.ffn.w13.weight"]
    assert torch.equal(t["model.layers.2.mlp.experts.5.gate_proj.weight"], w13[5, :32])
    assert torch.equal(t["model.layers.2.mlp.experts.5.up_proj.weight"], w13[5, 32:])
    # MTP module k as layer num_hidden_layers + k - 1, eh_proj over [enorm(embedding); hnorm(hidden)].
    for k in range(2):
        layer = f"model.layers.{3 + k}."
        eh = ours[f"mtp.{k}.eh_proj.weight"]
        assert torch.equal(t[layer + "eh_proj.weight"], torch.cat([eh[:, 64:], eh[:, :64]], 1))
        assert torch.equal(t[layer + "shared_head.head.weight"], ours["head.weight"])
        assert torch.equal(t[layer + "embed_tokens.weight"], ours["embed.weight"])
        assert torch.equal(t[layer + "enorm.weight"], ours[f"mtp.{k}.enorm.weight"])
        assert layer + "mlp.experts.7.down_proj.weight" in t and layer + "self_attn.kv_b_proj.weight" in t
    assert "model.layers.5.eh_proj.weight" not in t


def test_tokenizer_and_pipeline_offline(trained):
    _, runs = trained
    _, hf_dir = runs["mha"]
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)
    text = "héllo, wörld\n\x01~"
    ids = tok(text)["input_ids"]
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    pipe = transformers.pipeline("text-generation", model=str(hf_dir), tokenizer=tok, device="cpu")
    out = pipe("First ", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert out.startswith("First ")
    ours = tinyseek.load(runs["mha"][0]).generate("First ", max_new_tokens=5)[0]
    assert tok("First ")["input_ids"] + ours == tok(out)["input_ids"] or len(out.encode()) > 6


def random_hf_checkpoint(path, arch, seed=11):
    """A randomly initialised transformers model saved with save_pretrained: tinyseek imports it."""
    torch.manual_seed(seed)
    if arch == "deepseek_v3":
        cfg = transformers.DeepseekV3Config(
            vocab_size=256, hidden_size=64, intermediate_size=96, moe_intermediate_size=24, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8,
            num_experts_per_tok=3, n_group=2, topk_group=1, first_k_dense_replace=1, kv_lora_rank=32,
            q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16, max_position_embeddings=128,
            routed_scaling_factor=2.5, bos_token_id=None, eos_token_id=None)
    else:
        cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                       bos_token_id=None, eos_token_id=None)
    m = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.1)  # not all ones: a mixed-up norm would go unnoticed
        for name, b in m.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.normal_(0.0, 0.05)
    m.save_pretrained(path)
    return m


@pytest.mark.parametrize("arch", ["deepseek_v3", "llama"])
def test_import_then_export_is_bitwise_and_logits_match(tmp_path, arch):
    src = tmp_path / "src"
    theirs = random_hf_checkpoint(src, arch)
    ours = tinyseek.load(f"hf:{src}")
    x = torch.tensor([list(PROMPT)], dtype=torch.long)
    with torch.no_grad():
        d = rel_diff(ours(x), theirs(x).logits)
    print(f"\nparity import {arch}: max |logit diff| / max |logit| = {d:.2e}")
    assert d < 1e-4
    r = run(["export", f"hf:{src}", "--format", "hf", "--out", str(tmp_path / "back")], tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = load_file(src / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_train_and_grpo_init_from_hf(tmp_path):
    src = tmp_path / "src"
    random_hf_checkpoint(src, "deepseek_v3")
    imported = tinyseek.load(f"hf:{src}").config["model"]
    model = {k: imported[k] for k in ("vocab_size", "d_model", "n_layers", "n_heads", "ffn_hidden", "ffn",
                                      "rope_theta", "norm_eps", "attention", "moe")}
    # lr 0 and no bias updates: the run's weights stay the imported ones, so its export is the
    # source bit for bit.
    model["moe"] = dict(model["moe"], bias_update_speed=0.0)
    c = config("ft", model, output={"dir": str(tmp_path / "runs")})
    c["train"].update(init_from=f"hf:{src}", lr=0.0, steps=2, eval_every=2, checkpoint_every=2)
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(c))
    r = run(["run", "ft.yaml", "--no-report"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(["export", "runs/ft", "--format", "hf", "--out", "ft_hf"], tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = load_file(src / "model.safetensors"), load_file(tmp_path / "ft_hf" / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # A model that is not the stored one: exit 2 naming the key, nothing written.
    c["name"] = "ft_wrong"
    c["model"] = dict(model, d_model=32)
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(c))
    r = run(["run", "wrong.yaml"], tmp_path)
    assert r.returncode == 2 and "train.init_from" in r.stderr and "model.d_model" in r.stderr, r.stderr
    assert not (tmp_path / "runs" / "ft_wrong").exists()
    # GRPO from the Hugging Face folder: one step runs and starts from its weights.
    g = {"kind": "grpo", "name": "rl", "seed": 3, "data": {"seq_len": 64},
         "task": {"name": "arithmetic", "ops": "+", "digits_min": 1, "digits_max": 1},
         "grpo": {"init_from": f"hf:{src}", "prompts_per_step": 2, "group_size": 2, "max_completion_length": 8,
                  "eval_problems": 4, "eval_k": 0},
         "train": {"steps": 1, "eval_every": 1, "checkpoint_every": 1, "log_every": 1},
         "output": {"dir": str(tmp_path / "runs")}}
    (tmp_path / "rl.yaml").write_text(yaml.safe_dump(g))
    r = run(["run", "rl.yaml", "--no-report"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((tmp_path / "runs" / "rl" / "default" / "summary.json").read_text())
    assert f"hf:{src}" in json.dumps(summary)


@pytest.mark.parametrize("change,key", [
    ({"moe": {"score_func": "softmax"}}, "model.moe.score_func"),
    ({"moe": {"score_func": "sigmoid", "capacity_factor": 1.25}}, "model.moe.capacity_factor"),
    ({"attention": {"kind": "mha"}}, "model.ffn"),
    ({"attention": {"kind": "mla", "softmax_scale": 0.5}}, "model.attention.softmax_scale"),
])
def test_unrepresentable_models_exit_2_naming_the_key(tmp_path, change, key):
    model = {"d_model": 32, "n_layers": 1, "n_heads": 2, "ffn_hidden": 64, "ffn": "moe",
             "attention": {"kind": "mla", "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8,
                           "v_head_dim": 8},
             "moe": {"n_routed_experts": 4, "top_k": 2, "expert_hidden": 16, "score_func": "sigmoid"}}
    for k, v in change.items():
        model[k] = {**model[k], **v}
    c = config("bad", model, output={"dir": str(tmp_path / "runs")})
    c["train"].update(steps=1, eval_every=1, checkpoint_every=1)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(c))
    r = run(["run", "bad.yaml", "--no-report"], tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(["export", "runs/bad", "--format", "hf", "--out", "out"], tmp_path)
    assert r.returncode == 2 and key in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_export_refuses_an_occupied_folder_and_bad_references(trained, tmp_path):
    _, runs = trained
    run_dir, _ = runs["mha"]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    r = run(["export", str(run_dir), "--format", "hf", "--out", str(tmp_path / "full")], tmp_path)
    assert r.returncode == 2 and "not an empty folder" in r.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    r = run(["export", "hf:/nonexistent", "--format", "hf", "--out", "x"], tmp_path)
    assert r.returncode == 2 and "/nonexistent" in r.stderr
    r = run(["export", str(run_dir), "--format", "gguf", "--out", "x"], tmp_path)
    assert r.returncode == 2
    bad = tmp_path / "badcfg"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(RuntimeError, match="model_type"):
        tinyseek.load(f"hf:{bad}")


def test_kinds_that_ignore_train_init_from_refuse_it(tmp_path):
    # GRPO starts from grpo.init_from, fp8_accumulation builds no model: train.init_from would be
    # ignored there, so it is an exit-2 error naming the key, before anything is written.
    for kind, extra in [("grpo", {"grpo": {"init_from": "base"}}), ("fp8_accumulation", {})]:
        c = {"kind": kind, "name": f"no_{kind}", "train": {"init_from": "hf:/somewhere"},
             "output": {"dir": str(tmp_path / "runs")}, **extra}
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(c))
        r = run(["run", "c.yaml"], tmp_path)
        assert r.returncode == 2 and "train.init_from" in r.stderr and f"kind {kind} does not read it" in r.stderr, \
            r.stderr
        assert not (tmp_path / "runs").exists()
