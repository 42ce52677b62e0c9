"""torch.ops.tinyseek.grpo_loss and group_advantages (csrc/ops/grpo.h) through tinyseek.rl:
hand-computed numbers on a tiny case for every loss type and importance-sampling level, a float64
composition of the formulas on random inputs, gradcheck, opcheck, and advantages for each scale."""
import math

import pytest
import torch

import tinyseek
from tinyseek import rl

LOGP = [[-1.0, -0.5, -2.0], [-0.2, -1.5, -0.7]]
OLD = [[-1.1, -0.5, -1.5], [-0.2, -1.0, -0.7]]
REF = [[-1.0, -0.6, -2.0], [-0.3, -1.5, -0.7]]
MASK = [[1, 1, 0], [1, 1, 1]]
ADV = [1.0, -0.5]


def tiny(**kw):
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    ref = t(REF) if kw.get("beta", 0) > 0 else None
    return rl.grpo_loss(t(LOGP), t(OLD), t(ADV), t(MASK), ref_logp=ref, **kw)


# Worked by hand (see the comments): log-ratios row 0 [0.1, 0, -0.5], row 1 [0, -0.5, 0];
# clipped at [0.8, 1.2]; per-token losses row 0 [-1.105171, -1, masked], row 1 [0.5, 0.4, 0.5].
@pytest.mark.parametrize(
    "kw, want",
    [
        (dict(loss_type="grpo"), (-1.0525855 + 0.4666667) / 2),
        (dict(loss_type="bnpo"), -0.705171 / 5),
        (dict(loss_type="dapo"), -0.705171 / 5),
        (dict(loss_type="dr_grpo", max_completion_length=4), -0.705171 / 8),
        (dict(loss_type="dr_grpo"), -0.705171 / 6),  # max_completion_length defaults to L = 3
        # GSPO: one ratio per sequence, exp(0.05) = 1.051271 and exp(-1/6) = 0.846482 (inside the clip).
        (dict(loss_type="grpo", importance_sampling="sequence"), (-1.051271 + 0.423241) / 2),
        (dict(loss_type="bnpo", importance_sampling="sequence"), (-1.051271 * 2 + 0.423241 * 3) / 5),
        # k3 KL with beta 0.5: exp(-0.1) + 0.1 - 1 = 0.004837 on tokens (0, 1) and (1, 0).
        (dict(loss_type="grpo", beta=0.5), (-1.105171 - 1 + 0.0024187) / 2 / 2 + (1.4 + 0.0024187) / 3 / 2),
        # clip off: -ratio * A; row 1 token 1 gives 0.5 * 0.606531.
        (dict(loss_type="bnpo", clip=False), (-1.105171 - 1 + 0.5 + 0.5 * 0.606531 + 0.5) / 5),
        # clip-higher does not change this case (no ratio above 1.2 with A > 0) ...
        (dict(loss_type="bnpo", epsilon_high=0.28), -0.705171 / 5),
        # ... a tight epsilon does: row 0 token 0 clips at 1.05.
        (dict(loss_type="bnpo", epsilon=0.05), (-1.05 - 1 + 0.5 + 0.5 * 0.95 + 0.5) / 5),
    ],
)
def test_hand_computed(kw, want):
    loss, stats = tiny(**kw)
    assert loss.item() == pytest.approx(want, abs=2e-6)
    assert set(stats) == set(rl.STAT_NAMES)


def test_hand_computed_stats():
    _, s = tiny(loss_type="grpo")
    # ratio 0.6065 < 0.8 with A < 0 at one of the 5 completion tokens; none above 1.2 with A > 0.
    assert s["clip_ratio/low_mean"] == pytest.approx(0.2)
    assert s["clip_ratio/high_mean"] == 0
    assert s["clip_ratio/region_mean"] == pytest.approx(0.2)
    assert s["ratio"] == pytest.approx(4.711702 / 5, abs=1e-6)
    assert s["kl"] == 0
    _, s = tiny(loss_type="grpo", beta=0.5)
    assert s["kl"] == pytest.approx(2 * 0.0048374 / 5, abs=1e-6)


def reference(logp, old, adv, mask, ref=None, beta=0.0, epsilon=0.2, epsilon_high=None, loss_type="grpo",
              importance_sampling="token", max_completion_length=None, clip=True):
    """The formulas of ../shared/references.md, in float64, written independently of the op."""
    logp, old, adv, mask = logp.double(), old.double(), adv.double(), mask.double()
    n, length = logp.shape
    eh = epsilon if epsilon_high is None else epsilon_high
    lr = logp - old
    if importance_sampling == "sequence":
        lr = (lr * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)
    c1 = torch.exp(lr).expand(n, length)
    a = adv[:, None]
    if clip:
        c2 = torch.clamp(c1, 1 - epsilon, 1 + eh)
        per = -torch.minimum(c1 * a, c2 * a)
    else:
        per = -c1 * a
    if beta > 0:
        d = ref.double() - logp
        per = per + beta * (torch.exp(d) - d - 1)
    if loss_type == "grpo":
        return ((per * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    if loss_type in ("bnpo", "dapo"):
        return (per * mask).sum() / mask.sum().clamp(min=1)
    return (per * mask).sum() / (n * (max_completion_length or length))


def random_case(seed, n=6, length=9, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(n, length, generator=g, dtype=dtype) * 3
    old = logp + torch.randn(n, length, generator=g, dtype=dtype) * 0.3
    ref = logp + torch.randn(n, length, generator=g, dtype=dtype) * 0.3
    adv = torch.randn(n, generator=g, dtype=dtype)
    mask = (torch.rand(n, length, generator=g) < 0.7).to(dtype)
    mask[0] = 0  # a sequence without completion tokens
    mask[1, 0] = 1
    return logp, old, adv, mask, ref


CONFIGS = [
    dict(loss_type=lt, importance_sampling=is_, beta=b, epsilon_high=eh, clip=c)
    for lt in ("grpo", "bnpo", "dapo", "dr_grpo")
    for is_ in ("token", "sequence")
    for b, eh, c in ((0.0, None, True), (0.04, 0.28, True), (0.0, None, False))
]


@pytest.mark.parametrize("kw", CONFIGS)
def test_against_float64_reference_with_gradients(kw):
    for seed in (1, 2):
        logp, old, adv, mask, ref = random_case(seed)
        x = logp.clone().requires_grad_()
        loss, _ = rl.grpo_loss(x, old, adv, mask, ref_logp=ref if kw["beta"] > 0 else None,
                               max_completion_length=12 if kw["loss_type"] == "dr_grpo" else None, **kw)
        loss.backward()
        xd = logp.double().requires_grad_()
        want = reference(xd, old, adv, mask, ref, max_completion_length=12 if kw["loss_type"] == "dr_grpo" else None,
                         **kw)
        want.backward()
        torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x.grad.double(), xd.grad, rtol=1e-5, atol=1e-6)


def test_mu_one_loss_is_minus_mean_advantage_with_a_real_gradient():
    logp, _, adv, mask, _ = random_case(3)
    x = logp.clone().requires_grad_()
    loss, stats = rl.grpo_loss(x, x.detach(), adv, mask, loss_type="bnpo")
    per_seq = mask.sum(1)
    assert loss.item() == pytest.approx(-(adv * per_seq).sum().item() / per_seq.sum().item(), abs=1e-6)
    assert stats["ratio"] == pytest.approx(1.0)
    loss.backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("kw", [CONFIGS[0], CONFIGS[4], CONFIGS[11], CONFIGS[-2]])
def test_gradcheck(kw):
    logp, old, adv, mask, ref = random_case(4, n=3, length=4, dtype=torch.float64)
    # Keep ratios away from the clip's kinks, where the derivative jumps.
    old = logp + 0.05 * torch.sign(torch.randn_like(logp))
    f = lambda x: rl.grpo_loss(x, old, adv, mask, ref_logp=ref if kw["beta"] > 0 else None, **kw)[0]  # noqa: E731
    assert torch.autograd.gradcheck(f, (logp.clone().requires_grad_(),))


@pytest.mark.parametrize("kw", [CONFIGS[0], CONFIGS[4], CONFIGS[-1]])
def test_opcheck(kw):
    logp, old, adv, mask, ref = random_case(5)
    args = (logp.clone().requires_grad_(), old, adv, mask, ref if kw["beta"] > 0 else None, kw["beta"], 0.2,
            kw["epsilon_high"], kw["loss_type"], kw["importance_sampling"], None, kw["clip"])
    torch.library.opcheck(torch.ops.tinyseek.grpo_loss.default, args)
    torch.library.opcheck(torch.ops.tinyseek.group_advantages.default, (torch.randn(4, 5), "group"))


def test_bad_inputs_name_the_argument():
    logp, old, adv, mask, ref = random_case(6)
    with pytest.raises(RuntimeError, match="argument 'old_logp'"):
        rl.grpo_loss(logp, old[:, :3], adv, mask)
    with pytest.raises(RuntimeError, match="argument 'advantages'"):
        rl.grpo_loss(logp, old, adv[:2], mask)
    with pytest.raises(RuntimeError, match="argument 'ref_logp'.*beta"):
        rl.grpo_loss(logp, old, adv, mask, beta=0.1)
    with pytest.raises(RuntimeError, match="argument 'loss_type'"):
        rl.grpo_loss(logp, old, adv, mask, loss_type="ppo")
    with pytest.raises(RuntimeError, match="argument 'importance_sampling'"):
        rl.grpo_loss(logp, old, adv, mask, importance_sampling="batch")
    with pytest.raises(RuntimeError, match="argument 'rewards'"):
        rl.group_advantages(torch.randn(4, 1))
    with pytest.raises(RuntimeError, match="argument 'scale'"):
        rl.group_advantages(torch.randn(4, 3), "global")


def test_group_advantages_each_scale():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [2.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    centred = r - r.mean(1, keepdim=True)
    std = r.std(1, keepdim=True)  # Bessel's correction
    torch.testing.assert_close(rl.group_advantages(r, "group"), centred / (std + 1e-4))
    torch.testing.assert_close(rl.group_advantages(r, "batch"), centred / (r.std() + 1e-4))
    torch.testing.assert_close(rl.group_advantages(r, "none"), centred)
    # A group whose rewards are all equal: advantage exactly 0, never NaN.
    for scale in ("group", "batch", "none"):
        a = rl.group_advantages(r, scale)
        assert torch.isfinite(a).all()
        assert (a[1] == 0).all()
    # By hand, group 0: mean 0.5, std sqrt(1/3) = 0.57735.
    assert rl.group_advantages(r)[0, 0].item() == pytest.approx(0.5 / (math.sqrt(1 / 3) + 1e-4))
