"""Channel-importance criteria: the one registry of ``StructuredConfig.criterion``.

As in Torch-Pruning's ``tp.importance`` classes, a criterion is a small object that knows
everything about its score: its name and description, whether it needs real images,
whether its global ranking is exact (computed from the weights alone, once, so an estimate
ranking channels across layers with it picks the channels a real prune picks), the
torch-pruning importance it builds, and the data gathering that importance needs before
torch-pruning asks it for scores (:meth:`Criterion.gather`). Nothing outside this module
branches on a criterion's name: callers read these fields.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
import torch_pruning as tp
from torch import nn

from compress.errors import PruneError

DATA_BATCHES = 4        # batches a data criterion runs before scoring


@dataclass(frozen=True)
class Criterion:
    """One way to score a channel's importance: its registry entry. The base class needs
    no data (the weight scores and the random control)."""
    name: str
    description: str
    make: Callable[[], Any]            # a torch-pruning importance object
    exact_global: bool = False         # deterministic weight scores: a global ranking is computed exactly
    needs_data: bool = False           # looks at real images (activations, gradients)

    def prepare(self, model: nn.Module, importance, batches: Optional[Iterable],
                n_batches: int = DATA_BATCHES):
        """Everything ``importance`` needs before it scores ``model``'s channels; returns a
        context to exit once scoring is done, or None. A data criterion without
        ``batches`` raises PruneError."""
        if not self.needs_data:
            return None
        if batches is None:
            raise PruneError(f"The {self.name!r} criterion measures the model on real images: "
                             "choose a labelled dataset first.")
        model.eval()
        return self.gather(model, importance, iter(batches), n_batches)

    def gather(self, model: nn.Module, importance, batches: Iterator, n_batches: int):
        """Run up to ``n_batches`` labelled batches as this score needs (a data criterion
        overrides it)."""
        return None


def _take(batches: Iterator, n: int):
    """Up to ``n`` (x, y) batches from ``batches``."""
    for _ in range(n):
        try:
            yield next(batches)
        except StopIteration:
            return


@dataclass(frozen=True)
class ActivationCriterion(Criterion):
    """Mean absolute activation: the importance records activations while batches run."""
    needs_data: bool = True

    def gather(self, model: nn.Module, importance, batches: Iterator, n_batches: int):
        ctx = importance.compute_importance(model)
        ctx.__enter__()
        with torch.no_grad():
            for x, _y in _take(batches, n_batches):
                model(x)
        return ctx


@dataclass(frozen=True)
class TaylorCriterion(Criterion):
    """Weight × gradient: the gradients of the cross-entropy loss on a few batches."""
    needs_data: bool = True

    def gather(self, model: nn.Module, importance, batches: Iterator, n_batches: int):
        model.zero_grad()
        loss_fn = nn.CrossEntropyLoss()
        for x, y in _take(batches, n_batches):
            loss_fn(model(x), y).backward()
        return None


CRITERIA: dict[str, Criterion] = {c.name: c for c in (
    Criterion("l1", "L1 norm of each channel's weights (small weights matter less)",
              lambda: tp.importance.GroupMagnitudeImportance(p=1), exact_global=True),
    Criterion("l2", "L2 norm of each channel's weights",
              lambda: tp.importance.GroupMagnitudeImportance(p=2), exact_global=True),
    Criterion("bn_scale", "Size of the BatchNorm scale (gamma) of each channel",
              lambda: tp.importance.BNScaleImportance(), exact_global=True),
    ActivationCriterion("activation", "Mean absolute activation of each channel on real images",
                        lambda: tp.importance.ActivationImportance()),
    TaylorCriterion("taylor", "Weight x gradient on a few real batches: estimated loss change if removed",
                    lambda: tp.importance.GroupTaylorImportance()),
    Criterion("fpgm", "Geometric median: channels most like the others are redundant",
              lambda: tp.importance.FPGMImportance(), exact_global=True),
    Criterion("random", "Random choice: the control that every criterion should beat",
              lambda: tp.importance.RandomImportance()),
)}
NEEDS_DATA = {n for n, c in CRITERIA.items() if c.needs_data}

# The data-free weight score that fast counts (dry runs, the slider's estimate) rank with
# in place of a criterion they cannot compute there (a data criterion, or random scores).
STAND_IN = "l1"


def get(name: str) -> Criterion:
    """The registry entry of ``name``; PruneError naming the choices for an unknown one."""
    if name not in CRITERIA:
        raise PruneError(f"Unknown criterion {name!r}. Choose one of: {', '.join(CRITERIA)}.")
    return CRITERIA[name]


def dry_run_criterion(name: str) -> str:
    """``name``, or the stand-in when it needs images (a dry run has none)."""
    return STAND_IN if get(name).needs_data else name


def global_ranking_criterion(name: str) -> str:
    """``name``, or the stand-in when its global ranking cannot be computed once from the
    weights (data and random scores)."""
    return name if get(name).exact_global else STAND_IN
