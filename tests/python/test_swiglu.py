"""torch.ops.tinyseek.swiglu: forward and gradients against float64 autograd of silu(gate) * up,
strided halves of one buffer, torch.library.opcheck (Meta kernels, autograd registration), the
non-finite rules and the argument messages."""
import pytest
import torch

import tinyseek  # noqa: F401  (loads the ops)


def reference(gate, up):
    return torch.nn.functional.silu(gate) * up


@pytest.mark.parametrize("shape", [(5, 7), (3, 16, 352), (1,), (2, 0, 4)])
def test_forward_and_backward_against_float64(shape):
    torch.manual_seed(sum(shape) + 1)
    gate = (torch.randn(*shape) * 4).requires_grad_()
    up = torch.randn(*shape).requires_grad_()
    h = torch.ops.tinyseek.swiglu(gate, up)
    assert h.shape == gate.shape and h.is_contiguous()
    gd, ud = gate.detach().double().requires_grad_(), up.detach().double().requires_grad_()
    want = reference(gd, ud)
    torch.testing.assert_close(h.double(), want, rtol=2e-6, atol=1e-7)
    dh = torch.randn(*shape)
    h.backward(dh)
    want.backward(dh.double())
    torch.testing.assert_close(gate.grad.double(), gd.grad, rtol=4e-6, atol=1e-6)
    torch.testing.assert_close(up.grad.double(), ud.grad, rtol=2e-6, atol=1e-7)


def test_strided_halves_of_one_buffer():
    torch.manual_seed(3)
    F = 24
    gu = (torch.randn(40, 2 * F) * 3).requires_grad_()
    gate, up = gu.narrow(1, 0, F), gu.narrow(1, F, F)
    assert not gate.is_contiguous()
    h = torch.ops.tinyseek.swiglu(gate, up)
    gud = gu.detach().double().requires_grad_()
    want = reference(gud.narrow(1, 0, F), gud.narrow(1, F, F))
    torch.testing.assert_close(h.double(), want, rtol=2e-6, atol=1e-7)
    dh = torch.randn(40, F)
    h.backward(dh)
    want.backward(dh.double())
    torch.testing.assert_close(gu.grad.double(), gud.grad, rtol=4e-6, atol=1e-6)
    # A transposed (column-strided) view takes the contiguous copy path.
    t = torch.randn(F, 40).t()
    torch.testing.assert_close(torch.ops.tinyseek.swiglu(t, t), reference(t, t), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(40, 48), (3, 5, 16), (2, 0)])
def test_packed_equals_the_two_halves(shape):
    torch.manual_seed(5)
    F = shape[-1] // 2
    gu = (torch.randn(*shape) * 3).requires_grad_()
    h = torch.ops.tinyseek.swiglu_packed(gu)
    assert h.shape == (*shape[:-1], F)
    gud = gu.detach().double().requires_grad_()
    want = reference(gud.narrow(-1, 0, F), gud.narrow(-1, F, F))
    torch.testing.assert_close(h.double(), want, rtol=2e-6, atol=1e-7)
    dh = torch.randn(*shape[:-1], F)
    h.backward(dh)
    want.backward(dh.double())
    assert gu.grad.is_contiguous()
    torch.testing.assert_close(gu.grad.double(), gud.grad, rtol=4e-6, atol=1e-6)
    # Bitwise the same numbers as the two-tensor op on the halves.
    if gu.numel():
        two = torch.ops.tinyseek.swiglu(gu.detach().narrow(-1, 0, F), gu.detach().narrow(-1, F, F))
        assert torch.equal(two, h.detach())


def test_opcheck():
    torch.manual_seed(4)
    gate = torch.randn(3, 5, 8, requires_grad=True)
    up = torch.randn(3, 5, 8, requires_grad=True)
    torch.library.opcheck(torch.ops.tinyseek.swiglu.default, (gate, up))
    torch.library.opcheck(torch.ops.tinyseek.swiglu_bwd.default, (torch.randn(3, 5, 8), gate.detach(), up.detach()))
    gu = torch.randn(3, 5, 16, requires_grad=True)
    torch.library.opcheck(torch.ops.tinyseek.swiglu_packed.default, (gu,))
    torch.library.opcheck(torch.ops.tinyseek.swiglu_packed_bwd.default, (torch.randn(3, 5, 8), gu.detach()))


def test_non_finite_values_follow_the_reference():
    inf, nan = float("inf"), float("nan")
    gate = torch.tensor([nan, inf, -inf, -100.0, 100.0, 0.5, -0.5], requires_grad=True)
    up = torch.tensor([1.5, 2.0, 2.0, 3.0, -1.0, nan, inf], requires_grad=True)
    h = torch.ops.tinyseek.swiglu(gate, up)
    gd, ud = gate.detach().double().requires_grad_(), up.detach().double().requires_grad_()
    want = reference(gd, ud)
    torch.testing.assert_close(h.double(), want, rtol=1e-6, atol=1e-30, equal_nan=True)
    h.backward(torch.ones(7))
    want.backward(torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(gate.grad.double(), gd.grad, rtol=1e-6, atol=1e-30, equal_nan=True)
    torch.testing.assert_close(up.grad.double(), ud.grad, rtol=1e-6, atol=1e-30, equal_nan=True)


def test_bad_input_messages():
    x = torch.randn(4, 8)
    with pytest.raises(RuntimeError, match=r"tinyseek.swiglu: argument 'up': expected the shape of gate \[4, 8\], got \[4, 7\]"):
        torch.ops.tinyseek.swiglu(x, torch.randn(4, 7))
    with pytest.raises(RuntimeError, match=r"tinyseek.swiglu: argument 'up': expected the dtype of gate"):
        torch.ops.tinyseek.swiglu(x, x.double())
    with pytest.raises(RuntimeError, match=r"tinyseek.swiglu: argument 'gate': expected a floating dtype"):
        torch.ops.tinyseek.swiglu(torch.ones(3, dtype=torch.long), torch.ones(3, dtype=torch.long))
    with pytest.raises(RuntimeError, match=r"tinyseek.swiglu: argument 'gate': expected at least 1 dimension"):
        torch.ops.tinyseek.swiglu(torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(RuntimeError, match=r"tinyseek.swiglu: argument 'gate': expected dtype Float"):
        torch.ops.tinyseek.swiglu(x.double(), x.double())
    with pytest.raises(RuntimeError, match=r"tinyseek.swiglu_bwd: argument 'grad_out': expected the shape of gate"):
        torch.ops.tinyseek.swiglu_bwd(torch.randn(4, 7), x, x)
    with pytest.raises(RuntimeError, match=r"tinyseek.swiglu_packed: argument 'gate_up': expected \[..., 2F\]"):
        torch.ops.tinyseek.swiglu_packed(torch.randn(4, 7))
    with pytest.raises(RuntimeError, match=r"tinyseek.swiglu_packed_bwd: argument 'grad_out': expected gate_up's shape"):
        torch.ops.tinyseek.swiglu_packed_bwd(torch.randn(4, 3), torch.randn(4, 8))


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_model_with_and_without_the_fused_kernels(ffn):
    """tinyseek.set_fused_kernels switches the C++ model between the op and the torch composition:
    the same loss and gradients within fp32 tolerance, and not bitwise the same (the switch acts)."""
    cfg = {"model": {"d_model": 64, "n_layers": 2, "n_heads": 4, "ffn_hidden": 96, "vocab_size": 256, "ffn": ffn,
                     "moe": {"n_routed_experts": 4, "top_k": 2, "n_shared_experts": 1, "expert_hidden": 32}},
           "data": {"seq_len": 32}}
    x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(5))
    runs = []
    for fused in (True, False):
        torch.manual_seed(0)
        m = tinyseek.Model.from_config(cfg).train()
        was = tinyseek.set_fused_kernels(fused)
        try:
            loss = m(x).logsumexp(-1).mean()
            loss.backward()
        finally:
            tinyseek.set_fused_kernels(was)
        runs.append((loss.detach(), [p.grad.clone() for p in m.parameters() if p.grad is not None]))
    assert tinyseek.set_fused_kernels(True) is True  # restored: the default is on
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=1e-6, atol=0)
    assert len(runs[0][1]) == len(runs[1][1])
    for a, b in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
