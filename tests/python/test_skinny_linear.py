import pytest
import torch

import tinyseek  # noqa: F401  (loads the ops)


@pytest.mark.parametrize("shape,n", [((1, 128), 352), ((3, 131), 9), ((2, 3, 40), 17), ((24, 64), 64)])
def test_matches_float64(shape, n):
    torch.manual_seed(sum(shape) + n)
    x = torch.randn(*shape)
    w = torch.randn(n, shape[-1])
    y = torch.ops.tinyseek.skinny_linear(x, w)
    assert y.shape == (*shape[:-1], n)
    want = x.double() @ w.double().t()
    k = shape[-1]
    bound = 1.01 * k * 2.0**-24 * (x.double().abs() @ w.double().abs().t())  # |error| <= K u sum|x w|
    assert ((y.double() - want).abs() <= bound).all()


def test_rows_do_not_depend_on_each_other():
    torch.manual_seed(4)
    x, w = torch.randn(5, 77), torch.randn(33, 77)
    together = torch.ops.tinyseek.skinny_linear(x, w)
    for i in range(5):
        assert torch.equal(torch.ops.tinyseek.skinny_linear(x[i : i + 1], w)[0], together[i])


def test_non_contiguous_input_and_empty_depth():
    torch.manual_seed(5)
    x = torch.randn(16, 6).t()  # [6, 16], strided
    w = torch.randn(10, 16)
    torch.testing.assert_close(torch.ops.tinyseek.skinny_linear(x, w), x @ w.t(), rtol=1e-5, atol=1e-5)
    y = torch.ops.tinyseek.skinny_linear(torch.randn(3, 0), torch.randn(4, 0))
    assert torch.equal(y, torch.zeros(3, 4))


@pytest.mark.parametrize("shape", [(1, 32), (2, 4, 16)])
def test_opcheck(shape):
    torch.manual_seed(6)
    x, w = torch.randn(*shape), torch.randn(8, shape[-1])
    torch.library.opcheck(torch.ops.tinyseek.skinny_linear.default, (x, w), test_utils=("test_schema", "test_faketensor"))


def test_bad_input_messages():
    with pytest.raises(RuntimeError, match=r"tinyseek.skinny_linear: argument 'weight': expected shape \[N, 8\]"):
        torch.ops.tinyseek.skinny_linear(torch.randn(2, 8), torch.randn(4, 7))
    with pytest.raises(RuntimeError, match=r"argument 'x': expected dtype Float"):
        torch.ops.tinyseek.skinny_linear(torch.randn(2, 8).double(), torch.randn(4, 8).double())
