import math

import pytest
import torch

import tinyseek  # noqa: F401  (loads the ops)


def reference(q, k, v, last, scale):
    """float64 softmax attention: query (b, s) sees keys 0..last[b, s]; kv head h // (H // Hk)."""
    B, S, H, D = q.shape
    Hk = k.shape[2]
    kk = k.double().repeat_interleave(H // Hk, dim=2).transpose(1, 2)  # [B, H, L, D]
    vv = v.double().repeat_interleave(H // Hk, dim=2).transpose(1, 2)
    scores = q.double().transpose(1, 2) @ kk.transpose(-1, -2) * scale  # [B, H, S, L]
    j = torch.arange(k.shape[1])
    scores = scores.masked_fill(~(j <= last[:, None, :, None]), -math.inf)
    return (scores.softmax(-1) @ vv).transpose(1, 2)


@pytest.mark.parametrize("B,S,H,Hk,L,D,Dv", [(1, 1, 4, 4, 65, 32, 32), (2, 3, 8, 2, 40, 16, 16), (3, 2, 4, 1, 17, 24, 8)])
def test_matches_float64(B, S, H, Hk, L, D, Dv):
    torch.manual_seed(B * 100 + L)
    q = torch.randn(B, S, H, D)
    pool_k = torch.randn(B, L + 5, Hk, D)  # strided views of a larger pool, as the cache passes them
    pool_v = torch.randn(B, L + 5, Hk, Dv)
    k, v = pool_k[:, :L], pool_v[:, :L]
    last = torch.randint(0, L, (B, S))
    last[0, 0] = 0
    out = torch.ops.tinyseek.decode_attention(q, k, v, last, 1 / math.sqrt(D))
    torch.testing.assert_close(out.double(), reference(q, k, v, last, 1 / math.sqrt(D)), rtol=1e-4, atol=2e-5)


def test_opcheck():
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 3, 4, 16), torch.randn(2, 9, 2, 16), torch.randn(2, 9, 2, 8)
    last = torch.tensor([[6, 7, 8], [0, 1, 2]])
    torch.library.opcheck(torch.ops.tinyseek.decode_attention.default, (q, k, v, last, 0.25),
                          test_utils=("test_schema", "test_faketensor"))


def test_bad_input_messages():
    q, k, v = torch.randn(1, 2, 4, 16), torch.randn(1, 9, 3, 16), torch.randn(1, 9, 3, 16)
    last = torch.tensor([[1, 2]])
    with pytest.raises(RuntimeError, match=r"tinyseek.decode_attention: argument 'k': expected Hk \(dim 2\) to divide H = 4"):
        torch.ops.tinyseek.decode_attention(q, k, v, last, 0.25)
    k, v = torch.randn(1, 9, 2, 16), torch.randn(1, 9, 2, 16)
    with pytest.raises(RuntimeError, match=r"argument 'last': expected every entry in \[0, L\) = \[0, 9\), got 9"):
        torch.ops.tinyseek.decode_attention(q, k, v, torch.tensor([[1, 9]]), 0.25)
