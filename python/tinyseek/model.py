"""The C++ transformer as a torch.nn.Module: `tinyseek.load(RUN_DIR or "hf:DIR")`.

There is one model implementation, in C++ (csrc/nn/transformer.h); this module drives it through
the custom class torch.classes.tinyseek.Model. Its parameters are the C++ model's own tensors
(registered here under tinyseek's names, e.g. "blocks.0.attn.wq.weight"), so a torch optimizer
steps what the C++ forward computes with, and autograd runs through the C++ forward and backward.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import torch
import yaml

Prompts = Union[str, bytes, Sequence[str], Sequence[Sequence[int]], torch.Tensor]


def _as_parameter(t: torch.Tensor) -> torch.nn.Parameter:
    # The same tensor object (not a copy) becomes a Parameter, so nn.Module registers it and its
    # .grad is the one the C++ backward fills.
    if not isinstance(t, torch.nn.Parameter):
        t.__class__ = torch.nn.Parameter
    return t


def _owner(root: torch.nn.Module, dotted: str) -> tuple[torch.nn.Module, str]:
    *path, leaf = dotted.split(".")
    m = root
    for part in path:
        if part not in m._modules:
            m.add_module(part, torch.nn.Module())
        m = m._modules[part]
    return m, leaf


def _register(root: torch.nn.Module, handle) -> None:
    """Registers a C++ module's parameters and buffers (handle: a tinyseek custom class) on root
    under their C++ names, nesting containers for the dots ("blocks.0.attn.wq.weight")."""
    for name, t in zip(handle.parameter_names(), handle.parameters()):
        owner, leaf = _owner(root, name)
        owner.register_parameter(leaf, _as_parameter(t))
    for name, t in zip(handle.buffer_names(), handle.buffers()):
        owner, leaf = _owner(root, name)
        owner.register_buffer(leaf, t)


class Model(torch.nn.Module):
    """A tinyseek transformer. forward(tokens [B, T] int64) -> logits [B, T, vocab].

    Build one with tinyseek.load(...) (a trained run or a Hugging Face folder) or
    Model.from_config(...) (a fresh model from a config's model section, MTP included).
    """

    def __init__(self, handle: "torch.ScriptObject"):
        super().__init__()
        object.__setattr__(self, "_handle", handle)  # not a submodule: no parameters of its own
        _register(self, handle)
        self.config = yaml.safe_load(handle.config_yaml())
        self.vocab_size = handle.vocab_size()
        self.max_seq_len = handle.max_seq_len()
        self.mtp_depth = handle.mtp_depth()
        self.eval()

    @classmethod
    def from_config(cls, config: Union[str, os.PathLike, dict], **overrides) -> "Model":
        """A randomly initialised model (seeded by the config's `seed`) from a YAML file, YAML
        text or a dict; overrides are dotted keys, e.g. **{"model.mtp.depth": 2}."""
        if isinstance(config, dict):
            c = dict(config)
        elif os.path.exists(str(config)):
            with open(config) as f:
                c = yaml.safe_load(f) or {}
        else:
            c = yaml.safe_load(str(config)) or {}
        c.pop("variants", None)
        for key, value in overrides.items():
            node = c
            *path, leaf = key.split(".")
            for part in path:
                node = node.setdefault(part, {})
            node[leaf] = value
        return cls(torch.classes.tinyseek.Model("config", yaml.safe_dump(c), -1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._handle.forward(tokens)

    def forward_mtp(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """[main logits [B, T, V], depth-1 logits [B, T-1, V], ...]: depth k at position i predicts token i+k+1."""
        return self._handle.forward_mtp(tokens)

    def mtp_loss_weight(self, step: int) -> float:
        """lambda at training step `step`: model.mtp.loss_weight, or switch_loss_weight from switch_step on."""
        return self._handle.mtp_loss_weight(int(step))

    def aux_loss(self) -> torch.Tensor:
        """The MoE balance losses of the last training-mode forward (0 for a dense model); add it to the loss."""
        return self._handle.aux_loss()

    def after_optimizer_step(self) -> None:
        """The auxiliary-loss-free bias update of every MoE layer (call after optimizer.step())."""
        self._handle.after_optimizer_step()

    def train(self, mode: bool = True) -> "Model":
        super().train(mode)
        self._handle.set_training(mode)
        return self

    def to(self, *args, **kwargs) -> "Model":
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if dtype not in (None, torch.float32):
            raise ValueError(f"tinyseek.Model.to: the model keeps fp32 weights, got dtype {dtype}")
        if device is not None:
            self._handle.to_device(str(device))
        return self

    def generate(self, prompts: Prompts, max_new_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 0, speculative: bool = False) -> list[list[int]]:
        """KV-cached decoding (csrc/nn/generate.h): the new tokens of each prompt. Prompts are text
        (bytes are the tokens), lists of token ids or a [B, T] tensor; temperature 0 is greedy;
        sequence i samples with seed + i; speculative drafts with the MTP modules."""
        return self._handle.generate(_token_lists(prompts), int(max_new_tokens), float(temperature), int(top_k),
                                     float(top_p), int(seed), bool(speculative))

    def generate_text(self, prompts: Union[str, Sequence[str]], **kwargs) -> Union[str, list[str]]:
        """generate() for text prompts, returning the completions' text (invalid UTF-8 replaced)."""
        single = isinstance(prompts, str)
        out = [bytes(t).decode("utf-8", "replace") for t in self.generate([prompts] if single else prompts, **kwargs)]
        return out[0] if single else out

    def export_hf(self, out: Union[str, os.PathLike]) -> None:
        """Write the model as a Hugging Face folder (DeepSeek-V3 for MLA, else Llama; csrc/train/hf.h)."""
        self._handle.export_hf(str(out))


def _token_lists(prompts: Prompts) -> list[list[int]]:
    if isinstance(prompts, torch.Tensor):
        return [[int(v) for v in row] for row in prompts.tolist()]
    if isinstance(prompts, (str, bytes)):
        prompts = [prompts]
    out = []
    for p in prompts:
        if isinstance(p, str):
            p = p.encode("utf-8")
        out.append(list(p))
    return out


def load(ref: Union[str, os.PathLike], step: Optional[int] = None) -> Model:
    """The model of a trained run, RUN_DIR[/VARIANT] (latest checkpoint, or `step`), or of a Hugging
    Face checkpoint folder, "hf:DIR" (DeepSeek-V3 or Llama architecture)."""
    return Model(torch.classes.tinyseek.Model("run", os.fspath(ref), -1 if step is None else int(step)))


__all__ = ["Model", "load"]
