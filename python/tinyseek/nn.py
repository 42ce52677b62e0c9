"""tinyseek modules for Python training loops; each wraps torch.ops.tinyseek.* and supports autograd."""
from __future__ import annotations

import torch


class RMSNorm(torch.nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last dim, by the fused tinyseek op."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.tinyseek.rms_norm(x, self.weight, self.eps)


__all__ = ["RMSNorm"]
