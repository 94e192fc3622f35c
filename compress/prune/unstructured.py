"""Unstructured magnitude (or random) pruning: single weights set to zero, shapes kept.

``UnstructuredConfig.method`` is read from :data:`METHODS`, its registry.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from compress.errors import PruneError
from compress.limits import BOUNDS


@dataclass(frozen=True)
class UnstructuredMethod:
    """One way to choose the weights set to zero: its registry entry."""
    name: str
    description: str
    per_layer: Callable                       # torch.nn.utils.prune function, one layer at a time
    global_method: Optional[type] = None      # a pruning method global_unstructured can rank with;
                                              # None: per layer even with scope "global"


METHODS: dict[str, UnstructuredMethod] = {m.name: m for m in (
    UnstructuredMethod("l1", "the smallest weights (magnitude)", tprune.l1_unstructured, tprune.L1Unstructured),
    UnstructuredMethod("random", "random weights (the control)", tprune.random_unstructured),
)}
SCOPES = ("global", "layer")

@dataclass(frozen=True)
class UnstructuredConfig:
    amount: float = 0.5                 # fraction of weights set to zero (limits: unstructured_amount)
    method: str = "l1"                  # a METHODS name: "l1" (magnitude) or "random"
    scope: str = "global"               # "global": one threshold for all layers; "layer": per layer
    include_classifier: bool = True
    seed: int = 0


@dataclass
class SparsityReport:
    layers: list[tuple[str, int, int]]    # (layer, zero weights, total weights)

    @property
    def global_sparsity(self) -> float:
        zeros = sum(z for _, z, _ in self.layers)
        total = sum(t for _, _, t in self.layers)
        return zeros / total if total else 0.0


def _weight_layers(model: nn.Module, include_classifier: bool) -> list[tuple[str, nn.Module]]:
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not include_classifier:
        last_linear = [n for n, m in layers if isinstance(m, nn.Linear)][-1:]
        layers = [(n, m) for n, m in layers if n not in last_linear]
    return layers


def sparsity(model: nn.Module, include_classifier: bool = True) -> SparsityReport:
    return SparsityReport([(n, int((m.weight == 0).sum()), m.weight.numel())
                           for n, m in _weight_layers(model, include_classifier)])


def validate_unstructured(cfg: UnstructuredConfig) -> None:
    lo, hi, _ = BOUNDS["unstructured_amount"]
    if not lo <= cfg.amount <= hi:
        raise PruneError(f"Unstructured amount {cfg.amount} is out of range: use {lo:g} to {hi:g}.")
    if cfg.method not in METHODS:
        raise PruneError(f"Unknown unstructured method {cfg.method!r}: use "
                         f"{' or '.join(repr(m) for m in METHODS)}.")
    if cfg.scope not in SCOPES:
        raise PruneError(f"Unknown unstructured scope {cfg.scope!r}: use 'global' or 'layer'.")


def prune_unstructured(model: nn.Module, cfg: UnstructuredConfig) -> tuple[nn.Module, SparsityReport]:
    """Zero the smallest (or random) weights of every Conv2d/Linear, made permanent.

    The tensors keep their shapes: dense size and dense latency do not change. Only a
    compressed file (gzip) or a sparse runtime gains from the zeros.
    """
    validate_unstructured(cfg)
    work = copy.deepcopy(model).cpu().eval()
    layers = _weight_layers(work, cfg.include_classifier)
    if not layers:
        raise PruneError("This model has no Conv2d or Linear weights to prune.")
    torch.manual_seed(cfg.seed)
    params = [(m, "weight") for _, m in layers]
    method = METHODS[cfg.method]
    if method.global_method is not None and cfg.scope == "global":
        tprune.global_unstructured(params, pruning_method=method.global_method, amount=cfg.amount)
    else:
        for m, name in params:
            method.per_layer(m, name, amount=cfg.amount)
    for m, name in params:
        tprune.remove(m, name)     # permanent: plain weight tensors with zeros, no masks
    return work, sparsity(work, cfg.include_classifier)
