"""GRPO from Python: the loss, the advantages and the format reward of tinyseek's GRPO trainer
(kind: grpo).

They call the C++ ops torch.ops.tinyseek.grpo_loss, torch.ops.tinyseek.group_advantages
(csrc/ops/grpo.h) and torch.ops.tinyseek.format_reward (csrc/rl/tasks.h), the same code the
trainer runs; nothing here recomputes them.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import ops

STAT_NAMES = ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "kl", "ratio")


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: Optional[torch.Tensor] = None,
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: Optional[float] = None,
    loss_type: str = "grpo",
    importance_sampling: str = "token",
    max_completion_length: Optional[int] = None,
    clip: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate loss of GRPO with TRL's normalisations.

    logp, old_logp, ref_logp: [N, L] per-token log-probabilities; advantages: [N]; mask: [N, L],
    1 on completion tokens. loss_type: "grpo" (mean over each sequence's tokens, then over
    sequences), "bnpo" / "dapo" (sum over tokens / number of tokens), "dr_grpo" (sum /
    (N * max_completion_length)). importance_sampling: "token" or "sequence" (GSPO). epsilon_high
    defaults to epsilon (DAPO's clip-higher uses 0.28). beta > 0 adds the k3 KL to ref_logp.
    clip=False gives the plain policy-gradient surrogate -ratio * A.

    Returns (loss, stats) with stats "clip_ratio/low_mean", "clip_ratio/high_mean",
    "clip_ratio/region_mean", "kl" and "ratio" (means over completion tokens).
    """
    loss, stats = ops.grpo_loss(
        logp, old_logp, advantages, mask, ref_logp, beta, epsilon, epsilon_high, loss_type,
        importance_sampling, max_completion_length, clip,
    )
    return loss, dict(zip(STAT_NAMES, stats.tolist()))


def group_advantages(rewards: torch.Tensor, scale: str = "group") -> torch.Tensor:
    """rewards [P, G] -> advantages [P, G]: reward minus its group's mean, divided by the group's
    std + 1e-4 ("group"), the batch's std + 1e-4 ("batch") or nothing ("none", Dr. GRPO)."""
    return ops.group_advantages(rewards, scale)


__all__ = ["grpo_loss", "group_advantages", "STAT_NAMES"]


def format_reward(completions: list[str]) -> list[float]:
    """R1-Zero's format reward of each completion: 1 for `<think>...</think> <answer>...</answer>`
    as the trainer parses it, else 0."""
    return list(torch.ops.tinyseek.format_reward([str(c) for c in completions]))
