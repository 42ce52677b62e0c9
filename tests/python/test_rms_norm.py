import pytest
import torch

import tinyseek


def reference(x, w, eps):
    xd, wd = x.double(), w.double()
    return xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + eps) * wd


def test_op_registered_and_matches_reference():
    torch.manual_seed(0)
    x = torch.randn(4, 7, 64) * 3
    w = torch.rand(64) + 0.5
    y = torch.ops.tinyseek.rms_norm(x, w, 1e-6)
    torch.testing.assert_close(y.double(), reference(x, w, 1e-6), rtol=1e-5, atol=1e-6)


def test_autograd_against_float64():
    torch.manual_seed(1)
    x = torch.randn(5, 48, requires_grad=True)
    w = (torch.rand(48) + 0.5).requires_grad_()
    g = torch.randn(5, 48)
    torch.ops.tinyseek.rms_norm(x, w, 1e-5).backward(g)
    xd = x.detach().double().requires_grad_()
    wd = w.detach().double().requires_grad_()
    reference(xd, wd, 1e-5).backward(g.double())
    torch.testing.assert_close(x.grad.double(), xd.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w.grad.double(), wd.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 32), (2, 5, 16), (1, 1)])
def test_opcheck(shape):
    torch.manual_seed(2)
    x = torch.randn(*shape, requires_grad=True)
    w = (torch.rand(shape[-1]) + 0.5).requires_grad_()
    torch.library.opcheck(torch.ops.tinyseek.rms_norm.default, (x, w, 1e-6))
    torch.library.opcheck(torch.ops.tinyseek.rms_norm_fwd.default, (x.detach(), w.detach(), 1e-6))


def test_module_in_a_training_loop():
    torch.manual_seed(3)
    norm = tinyseek.nn.RMSNorm(16)
    opt = torch.optim.SGD(norm.parameters(), lr=0.1)
    x = torch.randn(8, 16)
    target = torch.randn(8, 16)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = (norm(x) - target).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_bad_input_message():
    with pytest.raises(RuntimeError, match=r"tinyseek.rms_norm: argument 'weight': expected shape \[8\]"):
        torch.ops.tinyseek.rms_norm(torch.randn(2, 8), torch.ones(7), 1e-6)


def test_backward_op_checks_every_input():
    # Regressions: a weight of the wrong length once crashed the process (SIGSEGV) or left
    # grad_weight partly unwritten.
    ops = torch.ops.tinyseek
    x = torch.randn(4, 1000)
    with pytest.raises(RuntimeError, match=r"rms_norm_bwd: argument 'weight': expected shape \[1000\]"):
        ops.rms_norm_bwd(torch.randn_like(x), x, torch.ones(1), torch.ones(4))
    with pytest.raises(RuntimeError, match=r"rms_norm_bwd: argument 'weight': expected shape \[8\]"):
        ops.rms_norm_bwd(torch.randn(2, 8), torch.randn(2, 8), torch.ones(2, 8), torch.ones(2))
    with pytest.raises(RuntimeError, match=r"rms_norm_bwd: argument 'rstd': expected shape \[2\]"):
        ops.rms_norm_bwd(torch.randn(2, 8), torch.randn(2, 8), torch.ones(8), torch.ones(3))
    with pytest.raises(RuntimeError, match=r"rms_norm_bwd: argument 'grad_y': expected the shape of x"):
        ops.rms_norm_bwd(torch.randn(2, 7), torch.randn(2, 8), torch.ones(8), torch.ones(2))


def test_zero_width_rows_under_fake_tensors_and_on_cpu():
    # Regression: the Meta kernel divided by a last dimension of 0 (SIGFPE while tracing).
    from torch._subclasses.fake_tensor import FakeTensorMode

    ops = torch.ops.tinyseek
    with FakeTensorMode():
        y, rstd = ops.rms_norm_fwd(torch.empty(3, 0), torch.empty(0), 1e-6)
        assert y.shape == (3, 0) and rstd.shape == (3,)
    y, rstd = ops.rms_norm_fwd(torch.randn(3, 0), torch.ones(0), 1e-6)
    assert y.shape == (3, 0) and rstd.shape == (3,)
