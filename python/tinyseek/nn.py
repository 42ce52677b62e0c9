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


class FP8Linear(torch.nn.Module):
    """y = x W^T (no bias) with Fprop, Dgrad and Wgrad as FP8 (E4M3) GEMMs; the weight stays fp32.

    recipe="blockwise": DeepSeek-V3's fine-grained scaling (x and gradients in 1 x 128 tiles, W in
    128 x 128 blocks), torch.ops.tinyseek.fp8_linear. recipe="per_tensor_delayed": one scale per
    tensor from the amax of the previous `amax_history_len` training steps (TransformerEngine's
    delayed scaling), torch.ops.tinyseek.fp8_linear_per_tensor; the history is the buffer
    `fp8_amax_history` [amax_history_len, 3] (x, weight, grad_y; row 0 the newest), so state_dict
    carries it. Same semantics as the C++ ts::nn::Linear with precision.kind fp8.
    promote_interval / accum_mantissa_bits / accum_model configure the CPU emulator's accumulator
    (kernels/fp8.h); the defaults (promotion every 128, fp32) are what CUDA runs.
    """

    def __init__(self, in_features: int, out_features: int, recipe: str = "blockwise",
                 promote_interval: int = 128, accum_mantissa_bits: int = 23,
                 accum_model: str = "align_truncate", amax_history_len: int = 16):
        super().__init__()
        if recipe not in ("blockwise", "per_tensor_delayed"):
            raise ValueError(f"FP8Linear: recipe must be 'blockwise' or 'per_tensor_delayed', got {recipe!r}")
        self.in_features, self.out_features, self.recipe = in_features, out_features, recipe
        self.promote_interval, self.accum_mantissa_bits, self.accum_model = (
            promote_interval, accum_mantissa_bits, accum_model)
        bound = 1.0 / in_features ** 0.5
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        if recipe == "per_tensor_delayed":
            self.register_buffer("fp8_amax_history", torch.zeros(amax_history_len, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        knobs = (self.promote_interval, self.accum_mantissa_bits, self.accum_model)
        if self.recipe == "blockwise":
            return torch.ops.tinyseek.fp8_linear(x, self.weight, *knobs)
        hist = self.fp8_amax_history
        with torch.no_grad():  # scales from the previous steps; -1: no history yet, scale just in time
            h = hist.amax(0)
            scales = torch.where(h > 0, h.clamp_min(1e-4) / 448.0, torch.full_like(h, -1.0))
        y = torch.ops.tinyseek.fp8_linear_per_tensor(x, self.weight, scales, *knobs)
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                hist.copy_(hist.roll(1, 0))
                hist[0, 0] = x.abs().amax() if x.numel() else 0.0
                hist[0, 1] = self.weight.abs().amax()
                hist[0, 2] = 0.0
            if y.requires_grad:
                def record_grad_amax(g: torch.Tensor) -> None:
                    if g.numel():
                        with torch.no_grad():
                            hist[0, 2] = torch.maximum(hist[0, 2], g.abs().amax())
                y.register_hook(record_grad_amax)
        return y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, recipe={self.recipe}"


__all__ = ["RMSNorm", "FP8Linear"]
