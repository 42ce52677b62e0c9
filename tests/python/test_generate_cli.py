"""`tinyseek generate` end to end: a run trained here generates text and reports its measurements;
every bad request exits 2 with one line naming it."""
import json
import subprocess

import pytest

from conftest import tinyseek_bin

TINY = """\
kind: pretrain
name: gentest
data: {seq_len: 48, synthetic_bytes: 60000}
model: {d_model: 32, n_layers: 2, n_heads: 2, ffn_hidden: 64}
train: {steps: 30, batch_size: 4, warmup_steps: 1, eval_every: 30, eval_batches: 1, checkpoint_every: 15}
"""


def run(args, cwd):
    return subprocess.run([tinyseek_bin(), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dense run, an MoE run with MLA and a run with two MTP modules, 30 steps each, checkpoints at
    steps 15 and 30."""
    root = tmp_path_factory.mktemp("gen")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY + "variants:\n  dense: {}\n  moe_mla:\n    model.ffn: moe\n    model.attention.kind: mla\n"
                          "    model.attention.kv_lora_rank: 16\n    model.attention.qk_nope_head_dim: 8\n"
                          "    model.attention.qk_rope_head_dim: 4\n    model.attention.v_head_dim: 8\n"
                          "    model.moe.loss_free: true\n  mtp:\n    model.mtp.depth: 2\n")
    r = run(["run", str(cfg), "--no-report"], root)
    assert r.returncode == 0, r.stdout + r.stderr
    return root / "runs" / "gentest"


@pytest.mark.parametrize("variant", ["dense", "moe_mla"])
def test_generates_text_and_json_report(trained, variant):
    d = trained / variant
    r = run(["generate", str(d), "--prompt", "The ", "--max-new-tokens", "12", "--seed", "5", "--json"], d)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["step"] == 30 and out["batch"] == 1 and out["prompt_tokens"] == 4
    [c] = out["completions"]
    assert c["prompt"] == "The " and c["new_tokens"] == 12 == len(c["tokens"]) and c["finish_reason"] == "length"
    assert c["seed"] == 5 and all(0 <= t < 256 for t in c["tokens"])
    assert out["prefill_s"] > 0 and out["decode_tokens"] == 11 and out["decode_tokens_per_s"] > 0
    assert out["kv_cache_bytes"] > 0 and out["kv_cache_bytes_per_token"] > 0
    assert out["settings"]["mla_decode"] == ("absorbed" if variant == "moe_mla" else "sdpa")
    # Same seed, same text; the plain-text mode prints the prompt and its continuation.
    again = json.loads(run(["generate", str(d), "--prompt", "The ", "--max-new-tokens", "12", "--seed", "5",
                            "--json"], d).stdout)
    assert again["completions"][0]["tokens"] == c["tokens"]
    t = run(["generate", str(d), "--prompt", "The ", "--max-new-tokens", "12", "--seed", "5"], d)
    assert t.returncode == 0 and "--- prompt 1, sample 1, seed 5: 12 new tokens (length)" in t.stdout
    assert "decode" in t.stderr and "KV cache" in t.stderr


def test_prompts_file_samples_greedy_and_step(trained, tmp_path):
    d = trained / "dense"
    prompts = tmp_path / "p.txt"
    prompts.write_text("ab\n\nhello there\n")
    r = run(["generate", str(d), "--prompts", str(prompts), "--num-samples", "3", "--max-new-tokens", "5",
             "--temperature", "0", "--step", "15", "--json"], d)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["step"] == 15 and out["batch"] == 6
    cs = out["completions"]
    assert [c["prompt_index"] for c in cs] == [0, 0, 0, 1, 1, 1] and [c["seed"] for c in cs] == list(range(6))
    # Greedy: the samples of one prompt agree.
    assert cs[0]["tokens"] == cs[1]["tokens"] == cs[2]["tokens"]
    # JSON lines prompts may hold newlines; max_new_tokens 0 in the config fills the context.
    jl = tmp_path / "p.jsonl"
    jl.write_text(json.dumps({"prompt": "two\nlines"}) + "\n" + json.dumps("x") + "\n")
    r = run(["generate", str(d), "--prompts", str(jl), "--json", "--temperature", "0"], d)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [c["prompt"] for c in out["completions"]] == ["two\nlines", "x"]
    assert all(c["new_tokens"] == 48 - 9 for c in out["completions"])  # the longest prompt has 9 bytes
    # A stop string ends a sequence once its text ends with it: two printable bytes the free run
    # of prompt "x" produced (a model trained on the ASCII corpus produces some).
    tokens = out["completions"][1]["tokens"]
    i = next(i for i in range(2, len(tokens) - 1) if all(32 <= t < 127 for t in tokens[i:i + 2]))
    stop = bytes(tokens[i:i + 2]).decode()
    r = run(["generate", str(d), "--prompt", "x", "--temperature", "0", "--stop", stop, "--json"], d)
    c = json.loads(r.stdout)["completions"][0]
    assert c["finish_reason"] == "stop" and c["text"].endswith(stop) and c["new_tokens"] <= i + 2
    assert c["tokens"] == tokens[:c["new_tokens"]]


def test_errors_exit_2_with_one_line(trained, tmp_path):
    d = trained / "dense"
    cases = {
        "missing run": (["generate", str(tmp_path / "nope"), "--prompt", "a"], "no such run folder"),
        "several variants": (["generate", str(trained), "--prompt", "a"], "holds 3 variants (dense, moe_mla, mtp)"),
        "no prompt": (["generate", str(d)], "give --prompt TEXT or --prompts FILE"),
        "too long": (["generate", str(d), "--prompt", "x" * 49], "--prompt: 49 tokens, longer than the model's "
                                                                   "context of 48 tokens"),
        "no room": (["generate", str(d), "--prompt", "x" * 40, "--max-new-tokens", "9"],
                    "ask for at most 8 new tokens"),
        "empty prompt": (["generate", str(d), "--prompt", ""], "--prompt: empty prompt"),
        "bad top-p": (["generate", str(d), "--prompt", "a", "--top-p", "2"], "--top-p"),
        "bad temperature": (["generate", str(d), "--prompt", "a", "--temperature", "-1"], "--temperature"),
        "top-k": (["generate", str(d), "--prompt", "a", "--top-k", "300"], "--top-k: must be at most "
                                                                          "model.vocab_size (256), got 300"),
        "step": (["generate", str(d), "--prompt", "a", "--step", "3"], "--step 3: " + str(d) + " has no checkpoint of "
                                                                 "that step (it has: 15, 30)"),
        "prompts file": (["generate", str(d), "--prompts", str(tmp_path / "none.txt")], "cannot read the file"),
        "both": (["generate", str(d), "--prompt", "a", "--prompts", "x"], "excludes"),
    }
    for name, (args, needle) in cases.items():
        r = run(args, tmp_path)
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        assert needle in r.stderr, (name, r.stderr)
        assert len(r.stderr.strip().splitlines()) <= 2, (name, r.stderr)  # CLI11 may add a "Run with --help" line


def test_speculative_decoding_with_the_mtp_modules(trained):
    d = trained / "mtp"
    args = ["generate", str(d), "--prompts", "PROMPTS", "--max-new-tokens", "20", "--speculative", "mtp", "--json"]
    prompts = trained.parent.parent / "prompts.txt"
    prompts.write_text("The \nA longer prompt than that\nx\n")
    args[3] = str(prompts)
    r = run(args + ["--temperature", "0"], d)
    assert r.returncode == 0, r.stderr
    spec = json.loads(r.stdout)["speculative"]
    # Greedy speculative decoding reproduces plain greedy decoding, measured in the same run.
    assert spec["same_tokens_as_plain"] is True
    assert spec["draft_tokens"] == 2 and len(spec["acceptance_per_depth"]) == 2
    assert all(0 <= a <= 1 for a in spec["acceptance_per_depth"])
    assert spec["verify_steps"] > 0 and spec["tokens_per_step"] >= 1
    assert spec["plain_decode_tokens_per_s"] > 0 and spec["speculative_decode_tokens_per_s"] > 0 and spec["speedup"] > 0
    one = json.loads(run(args + ["--temperature", "0", "--draft-tokens", "1"], d).stdout)["speculative"]
    assert one["draft_tokens"] == 1 and one["same_tokens_as_plain"] is True
    sampled = run(args + ["--temperature", "0.8", "--seed", "3"], d)
    assert sampled.returncode == 0, sampled.stderr
    assert all(c["new_tokens"] == 20 for c in json.loads(sampled.stdout)["completions"])
    text = run(args[:-1] + ["--temperature", "0"], d)
    assert text.returncode == 0 and "speculative (MTP, 2 drafts per step)" in text.stderr
    assert "same tokens as plain greedy" in text.stderr
    # Without MTP modules, with more drafts than modules, or an unknown drafter: exit 2, naming it.
    for bad, words in (([str(trained / "dense"), "--speculative", "mtp"], "no MTP modules"),
                       ([str(d), "--speculative", "mtp", "--draft-tokens", "3"], "MTP depth is 2"),
                       ([str(d), "--speculative", "eagle"], "--speculative")):
        e = run(["generate", *bad, "--prompt", "The "], d)
        assert e.returncode == 2, (bad, e.stderr)
        assert words in e.stderr.splitlines()[0], e.stderr
