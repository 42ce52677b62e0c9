"""tinyseek modules for Python training loops, with autograd. RMSNorm calls its op
(torch.ops.tinyseek.rms_norm); FP8Linear, MoE and the attention modules are the C++ modules of
csrc/nn driven through custom classes (their parameters are the C++ modules' own tensors), so
Python and C++ share one implementation of each."""
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
    """y = x W^T (no bias) with Fprop, Dgrad and Wgrad as FP8 (E4M3) GEMMs; the weight stays fp32:
    the C++ ts::nn::Linear with precision.kind fp8 (csrc/nn/linear.h), driven from Python.

    recipe="blockwise": DeepSeek-V3's fine-grained scaling (x and gradients in 1 x 128 tiles, W in
    128 x 128 blocks), torch.ops.tinyseek.fp8_linear. recipe="per_tensor_delayed": one scale per
    tensor from the amax of the previous `amax_history_len` training steps (TransformerEngine's
    delayed scaling), torch.ops.tinyseek.fp8_linear_per_tensor; the history is the buffer
    `fp8_amax_history` [amax_history_len, 3] (x, weight, grad_y; row 0 the newest), so state_dict
    carries it. promote_interval / accum_mantissa_bits / accum_model configure the CPU emulator's
    accumulator (kernels/fp8.h); the defaults (promotion every 128, fp32) are what CUDA runs.
    """

    def __init__(self, in_features: int, out_features: int, recipe: str = "blockwise",
                 promote_interval: int = 128, accum_mantissa_bits: int = 23,
                 accum_model: str = "align_truncate", amax_history_len: int = 16):
        super().__init__()
        if recipe not in ("blockwise", "per_tensor_delayed"):
            raise ValueError(f"FP8Linear: recipe must be 'blockwise' or 'per_tensor_delayed', got {recipe!r}")
        self.in_features, self.out_features, self.recipe = in_features, out_features, recipe
        precision = {"kind": "fp8", "fp8_recipe": recipe, "promote_interval": promote_interval,
                     "accum_mantissa_bits": accum_mantissa_bits, "accum_model": accum_model,
                     "amax_history_len": amax_history_len}
        import yaml  # noqa: PLC0415 (only needed here)
        handle = torch.classes.tinyseek.LinearLayer(in_features, out_features, yaml.safe_dump({"precision": precision}))
        object.__setattr__(self, "_handle", handle)
        from .model import _register  # noqa: PLC0415
        _register(self, handle)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._handle.forward(x)

    def train(self, mode: bool = True) -> "FP8Linear":
        super().train(mode)
        self._handle.set_training(mode)
        return self

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, recipe={self.recipe}"


class MoE(torch.nn.Module):
    """DeepSeekMoE feed-forward: the C++ layer ts::nn::MoE (csrc/nn/moe.h, config section model.moe)
    driven from Python, so there is one implementation of routing, experts and balancing.

    Shared experts plus fine-grained routed SwiGLU experts, top-k routing: score_func "softmax"
    (V2) or "sigmoid" (V3, the chosen sigmoids normalized to sum 1), gate weights times
    routed_scaling_factor, group-limited routing with n_group > 1, capacity_factor > 0 drops the
    slots past each expert's capacity in training. Parameters (C++ names): router [E, C],
    w13.weight [E, 2F, C] (gate rows first), w2.weight [E, C, F], shared.w1/w3/w2.weight; buffer
    expert_bias with loss_free. After a training forward `aux_loss` holds the balance losses (None
    when none is configured); update_bias() (after optimizer.step()) applies the loss-free bias
    update; take_load() returns the slots routed per expert since its last call. Initialised from
    torch's default generator (torch.manual_seed applies).
    """

    def __init__(self, dim: int, n_routed_experts: int = 8, top_k: int = 2, expert_hidden: int = 88,
                 n_shared_experts: int = 1, score_func: str = "softmax", norm_topk_prob: bool = False,
                 routed_scaling_factor: float = 1.0, n_group: int = 1, topk_group: int = 1,
                 aux_loss_alpha: float = 0.0, seq_aux_loss_alpha: float = 0.0, loss_free: bool = False,
                 bias_update_speed: float = 1e-3, init_std: float = 0.02, capacity_factor: float = 0.0):
        super().__init__()
        moe = dict(n_routed_experts=n_routed_experts, top_k=top_k, expert_hidden=expert_hidden,
                   n_shared_experts=n_shared_experts, score_func=score_func, norm_topk_prob=norm_topk_prob,
                   routed_scaling_factor=routed_scaling_factor, n_group=n_group, topk_group=topk_group,
                   aux_loss_alpha=aux_loss_alpha, seq_aux_loss_alpha=seq_aux_loss_alpha, loss_free=loss_free,
                   bias_update_speed=bias_update_speed, capacity_factor=capacity_factor)
        cfg = {"model": {"d_model": dim, "init_std": init_std, "ffn": "moe", "moe": moe}}
        import yaml  # noqa: PLC0415 (only needed here)
        handle = torch.classes.tinyseek.MoELayer(yaml.safe_dump(cfg))
        object.__setattr__(self, "_handle", handle)
        self.E, self.K, self.F = n_routed_experts, top_k, expert_hidden
        from .model import _register  # noqa: PLC0415 (model imports this module's siblings)
        _register(self, handle)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._handle.forward(x)

    def route(self, h: torch.Tensor):
        """h [T, C] -> (topk_ids [T, K] int64, topk_weights [T, K] fp32, scores [T, E] fp32), as forward routes."""
        return self._handle.route(h)

    @property
    def aux_loss(self):
        return self._handle.aux_loss()

    def train(self, mode: bool = True) -> "MoE":
        super().train(mode)
        self._handle.set_training(mode)
        return self

    def step_load(self):
        """Slots per expert of the training forwards since the last update_bias() (None when none)."""
        return self._handle.step_load()

    @torch.no_grad()
    def update_bias(self) -> None:
        self._handle.update_bias()

    def take_load(self) -> torch.Tensor:
        load, _dropped = self._handle.take_load()
        return load

    @staticmethod
    def max_violation(load: torch.Tensor) -> float:
        """MaxVio = (max load - mean load) / mean load."""
        load = load.double()
        mean = load.mean().item()
        return (load.max().item() - mean) / mean if mean > 0 else 0.0


class _Attention(torch.nn.Module):
    """A C++ attention module (csrc/nn/attention) driven from Python: one implementation."""

    def __init__(self, d_model: int, n_heads: int, attention: dict, rope_theta: float, norm_eps: float,
                 max_len: int):
        super().__init__()
        cfg = {"model": {"d_model": d_model, "n_heads": n_heads, "rope_theta": rope_theta, "norm_eps": norm_eps,
                         "attention": attention},
               "data": {"seq_len": max_len}}
        import yaml  # noqa: PLC0415 (only needed here)
        handle = torch.classes.tinyseek.AttentionLayer(yaml.safe_dump(cfg))
        object.__setattr__(self, "_handle", handle)
        from .model import _register  # noqa: PLC0415
        _register(self, handle)
        self.n_heads, self.max_len = n_heads, max_len

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, C] -> [B, T, C], causal, rotary positions 0..T-1 (T <= max_len)."""
        return self._handle.forward(x)

    def train(self, mode: bool = True):
        super().train(mode)
        self._handle.set_training(mode)
        return self

    def kv_cache_values_per_token(self) -> int:
        return self._handle.kv_cache_values_per_token()


class GroupedQueryAttention(_Attention):
    """Causal self-attention with n_kv_heads key/value heads shared by consecutive query heads:
    MHA (n_kv_heads = n_heads), GQA, MQA (n_kv_heads = 1), rotary positions on the whole head: the
    C++ GroupedQueryAttentionImpl, its parameters wq, wk, wv, wo (a checkpoint's
    blocks.<i>.attn.* loads with load_state_dict)."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None = None, rope_theta: float = 10000.0,
                 max_len: int = 4096):
        n_kv_heads = n_kv_heads or n_heads
        if d_model % n_heads or n_heads % n_kv_heads:
            raise ValueError(f"GroupedQueryAttention: need n_heads | d_model and n_kv_heads | n_heads, got "
                             f"d_model={d_model}, n_heads={n_heads}, n_kv_heads={n_kv_heads}")
        super().__init__(d_model, n_heads, {"kind": "gqa", "n_kv_heads": n_kv_heads}, rope_theta, 1e-6, max_len)
        self.n_kv_heads, self.head_dim = n_kv_heads, d_model // n_heads


class MultiHeadLatentAttention(_Attention):
    """Multi-head latent attention (DeepSeek-V2 §2.1, V3 §2.1): the C++ MultiHeadLatentAttentionImpl
    (csrc/nn/attention/mla.h; parameters wq or wq_a/q_norm/wq_b, wkv_a, kv_norm, wkv_b, wo).

    The KV cache holds per token only [c_KV ; k_R]: the RMS-normed latent (kv_lora_rank) and one
    rotary key shared by all heads (qk_rope_head_dim). forward() trains or prefills (naive:
    decompressed keys and values, causal SDPA; autograd through everything); decode() appends tokens
    to a paged latent cache and attends with W_UK absorbed into the query and W_UV into the output,
    through torch.ops.tinyseek.mla_decode (inference only)."""

    def __init__(self, d_model: int, n_heads: int, kv_lora_rank: int = 64, qk_nope_head_dim: int = 32,
                 qk_rope_head_dim: int = 16, v_head_dim: int = 32, q_lora_rank: int = 0,
                 softmax_scale: float = 0.0, rope_theta: float = 10000.0, norm_eps: float = 1e-6,
                 max_len: int = 4096):
        if qk_rope_head_dim % 2:
            raise ValueError(f"MultiHeadLatentAttention: qk_rope_head_dim must be even, got {qk_rope_head_dim}")
        attention = {"kind": "mla", "kv_lora_rank": kv_lora_rank, "q_lora_rank": q_lora_rank,
                     "qk_nope_head_dim": qk_nope_head_dim, "qk_rope_head_dim": qk_rope_head_dim,
                     "v_head_dim": v_head_dim, "softmax_scale": softmax_scale}
        super().__init__(d_model, n_heads, attention, rope_theta, norm_eps, max_len)
        self.kv_lora_rank, self.q_lora_rank = kv_lora_rank, q_lora_rank
        self.qk_nope_head_dim, self.qk_rope_head_dim, self.v_head_dim = qk_nope_head_dim, qk_rope_head_dim, v_head_dim
        self.softmax_scale = softmax_scale or (qk_nope_head_dim + qk_rope_head_dim) ** -0.5

    @torch.no_grad()
    def decode(self, x: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor,
               seq_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Appends the S tokens x [B, S, C] to each sequence and attends over everything cached.

        kv_cache [num_blocks, block_size, 1, kv_lora_rank + qk_rope_head_dim] (written in place),
        block_table [B, max_blocks] int32, seq_lens [B] int32: tokens cached BEFORE this call (the
        new ones take positions seq_lens[b] .. seq_lens[b] + S - 1). Returns (y [B, S, C], the new
        seq_lens)."""
        return self._handle.decode(x, kv_cache, block_table, seq_lens)


__all__ = ["RMSNorm", "FP8Linear", "MoE", "GroupedQueryAttention", "MultiHeadLatentAttention"]
