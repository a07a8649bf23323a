"""The MTP depth module and a trunk wrapper that exposes h before the final norm.

One MTP depth (DeepSeek-V3; docs/MTP.md, "What it loads"): for position i,
``h'_i = eh_proj([enorm(Emb(t_{i+1})); hnorm(h_i)])`` (embedding first; MiMo puts the hidden state
first), then one transformer block of the trunk's own class over the positions, then the depth's
own final norm and the head shared with the trunk: a draft for ``t_{i+2}``. Depth k reads depth
k-1's block output (before its final norm) as ``h``.

The trunk wrapper does not re-implement the trunk: it runs the transformers model unchanged and
records, with hooks on the last decoder block, (a) that block's output, which is h before the
final norm (``hidden_states[-1]`` of a Llama already has the final norm applied), and (b) the
keyword arguments the trunk passed to the block (causal mask, rotary cos/sin, position ids), so
the MTP block runs with exactly what a trunk block gets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ckpt_audit.mtp.layouts import EMBEDDING_FIRST, ORDERS

#: Keyword arguments of a decoder block call that the MTP block reuses.
_LAYER_KWARGS = ("attention_mask", "position_embeddings", "position_ids")


class MtpDepth(nn.Module):
    """One MTP depth: two input norms, the 2d->d projection, one block, the depth's final norm."""

    def __init__(self, block: nn.Module, make_norm: Callable[[], nn.Module], hidden: int,
                 order: str = EMBEDDING_FIRST, proj_bias: bool = False) -> None:
        super().__init__()
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}")
        self.order = order
        self.enorm: Any = make_norm()
        self.hnorm: Any = make_norm()
        self.eh_proj = nn.Linear(2 * hidden, hidden, bias=proj_bias)
        self.block: Any = block
        self.final_norm: Any = make_norm()

    def project(self, h_prev: torch.Tensor, emb_next: torch.Tensor) -> torch.Tensor:
        """The block's input: eh_proj of the concatenated normed embedding and hidden state."""
        e, h = self.enorm(emb_next), self.hnorm(h_prev)
        return self.eh_proj(torch.cat([e, h] if self.order == EMBEDDING_FIRST else [h, e],
                                      dim=-1))

    def forward(self, h_prev: torch.Tensor, emb_next: torch.Tensor,
                layer_kwargs: dict[str, Any], cache: Any = None) -> torch.Tensor:
        """Block output before the depth's final norm, [B, T, d]; position i drafts t_{i+k+1}.

        With ``cache`` (a transformers Cache holding this block's earlier positions) the block
        attends to them too; ``layer_kwargs`` must then describe the new positions only."""
        x = self.project(h_prev, emb_next)
        out = self.block(x, use_cache=cache is not None, cache=cache, **layer_kwargs)
        return out[0] if isinstance(out, tuple) else out


@dataclass
class TrunkOutput:
    """What one trunk pass yields: verifier logits, h before the final norm, block kwargs."""

    logits: torch.Tensor
    hidden: torch.Tensor
    layer_kwargs: dict[str, Any]


class Trunk:
    """A transformers causal LM plus hooks that capture the last block's input kwargs and output."""

    def __init__(self, model: Any) -> None:
        self.model: Any = model
        self.base: Any = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        n = int(model.config.num_hidden_layers)
        self.layers: Any = self.base.layers
        self.last: Any = self.layers[n - 1]
        self._hidden: torch.Tensor | None = None
        self._kwargs: dict[str, Any] = {}
        self.last.register_forward_pre_hook(self._pre, with_kwargs=True)
        self.last.register_forward_hook(self._post)

    def _pre(self, _mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._kwargs = {k: kwargs[k] for k in _LAYER_KWARGS if k in kwargs}

    def _post(self, _mod: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
        self._hidden = out[0] if isinstance(out, tuple) else out

    @property
    def embed(self) -> Any:
        return self.model.get_input_embeddings()

    @property
    def head(self) -> Any:
        return self.model.get_output_embeddings()

    @property
    def final_norm(self) -> Any:
        return self.base.norm

    def __call__(self, input_ids: torch.Tensor, cache: Any = None,
                 last_logits_only: bool = False) -> TrunkOutput:
        """One forward; with ``cache`` (a transformers Cache) only the new positions run. With
        ``last_logits_only`` the model computes logits at the last position only (transformers'
        ``logits_to_keep=1``), where its forward takes that argument: the caller computes the
        rest from ``hidden`` in chunks (``verifier_logits``)."""
        if cache is None:
            extra = {"logits_to_keep": 1} if last_logits_only and self.keeps_logits else {}
            out = self.model(input_ids=input_ids, use_cache=False, **extra)
        else:
            out = self.model(input_ids=input_ids, cache=cache, use_cache=True)
        assert self._hidden is not None, "the last decoder block did not run"
        hidden, self._hidden = self._hidden, None
        return TrunkOutput(out.logits, hidden, self._kwargs)

    @property
    def keeps_logits(self) -> bool:
        """Whether the model's forward can compute the last position's logits only."""
        import inspect

        return "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def verifier_logits(self, hidden: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """The trunk's logits recomputed from the last block's output: final norm (times
        ``scale``), then the head."""
        normed = self.final_norm(hidden.to(_device_of(self.head)))
        return self.head(normed * scale if scale != 1.0 else normed)

    def draft_logits(self, mtp: MtpDepth, block_out: torch.Tensor) -> torch.Tensor:
        """Logits of a depth's drafts: its own final norm, then the head shared with the trunk."""
        return self.head(mtp.final_norm(block_out.to(_device_of(self.head))))


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def run_chain(trunk: Trunk, depths: list[MtpDepth], out: TrunkOutput,
              tokens: torch.Tensor) -> list[torch.Tensor]:
    """Teacher-forced drafts of every depth: list of draft logits [B, L, V], one per depth
    (``chain_hidden`` documents the alignment)."""
    return [trunk.draft_logits(mtp, h)
            for mtp, h in zip(depths, chain_hidden(trunk, depths, out, tokens), strict=True)]


def chain_hidden(trunk: Trunk, depths: list[MtpDepth], out: TrunkOutput,
                 tokens: torch.Tensor) -> list[torch.Tensor]:
    """Teacher-forced block outputs of every depth [B, L, d] (before the depth's final norm and
    the head: ``Trunk.draft_logits`` turns any slice of them into draft logits).

    ``L`` is the length of ``out.hidden``; depth k at position i reads the token
    ``tokens[:, i + k]`` (t_{i+k}). ``tokens`` may be longer than L; where it is too short the
    last positions read a dummy id 0 and must not be scored (attention is causal, so they
    affect nothing before them).
    """
    h = out.hidden
    n = h.shape[1]
    drafts: list[torch.Tensor] = []
    emb_dev = _device_of(trunk.embed)
    for k, mtp in enumerate(depths, start=1):
        shifted = tokens[:, k : k + n]
        if shifted.shape[1] < n:
            fill = torch.zeros(tokens.shape[0], n - shifted.shape[1], dtype=tokens.dtype,
                               device=tokens.device)
            shifted = torch.cat([shifted, fill], dim=1)
        dev = _device_of(mtp)
        emb = trunk.embed(shifted.to(emb_dev)).to(dev)
        kw = {key: _to(v, dev) for key, v in out.layer_kwargs.items()}
        h = mtp(h.to(dev), emb, kw)
        drafts.append(h)
    return drafts


def _to(v: Any, dev: torch.device) -> Any:
    if isinstance(v, torch.Tensor):
        return v.to(dev)
    if isinstance(v, tuple):
        return tuple(_to(x, dev) for x in v)
    return v
