import pytest
import torch

import tinyseek  # noqa: F401  (loads the ops)


def composed(x, cos, sin):
    """The rotation as torch ops (what the model computed before the op): pairs (x[2i], x[2i+1])."""
    if cos.dim() == 2:
        cos, sin = cos[None], sin[None]
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], -1).flatten(-2)


def tables(shape, seed):
    g = torch.Generator().manual_seed(seed)
    ang = torch.rand(*shape, generator=g, dtype=torch.float64) * 100
    return ang.cos().float(), ang.sin().float()


@pytest.mark.parametrize("per_sequence", [False, True])
def test_bitwise_equal_to_the_torch_composition_and_close_to_float64(per_sequence):
    torch.manual_seed(0)
    B, T, H, D = 3, 7, 4, 32
    x = torch.randn(B, T, H, D)
    cos, sin = tables((B, T, D // 2) if per_sequence else (T, D // 2), 1)
    y = torch.ops.tinyseek.rope(x, cos, sin)
    assert torch.equal(y, composed(x, cos, sin))
    want = composed(x.double(), cos.double(), sin.double())
    torch.testing.assert_close(y.double(), want, rtol=0, atol=4 * 2.0**-24 * x.abs().max().item())


def test_backward_is_the_inverse_rotation():
    torch.manual_seed(2)
    x = torch.randn(2, 5, 3, 16, requires_grad=True)
    cos, sin = tables((2, 5, 8), 3)
    g = torch.randn(2, 5, 3, 16)
    torch.ops.tinyseek.rope(x, cos, sin).backward(g)
    xd = x.detach().double().requires_grad_()
    composed(xd, cos.double(), sin.double()).backward(g.double())
    torch.testing.assert_close(x.grad.double(), xd.grad, rtol=1e-6, atol=1e-6)
    back = torch.ops.tinyseek.rope(torch.ops.tinyseek.rope(x.detach(), cos, sin), cos, sin, inverse=True)
    torch.testing.assert_close(back, x.detach(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("table_shape", [(4, 8), (2, 4, 8)])
def test_opcheck(table_shape):
    torch.manual_seed(4)
    x = torch.randn(2, 4, 3, 16, requires_grad=True)
    cos, sin = tables(table_shape, 5)
    torch.library.opcheck(torch.ops.tinyseek.rope.default, (x, cos, sin, False))


def test_bad_input_messages():
    x = torch.randn(2, 4, 3, 16)
    with pytest.raises(RuntimeError, match=r"tinyseek.rope: argument 'cos': expected shape \[T, D/2\] = \[4, 8\]"):
        torch.ops.tinyseek.rope(x, torch.ones(4, 7), torch.ones(4, 7))
    with pytest.raises(RuntimeError, match=r"argument 'x': expected an even head dim"):
        torch.ops.tinyseek.rope(torch.randn(2, 4, 3, 15), torch.ones(4, 7), torch.ones(4, 7))
    with pytest.raises(RuntimeError, match=r"argument 'sin': expected dtype Float"):
        torch.ops.tinyseek.rope(x, torch.ones(4, 8), torch.ones(4, 8, dtype=torch.float64))
