"""MLA from Python: torch.ops.tinyseek.mla_decode (reference, opcheck, errors) and the attention
modules of tinyseek.nn (autograd, absorbed decode = naive forward, checkpoints of the C++ CLI)."""
import math
import subprocess

import pytest
import torch
from safetensors.torch import load_file

import tinyseek
from conftest import tinyseek_bin


def paged_case(lens, s_q=1, heads=4, d_qk=40, d_v=32, bs=16, dtype=torch.float32, seed=0):
    """A shuffled paged cache holding `lens` rows per sequence; unused slots are NaN."""
    g = torch.Generator().manual_seed(seed)
    b = len(lens)
    mb = max(1, max((n + bs - 1) // bs for n in lens))
    nb = b * mb + 1
    perm = torch.randperm(nb, generator=g)
    table = torch.full((b, mb), 12345, dtype=torch.int32)
    cache = torch.full((nb, bs, 1, d_qk), float("nan"))
    k = 0
    for i, n in enumerate(lens):
        for j in range((n + bs - 1) // bs):
            blk = int(perm[k])
            k += 1
            table[i, j] = blk
            rows = min(bs, n - j * bs)
            cache[blk, :rows] = torch.randn(rows, 1, d_qk, generator=g)
    q = torch.randn(b, s_q, heads, d_qk, generator=g)
    return q.to(dtype), cache.to(dtype), table, torch.tensor(lens, dtype=torch.int32), d_v, 0.29


def reference(q, cache, table, lens, d_v, scale):
    b, s_q, h, _ = q.shape
    bs = cache.shape[1]
    out = torch.zeros(b, s_q, h, d_v, dtype=torch.float64)
    lse = torch.full((b, h, s_q), -math.inf, dtype=torch.float64)
    for i in range(b):
        n = int(lens[i])
        rows = torch.stack([cache[int(table[i, p // bs]), p % bs, 0] for p in range(n)]).double() if n else None
        for s in range(s_q):
            vis = n - s_q + s + 1
            if vis <= 0:
                continue
            sc = q[i, s].double() @ rows[:vis].T * scale
            lse[i, :, s] = torch.logsumexp(sc, -1)
            out[i, s] = torch.softmax(sc, -1) @ rows[:vis, :d_v]
    return out, lse


@pytest.mark.parametrize("s_q", [1, 2])
def test_mla_decode_matches_reference(s_q):
    args = paged_case([0, 1, 37, 80], s_q=s_q)
    out, lse = torch.ops.tinyseek.mla_decode(*args)
    ref_out, ref_lse = reference(*args)
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    fin = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse.double()[fin], ref_lse[fin], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lens", [[37, 5], [700, 5]])  # 700: split into chunks and merged (2+ threads)
def test_mla_decode_nan_and_inf_propagate_as_the_reference(lens):
    q, cache, table, lens_t, d_v, scale = paged_case(lens, s_q=2)
    q[0, 1, 1, 3] = float("nan")  # one query head of sequence 0
    blk, row = int(table[0, 10 // 16]), 10 % 16
    cache[blk, row, 0, d_v + 2] = float("inf")  # a rope column of position 10: +-inf scores for sequence 0
    q[1, 0, 2, :] = q[1, 0, 2, :].abs()  # sequence 1: head 2 of query 0 gets a +inf score below
    blk1 = int(table[1, 0])
    cache[blk1, 1, 0, :] = float("inf")  # position 1 of sequence 1, values included
    args = (q, cache, table, lens_t, d_v, scale)
    out, lse = torch.ops.tinyseek.mla_decode(*args)
    ref_out, ref_lse = reference(*args)
    assert torch.isnan(ref_out).any() and torch.isfinite(ref_out).any()
    assert torch.equal(torch.isnan(out), torch.isnan(ref_out))
    assert torch.equal(torch.isnan(lse), torch.isnan(ref_lse))
    fin = torch.isfinite(ref_out)
    torch.testing.assert_close(out.double()[fin], ref_out[fin], rtol=1e-5, atol=1e-5)
    fin = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse.double()[fin], ref_lse[fin], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lens,s_q", [([5, 33], 1), ([17, 64, 3], 3)])
def test_mla_decode_opcheck(lens, s_q):
    q, cache, table, seq_lens, d_v, scale = paged_case(lens, s_q=s_q, seed=1)
    cache = torch.nan_to_num(cache, nan=0.0)  # opcheck compares outputs of several runs
    torch.library.opcheck(torch.ops.tinyseek.mla_decode.default, (q, cache, table, seq_lens, d_v, scale))


def test_mla_decode_errors_name_the_argument():
    q, cache, table, lens, d_v, scale = paged_case([5, 9])
    with pytest.raises(RuntimeError, match=r"tinyseek.mla_decode: argument 'seq_lens': expected dtype Int"):
        torch.ops.tinyseek.mla_decode(q, cache, table, lens.long(), d_v, scale)
    with pytest.raises(RuntimeError, match=r"argument 'kv_cache': expected one KV head"):
        torch.ops.tinyseek.mla_decode(q, cache.expand(-1, -1, 2, -1).contiguous(), table, lens, d_v, scale)
    with pytest.raises(RuntimeError, match=r"argument 'head_dim_v'"):
        torch.ops.tinyseek.mla_decode(q, cache, table, lens, 41, scale)


def small_mla(q_lora_rank=0):
    torch.manual_seed(0)
    return tinyseek.nn.MultiHeadLatentAttention(32, 4, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4,
                                                v_head_dim=6, q_lora_rank=q_lora_rank)


@pytest.mark.parametrize("q_lora_rank", [0, 12])
def test_absorbed_decode_equals_naive_forward_with_ragged_lengths(q_lora_rank):
    m = small_mla(q_lora_rank).eval()
    lens, prompts, bs = [21, 9, 14], [6, 9, 2], 16
    x = torch.randn(3, 21, 32)
    mb = 2
    cache = torch.zeros(3 * mb, bs, 1, m.kv_cache_values_per_token())
    table = torch.randperm(3 * mb).to(torch.int32).view(3, mb)
    seq_lens = torch.zeros(3, dtype=torch.int32)
    got = [[] for _ in lens]
    for b, p in enumerate(prompts):  # ragged prefill, one sequence at a time
        y, new = m.decode(x[b:b + 1, :p], cache, table[b:b + 1], seq_lens[b:b + 1])
        seq_lens[b] = new[0]
        got[b].append(y[0])
    while any(int(seq_lens[b]) < n for b, n in enumerate(lens)):
        live = [b for b, n in enumerate(lens) if int(seq_lens[b]) < n]
        idx = torch.tensor(live)
        xs = torch.stack([x[b, int(seq_lens[b])] for b in live])[:, None]
        y, new = m.decode(xs, cache, table[idx], seq_lens[idx])
        for i, b in enumerate(live):
            got[b].append(y[i])
            seq_lens[b] = new[i]
    with torch.no_grad():
        for b, n in enumerate(lens):
            torch.testing.assert_close(torch.cat(got[b]), m(x[b:b + 1, :n])[0], rtol=1e-4, atol=1e-5)


def test_modules_train_with_autograd():
    for m in [small_mla(12), tinyseek.nn.GroupedQueryAttention(32, 4, 2), tinyseek.nn.GroupedQueryAttention(32, 4, 1)]:
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        x, target = torch.randn(4, 10, 32), torch.randn(4, 10, 32)
        losses = []
        for _ in range(5):
            opt.zero_grad()
            loss = (m(x) - target).pow(2).mean()
            loss.backward()
            assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0]


def test_kv_cache_values_per_token():
    assert small_mla().kv_cache_values_per_token() == 16 + 4
    assert tinyseek.nn.GroupedQueryAttention(32, 4).kv_cache_values_per_token() == 2 * 4 * 8
    assert tinyseek.nn.GroupedQueryAttention(32, 4, 2).kv_cache_values_per_token() == 2 * 2 * 8
    assert tinyseek.nn.GroupedQueryAttention(32, 4, 1).kv_cache_values_per_token() == 2 * 8


TINY = """\
kind: pretrain
name: attn
data: {seq_len: 16, synthetic_bytes: 20000}
model:
  d_model: 32
  n_layers: 1
  n_heads: 4
  ffn_hidden: 32
  attention: {kind: mla, kv_lora_rank: 16, q_lora_rank: 12, qk_nope_head_dim: 8, qk_rope_head_dim: 4, v_head_dim: 6}
train: {steps: 1, batch_size: 2, warmup_steps: 1, eval_every: 1, eval_batches: 1, checkpoint_every: 1}
"""


def test_cli_checkpoint_loads_into_the_python_module(tmp_path):
    """The C++ MLA's parameters (trained one step by the CLI) load strictly into the Python twin."""
    (tmp_path / "c.yaml").write_text(TINY)
    r = subprocess.run([tinyseek_bin(), "run", str(tmp_path / "c.yaml")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    ck = tmp_path / "runs" / "attn" / "default" / "checkpoints"
    weights = load_file(str(ck / (ck / "latest").read_text().strip() / "model.safetensors"))
    prefix = "blocks.0.attn."
    state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    small_mla(12).load_state_dict(state, strict=True)


def test_gqa_parameter_names_match_the_cpp_module():
    # GroupedQueryAttentionImpl registers wq, wk, wv, wo (checkpoints of mha runs: tests/python/test_cli.py).
    shapes = {k: tuple(v.shape) for k, v in tinyseek.nn.GroupedQueryAttention(32, 4, 2).state_dict().items()}
    assert shapes == {"wq.weight": (32, 32), "wk.weight": (16, 32), "wv.weight": (16, 32), "wo.weight": (32, 32)}
