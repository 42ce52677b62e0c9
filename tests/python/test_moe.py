"""Routed-expert ops (torch.ops.tinyseek.moe_permute / moe_unpermute / grouped_gemm and their
backward ops) and tinyseek.nn.MoE: reference checks, gradients, edge cases, errors, opcheck."""
import pytest
import torch

import tinyseek

ops = torch.ops.tinyseek
CASES = [(37, 40, 2, 8), (64, 16, 8, 32), (20, 9, 1, 4), (0, 16, 2, 4), (6, 8, 3, 1)]  # T, H, K, E


def ids_with_empty_experts(T, K, E):
    ids = torch.randint(E, (T, K))
    return (ids // 2) * 2 if E >= 4 else ids  # odd experts stay empty


def reference_routing(ids, E):
    s2t = ids.flatten().sort(stable=True).indices
    t2s = torch.empty_like(s2t)
    t2s[s2t] = torch.arange(s2t.numel())
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(ids.flatten(), minlength=E).cumsum(0)])
    return s2t, t2s, offsets


def ref_unpermute(ys, t2s, w):
    T, K = w.shape
    return (ys[t2s].view(T, K, ys.shape[1]) * w.unsqueeze(-1)).sum(1)


def ref_grouped_gemm(x, w, offsets):
    return torch.cat([x[offsets[e]:offsets[e + 1]] @ w[e].t() for e in range(w.shape[0])])


@pytest.mark.parametrize("T,H,K,E", CASES)
def test_permute_is_bitwise_the_stable_sort(T, H, K, E):
    torch.manual_seed(T + K)
    x = torch.randn(T, H)
    ids = ids_with_empty_experts(T, K, E)
    xs, s2t, offs = ops.moe_permute(x, ids, E)
    r_s2t, _, r_offs = reference_routing(ids, E)
    assert torch.equal(s2t, r_s2t) and torch.equal(offs, r_offs)
    assert torch.equal(xs, x[r_s2t // K])


@pytest.mark.parametrize("T,H,K,E", CASES)
def test_forward_and_gradients_against_float64_autograd(T, H, K, E):
    torch.manual_seed(3 * T + E)
    N = 12
    x = torch.randn(T, H, requires_grad=True)
    w = (torch.randn(E, N, H) * 0.3).requires_grad_()
    gate = (torch.rand(T, K) + 0.1).requires_grad_()
    ids = ids_with_empty_experts(T, K, E)
    xs, s2t, offs = ops.moe_permute(x, ids, E)
    y = ops.moe_unpermute(ops.grouped_gemm(xs, w, offs), s2t, gate)
    g = torch.randn(T, N)
    y.backward(g)
    s2t_r, t2s_r, offs_r = reference_routing(ids, E)
    xd, wd, gd = (t.detach().double().requires_grad_() for t in (x, w, gate))
    yd = ref_unpermute(ref_grouped_gemm(xd[s2t_r // K], wd, offs_r), t2s_r, gd)
    yd.backward(g.double())
    tol = dict(rtol=1e-4, atol=1e-4)  # fp32 sums of at most max(T*K, H, N) O(1) products
    torch.testing.assert_close(y.double(), yd, **tol)
    torch.testing.assert_close(x.grad.double(), xd.grad, **tol)
    torch.testing.assert_close(w.grad.double(), wd.grad, **tol)
    torch.testing.assert_close(gate.grad.double(), gd.grad, **tol)


def test_unpermute_with_k1_is_bitwise():
    torch.manual_seed(5)
    ids = torch.randint(4, (30, 1))
    s2t, t2s, _ = reference_routing(ids, 4)
    ys, w = torch.randn(30, 16), torch.rand(30, 1)
    assert torch.equal(ops.moe_unpermute(ys, s2t, w), ys[t2s] * w)


def test_out_of_range_expert_id_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"tinyseek.moe_permute: argument 'topk_ids': expert id 7 at \[1, 0\] "
                                           r"is outside \[0, 4\)"):
        ops.moe_permute(torch.randn(2, 8), torch.tensor([[0, 1], [7, 2]]), 4)
    with pytest.raises(RuntimeError, match="argument 'expert_offsets'"):
        ops.grouped_gemm(torch.randn(4, 3), torch.randn(2, 5, 3), torch.tensor([0, 1, 3]))


def sample_inputs():
    for T, H, K, E in CASES:
        torch.manual_seed(T * 7 + K)
        x = torch.randn(T, H, requires_grad=True)
        ids = ids_with_empty_experts(T, K, E)
        s2t, _, offs = reference_routing(ids, E)
        yield T, H, K, E, x, ids, s2t, offs


@pytest.mark.parametrize("case", range(len(CASES)))
def test_opcheck(case):
    T, H, K, E, x, ids, s2t, offs = list(sample_inputs())[case]
    N = 6
    w = torch.randn(E, N, H, requires_grad=True)
    ys = torch.randn(T * K, H, requires_grad=True)
    gate = (torch.rand(T, K) + 0.1).requires_grad_()
    xs = torch.randn(T * K, H, requires_grad=True)
    # The AOT-dispatch check (a torch.compile trace, forward and backward, dynamic shapes) costs
    # seconds per op: run it on the first case, the cheaper checks on every case.
    utils = None if case == 0 else ("test_schema", "test_autograd_registration", "test_faketensor")
    check = (lambda op, args: torch.library.opcheck(op, args)) if utils is None else (
        lambda op, args: torch.library.opcheck(op, args, test_utils=utils))
    check(ops.moe_permute.default, (x, ids, E))
    check(ops.moe_unpermute.default, (ys, s2t, gate))
    check(ops.grouped_gemm.default, (xs, w, offs))
    check(ops.moe_permute_bwd.default, (torch.randn(T * K, H), s2t, T))
    check(ops.moe_unpermute_bwd.default, (torch.randn(T, H), ys.detach(), s2t, gate.detach()))
    check(ops.grouped_gemm_bwd.default, (torch.randn(T * K, N), xs.detach(), w.detach(), offs))


def dense_reference(m, x):
    """Every expert on every token, weighted by the layer's own gates (C++ parameter names)."""
    h = x.reshape(-1, x.shape[-1])
    ids, weights, _ = m.route(h)
    gates = torch.zeros(h.shape[0], m.E).scatter(1, ids, weights)
    sh = m.shared
    y = (torch.nn.functional.silu(h @ sh.w1.weight.t()) * (h @ sh.w3.weight.t())) @ sh.w2.weight.t()
    w13, w2 = m.w13.weight, m.w2.weight
    for e in range(m.E):
        gu = h @ w13[e].t()
        y = y + gates[:, e:e + 1] * ((torch.nn.functional.silu(gu[:, :m.F]) * gu[:, m.F:]) @ w2[e].t())
    return y.view(x.shape)


@pytest.mark.parametrize("kw", [dict(), dict(score_func="sigmoid", n_group=4, topk_group=2, top_k=3,
                                             routed_scaling_factor=2.5, loss_free=True)])
def test_module_matches_dense_reference(kw):
    torch.manual_seed(11)
    m = tinyseek.nn.MoE(16, n_routed_experts=8, expert_hidden=8, init_std=0.3, **kw)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(m(x), dense_reference(m, x), rtol=1e-4, atol=1e-5)


def test_module_trains_balances_and_updates_bias():
    torch.manual_seed(12)
    m = tinyseek.nn.MoE(16, n_routed_experts=4, expert_hidden=8, aux_loss_alpha=0.01, seq_aux_loss_alpha=0.01,
                        loss_free=True, bias_update_speed=0.01)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    x, target = torch.randn(4, 8, 16), torch.randn(4, 8, 16)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = (m(x) - target).pow(2).mean()
        assert m.aux_loss is not None and m.aux_loss.item() > 0
        (loss + m.aux_loss).backward()
        opt.step()
        load = m.step_load().float()
        before = m.expert_bias.clone()
        m.update_bias()
        torch.testing.assert_close(m.expert_bias - before, 0.01 * torch.sign(load.mean() - load))
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert "expert_bias" in dict(m.named_buffers()) and "expert_bias" not in dict(m.named_parameters())
    assert m.take_load().sum().item() == 8 * 4 * 8 * 2
    assert tinyseek.nn.MoE.max_violation(torch.tensor([2, 4, 6, 8])) == pytest.approx(0.6)


def test_meta_backward_kernels_check_their_inputs():
    # Regression: the Meta kernels of the backward ops returned shapes for any input.
    from torch._subclasses.fake_tensor import FakeTensorMode

    ops = torch.ops.tinyseek
    with FakeTensorMode():
        x, w, offs = torch.empty(6, 8), torch.empty(3, 5, 8), torch.empty(4, dtype=torch.long)
        gx, gw = ops.grouped_gemm_bwd(torch.empty(6, 5), x, w, offs)
        assert gx.shape == (6, 8) and gw.shape == (3, 5, 8)
        with pytest.raises(RuntimeError, match=r"grouped_gemm_bwd: argument 'grad_out': expected shape \[6, 5\]"):
            ops.grouped_gemm_bwd(torch.empty(6, 4), x, w, offs)
        with pytest.raises(RuntimeError, match=r"moe_permute_bwd: argument 'sorted_to_token': expected 6 entries"):
            ops.moe_permute_bwd(torch.empty(6, 8), torch.empty(5, dtype=torch.long), 3)
        ys, s2t, tw = torch.empty(6, 8), torch.empty(6, dtype=torch.long), torch.empty(3, 2)
        with pytest.raises(RuntimeError, match=r"moe_unpermute_bwd: argument 'grad_y': expected shape \[3, 8\]"):
            ops.moe_unpermute_bwd(torch.empty(4, 8), ys, s2t, tw)


def test_module_is_the_cpp_layer_capacity_factor_included():
    # tinyseek.nn.MoE drives the C++ layer: capacity_factor (which the former Python copy lacked)
    # drops slots in training only, and the parameters are the C++ layer's own tensors.
    torch.manual_seed(13)
    m = tinyseek.nn.MoE(16, n_routed_experts=4, top_k=2, expert_hidden=8, init_std=0.3, capacity_factor=0.5)
    x = torch.randn(2, 16, 16)
    m.eval()
    y_eval = m(x)
    m.train()
    y_train = m(x)
    assert not torch.allclose(y_eval, y_train)  # half the capacity: some slots dropped
    m.train(False)
    torch.testing.assert_close(m(x), y_eval)
    assert set(dict(m.named_parameters())) == {"router", "w13.weight", "w2.weight", "shared.w1.weight",
                                               "shared.w3.weight", "shared.w2.weight"}
    with torch.no_grad():
        m.w2.weight.zero_()
        m.shared.w2.weight.zero_()
    assert m(x).abs().max().item() == 0.0  # the C++ forward reads the tensors Python holds
    with pytest.raises(ValueError, match="top_k"):
        tinyseek.nn.MoE(16, n_routed_experts=4, top_k=5)
