"""Structured (dependency-aware) channel pruning: the torch-pruning driver.

torch-pruning's dependency graph removes output channels of one conv together with the
matching channels of its BN, of everything joined to it by a residual add, and of the next
layer's input: the model really gets smaller and faster. No per-architecture code: the
graph is traced from the model. Channel scores come from the criterion registry
(:mod:`compress.prune.criteria`); the slider's params/MACs come from channel counts
(:mod:`compress.prune.estimate`); BatchNorm statistics are re-estimated after each step
(:mod:`compress.prune.batchnorm`).

Every function returns a new model; the caller's model is never changed.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Optional

import torch
import torch_pruning as tp
from torch import nn

from compress.errors import PruneError
from compress.measure import count_macs, count_params
from compress.progress import Cancel, Cancelled, OnProgress, emit
from compress.prune import criteria
from compress.prune.batchnorm import reestimate_batchnorm
from compress.prune.estimate import counter_for
from compress.prune.layers import MAX_PRUNING_RATIO, default_protected, output_layers, prunable_layers


@dataclass(frozen=True)
class StructuredConfig:
    ratio: Optional[float] = 0.5                # fraction of channels removed per group (0..0.9);
                                                # None with a macs/params target (it is searched)
    criterion: str = "l1"
    scope: str = "uniform"                      # "uniform": same ratio per layer; "global": ranked across layers
    layer_ratios: tuple[tuple[str, float], ...] = ()   # per-layer overrides (layer name, ratio)
    protected: Optional[tuple[str, ...]] = None         # None: the stem conv and the classifier
    only_layers: tuple[str, ...] = ()                   # single-layer mode: prune just these
    round_to: Optional[int] = None                      # keep channel counts multiples of this
    target: str = "ratio"                               # "ratio", or "macs"/"params": search the ratio
    target_reduction: float = 0.5                       # with target macs/params: fraction to remove
    seed: int = 0
    # BatchNorm re-estimation after every step, on up to this many scoring photos (never
    # evaluation images); 0 = off. See reestimate_batchnorm.
    bn_images: int = 512


@dataclass
class GroupReport:
    """One prunable group: layers whose channels are removed together."""
    root: str                          # the layer whose output channels define the group
    coupled: list[str]                 # every layer touched (BN, residual partners, next convs)
    scores: list[float]                # per-channel importance, normalised to max 1
    removed: list[int]                 # channel indices removed
    channels_before: int
    channels_after: int


@dataclass
class ImportanceReport:
    criterion: str
    groups: list[GroupReport] = field(default_factory=list)
    step: int = 1
    ratio: float = 0.0                 # the channel ratio used (after any target search)
    bn_images: int = 0                 # photos BatchNorm statistics were re-estimated on after this step
    accuracy_as_pruned: Optional[dict] = None   # top-1 before that re-estimation (Accuracy as JSON), if measured
    as_pruned: Optional[nn.Module] = field(default=None, repr=False)   # that model, until it is measured

    def summary(self) -> dict:
        """The figures a log or the CLI's ``steps`` entry needs (no per-channel scores)."""
        return {"step": self.step, "criterion": self.criterion, "ratio": self.ratio, "groups": len(self.groups),
                "bn_images": self.bn_images, "accuracy_as_pruned": self.accuracy_as_pruned,
                "groups_pruned": sum(g.channels_after < g.channels_before for g in self.groups),
                "channels_before": sum(g.channels_before for g in self.groups),
                "channels_after": sum(g.channels_after for g in self.groups),
                "per_group": {g.root: [g.channels_before, g.channels_after] for g in self.groups}}

    @property
    def removed_any(self) -> bool:
        return any(g.removed for g in self.groups)

    def by_root(self) -> dict[str, GroupReport]:
        return {g.root: g for g in self.groups}


def _module_names(model: nn.Module) -> dict[nn.Module, str]:
    return {m: n for n, m in model.named_modules()}


def validate_structured(cfg: StructuredConfig) -> None:
    """Raise PruneError for a config that cannot apply to any model (no model needed: a
    recipe file is checked with this before anything is loaded)."""
    criteria.get(cfg.criterion)                 # PruneError for an unknown name
    if cfg.scope not in ("uniform", "global"):
        raise PruneError(f"Unknown scope {cfg.scope!r}: use 'uniform' or 'global'.")
    if cfg.target not in ("ratio", "macs", "params"):
        raise PruneError(f"Unknown target {cfg.target!r}: use 'ratio', 'macs' or 'params'.")
    if cfg.target == "ratio" and cfg.ratio is None:
        raise PruneError("Give a channel ratio (0 to 0.9), or a MACs/params target to search one.")
    if cfg.target != "ratio" and not 0.0 < cfg.target_reduction < 1.0:
        raise PruneError(f"A {cfg.target} saving of {cfg.target_reduction:g} is out of range: use more "
                         "than 0 and less than 1.")
    if cfg.ratio is not None and not 0.0 <= cfg.ratio <= 0.9:
        raise PruneError(f"Pruning ratio {cfg.ratio} is out of range: use 0 to 0.9 "
                         "(1.0 would remove every channel).")


def validate(model: nn.Module, cfg: StructuredConfig) -> None:
    """Raise PruneError for a config that cannot apply to ``model`` (cheap: no tracing)."""
    validate_structured(cfg)
    names = dict(model.named_modules())
    outputs = output_layers(model)
    for name, r in cfg.layer_ratios:
        if name not in names:
            raise PruneError(f"Layer {name!r} does not exist in this model.")
        if not 0.0 <= r < 1.0:
            raise PruneError(f"Ratio {r} for layer {name} would remove every channel: use 0 to 0.9.")
    for name in tuple(cfg.only_layers) + tuple(cfg.protected or ()) + tuple(n for n, _ in cfg.layer_ratios):
        if name not in names:
            raise PruneError(f"Layer {name!r} does not exist in this model.")
        if not isinstance(names[name], (nn.Conv2d, nn.Linear)):
            raise PruneError(f"Layer {name} is a {type(names[name]).__name__}; only Conv2d and "
                             "Linear layers can be chosen for channel pruning.")
    for name in tuple(cfg.only_layers) + tuple(n for n, _ in cfg.layer_ratios):
        if name in outputs:
            m = names[name]
            n_out = m.out_features if isinstance(m, nn.Linear) else m.out_channels
            raise PruneError(f"{name} is the output layer: its {n_out} channels are the model's {n_out} "
                             "classes, so channel pruning never removes any (its inputs shrink with the "
                             "layer before it). Choose another layer.")
    if not prunable_layers(model):
        raise PruneError("This model has no Conv2d or Linear layer before its output layer: nothing to prune.")
    protected = set(default_protected(model) if cfg.protected is None else cfg.protected)
    if cfg.only_layers and set(cfg.only_layers) <= protected:
        raise PruneError(f"Nothing to prune: {', '.join(cfg.only_layers)} "
                         f"{'is' if len(cfg.only_layers) == 1 else 'are'} protected. Unprotect "
                         f"{'it' if len(cfg.only_layers) == 1 else 'them'} or choose other layers.")
    if cfg.target == "ratio" and not cfg.ratio and not any(r for _, r in cfg.layer_ratios):
        raise PruneError("Nothing to prune: a channel ratio of 0 removes no channel. Choose a ratio above 0.")


def _make_pruner(model: nn.Module, cfg: StructuredConfig, example: torch.Tensor, steps: int = 1):
    names = dict(model.named_modules())
    protected = default_protected(model) if cfg.protected is None else cfg.protected
    ignored = [names[n] for n in dict.fromkeys(tuple(protected) + output_layers(model))]
    ratio, scope = cfg.ratio, cfg.scope
    ratio_dict = {names[name]: r for name, r in cfg.layer_ratios}
    if cfg.only_layers:
        # single-layer mode: the named layers' groups at cfg.ratio, every other group at 0.
        # (Ignoring the other layers instead would also freeze residual partners, so a
        # residual group could never be pruned.)
        ratio_dict = {names[n]: cfg.ratio for n in cfg.only_layers}
        ratio, scope = 0.0, "uniform"
    try:
        return tp.pruner.MetaPruner(
            model, example, importance=criteria.get(cfg.criterion).make(),
            global_pruning=(scope == "global"), pruning_ratio=ratio,
            pruning_ratio_dict=ratio_dict or None, ignored_layers=ignored,
            round_to=cfg.round_to, max_pruning_ratio=MAX_PRUNING_RATIO, iterative_steps=steps)
    except Exception as e:  # tracing failures name the op torch-pruning could not follow
        raise PruneError(f"torch-pruning could not trace this model's dependencies: "
                         f"{type(e).__name__}: {e}") from None


def _clean(model: nn.Module, ctx) -> None:
    if ctx is not None:
        ctx.__exit__(None, None, None)
    model.zero_grad(set_to_none=True)
    for m in model.modules():
        if hasattr(m, "_importance"):
            del m._importance


def _one_step(work: nn.Module, pruner, cfg: StructuredConfig, batches, apply: bool,
              step: int) -> ImportanceReport:
    """Score every group, record the report, and (with ``apply``) remove the channels."""
    ctx = criteria.get(cfg.criterion).prepare(work, pruner.importance, batches)
    names = _module_names(work)
    report = ImportanceReport(cfg.criterion, step=step, ratio=cfg.ratio)
    try:
        for group in pruner.step(interactive=True):
            dep0, idxs = group[0]
            root = dep0.target.module
            before = pruner.DG.get_out_channels(root)
            # the yielded group holds only the channels to remove; score every channel
            full = pruner.DG.get_pruning_group(root, dep0.handler, idxs=list(range(before)))
            imp = pruner.estimate_importance(full)
            coupled = []
            for dep, _ in full:
                n = names.get(dep.target.module)
                if n is not None and n not in coupled:
                    coupled.append(n)
            scores = imp.detach().float() if imp is not None else torch.zeros(before)
            if scores.numel() and float(scores.max()) > 0:
                scores = scores / scores.max()
            report.groups.append(GroupReport(
                root=names.get(root, str(root)), coupled=coupled, scores=scores.tolist(),
                removed=sorted(int(i) for i in idxs), channels_before=int(before),
                channels_after=int(before) - len(idxs)))
            if apply:
                group.prune()
    finally:
        _clean(work, ctx)
    order = {n: i for i, n in enumerate(names.values())}
    report.groups.sort(key=lambda g: order.get(g.root, len(order)))     # network order
    return report


Recover = Callable[[nn.Module, int], None]


def _nothing_removed(cfg: StructuredConfig) -> str:
    where = f"in {', '.join(cfg.only_layers)}" if cfg.only_layers else "in any layer"
    return (f"Nothing to prune: at channel ratio {cfg.ratio:g} no channel {where} would be removed "
            "(groups are small, protected, or rounded back up). Raise the ratio, unprotect layers or "
            "choose others.")


def check_removes_something(model: nn.Module, cfg: StructuredConfig, input_size) -> None:
    """Raise PruneError before any slow work when ``cfg`` would remove no channel. Counts come
    from a dry run with the data-free L1 score (how many channels go does not depend on the
    criterion in uniform scope, and hardly in global). MACs/params targets are searched and
    checked there instead."""
    validate(model, cfg)
    if cfg.target != "ratio":
        return
    cfg = replace(cfg, criterion=criteria.dry_run_criterion(cfg.criterion))
    if not importance_report(model, cfg, input_size).removed_any:
        raise PruneError(_nothing_removed(cfg))


def run_steps(model: nn.Module, cfg: StructuredConfig, input_size, batches, apply: bool,
              steps: int = 1, recover: Optional[Recover] = None,
              on_progress: Optional[OnProgress] = None, cancel: Optional[Cancel] = None,
              require_removal: bool = False, bn_batches: Optional[Iterable] = None,
              keep_as_pruned: bool = False) -> tuple[nn.Module, list[ImportanceReport]]:
    """The loop behind every entry point: ``cfg`` (a channel ratio, no target) in ``steps``
    steps on a copy of ``model``; with ``apply`` False, one scoring step that removes
    nothing. Returns the copy and one report per step."""
    validate(model, cfg)
    if steps < 1:
        raise PruneError(f"Iterative pruning needs at least 1 step, not {steps}.")
    torch.manual_seed(cfg.seed)
    work = copy.deepcopy(model).cpu().eval()
    example = torch.zeros(1, *input_size)
    pruner = _make_pruner(work, cfg, example, steps)
    reports = []
    for k in range(1, steps + 1):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"pruning cancelled before step {k}")
        emit(on_progress, "prune", (k - 1) / steps, f"step {k}/{steps}: scoring and removing channels")
        reports.append(_one_step(work, pruner, cfg, batches, apply, k))
        if not apply:
            break
        for g in reports[-1].groups:
            if g.channels_after <= 0:
                raise PruneError(f"Pruning would remove every channel of {g.root}: lower the ratio.")
        if require_removal and k == steps and not any(r.removed_any for r in reports):
            raise PruneError(_nothing_removed(cfg))
        if bn_batches is not None and cfg.bn_images > 0:
            if keep_as_pruned and k == steps:
                reports[-1].as_pruned = copy.deepcopy(work)
            emit(on_progress, "prune", k / steps, f"step {k}/{steps}: re-estimating BatchNorm statistics")
            reports[-1].bn_images = reestimate_batchnorm(work, bn_batches, cfg.bn_images, reference=model)
            if not reports[-1].bn_images:
                reports[-1].as_pruned = None
        if recover is not None:
            emit(on_progress, "recover", k / steps, f"step {k}/{steps}: recovering accuracy")
            recover(work, k)
            work.eval()
    emit(on_progress, "prune", 1.0, "done")
    return work, reports


def importance_report(model: nn.Module, cfg: StructuredConfig, input_size,
                      batches: Optional[Iterable] = None) -> ImportanceReport:
    """Per-group coupled layers, normalised channel scores and the channels ``cfg`` would
    remove, without pruning (the model and its copy keep all channels)."""
    _, reports = run_steps(model, cfg, input_size, batches, apply=False)
    return reports[0]


def _resolve_target(model, cfg, input_size, batches) -> StructuredConfig:
    if cfg.target in ("macs", "params"):
        return search_ratio(model, cfg, input_size, batches)
    if cfg.target != "ratio":
        raise PruneError(f"Unknown target {cfg.target!r}: use 'ratio', 'macs' or 'params'.")
    return cfg


def prune_structured(model: nn.Module, cfg: StructuredConfig, input_size,
                     batches: Optional[Iterable] = None,
                     bn_batches: Optional[Iterable] = None) -> tuple[nn.Module, ImportanceReport]:
    """A physically smaller copy of ``model`` and the report of what was removed.

    With ``cfg.target`` "macs" or "params", the channel ratio is searched (bisection) until
    the reduction is within 2 percentage points of ``cfg.target_reduction``. With
    ``bn_batches`` (scoring photos), BatchNorm statistics are re-estimated afterwards on up
    to ``cfg.bn_images`` of them.
    """
    pruned, reports = prune_iterative(model, cfg, input_size, steps=1, batches=batches, bn_batches=bn_batches)
    return pruned, reports[0]


def prune_iterative(model: nn.Module, cfg: StructuredConfig, input_size, steps: int,
                    recover: Optional[Recover] = None, batches: Optional[Iterable] = None,
                    on_progress: Optional[OnProgress] = None,
                    cancel: Optional[Cancel] = None, bn_batches: Optional[Iterable] = None,
                    keep_as_pruned: bool = False) -> tuple[nn.Module, list[ImportanceReport]]:
    """Reach ``cfg``'s ratio in ``steps`` equal steps (torch-pruning's linear schedule:
    after step k, k/steps of the final ratio of each group's original channels is gone).

    After every step, with ``bn_batches``, BatchNorm statistics are re-estimated on up to
    ``cfg.bn_images`` of those photos (``keep_as_pruned``: the last step's model before that
    is kept in its report, to measure what re-estimation gave). Then ``recover(model,
    step)`` is called with the pruned model, to train back accuracy in place (any callable:
    a fine-tune or distillation loop). Channel scores are recomputed on the recovered
    weights at the next step. Returns the final model and one report per step.
    """
    cfg = _resolve_target(model, cfg, input_size, batches)
    return run_steps(model, cfg, input_size, batches, apply=True, steps=steps, recover=recover,
                on_progress=on_progress, cancel=cancel, require_removal=True, bn_batches=bn_batches,
                keep_as_pruned=keep_as_pruned)


def estimate(model: nn.Module, cfg: StructuredConfig, input_size) -> dict:
    """Params/MACs after pruning, for a slider: computed from channel counts by
    :mod:`compress.prune.estimate` (exact, well under a millisecond once the model's groups are
    cached), or, for a model with a layer type that arithmetic does not know, by pruning a
    copy with the data-free L1 score. ``exact`` is False where the channels chosen may
    differ from a real run (global scope with a data or random criterion is ranked by L1).
    No latency, no accuracy: the caller must label this as an estimate."""
    validate(model, cfg)
    counter = counter_for(model, input_size)
    if counter.supported:
        cfg = _resolve_target(model, cfg, input_size, None)
        protected = default_protected(model) if cfg.protected is None else cfg.protected
        est = counter.estimate(cfg, tuple(protected), output_layers(model))
        if not est["removed_any"]:
            raise PruneError(_nothing_removed(cfg))
        return est
    exact = cfg.scope == "uniform" or criteria.get(cfg.criterion).exact_global
    cfg = replace(cfg, criterion=criteria.dry_run_criterion(cfg.criterion))
    cfg = _resolve_target(model, cfg, input_size, None)
    pruned, _ = run_steps(model, cfg, input_size, None, apply=True, require_removal=True)
    return {"ratio": cfg.ratio, "params": count_params(pruned)[0],
            "macs": count_macs(pruned, input_size), "exact": exact}


def _cost(model: nn.Module, what: str, input_size) -> float:
    return float(count_macs(model, input_size) if what == "macs" else count_params(model)[0])


def search_ratio(model: nn.Module, cfg: StructuredConfig, input_size,
                 batches: Optional[Iterable] = None, tolerance: float = 0.02,
                 max_steps: int = 12) -> StructuredConfig:
    """The config with the channel ratio whose MACs/params reduction is closest to the
    target (within ``tolerance``); a PruneError says so when the target is out of reach."""
    if not 0.0 < cfg.target_reduction < 1.0:
        raise PruneError(f"Target reduction {cfg.target_reduction} is out of range: use a fraction "
                         "between 0 and 1 (0.5 = remove half).")
    counter = counter_for(model, input_size)
    if counter.supported and (cfg.scope == "uniform" or criteria.get(cfg.criterion).exact_global):
        # channel counts decide the cost: computed, not pruned (compress.prune.estimate)
        protected = tuple(default_protected(model) if cfg.protected is None else cfg.protected)
        outputs = output_layers(model)
        base = float(counter.base_macs if cfg.target == "macs" else counter.base_params)

        def reduction(ratio: float) -> float:
            e = counter.estimate(replace(cfg, ratio=ratio, target="ratio"), protected, outputs)
            return 1.0 - e[cfg.target] / base
    else:
        base = _cost(model, cfg.target, input_size)

        def reduction(ratio: float) -> float:
            pruned, _ = run_steps(model, replace(cfg, ratio=ratio, target="ratio"), input_size, batches, apply=True)
            return 1.0 - _cost(pruned, cfg.target, input_size) / base
    lo, hi = 0.0, 0.9
    best = (float("inf"), 0.0, 0.0)
    high_red = reduction(hi)
    if high_red < cfg.target_reduction - tolerance:
        raise PruneError(f"Even the largest channel ratio (0.9) removes only {100 * high_red:.0f}% of the "
                         f"{cfg.target}; {100 * cfg.target_reduction:.0f}% is out of reach with these "
                         "protected layers.")
    for _ in range(max_steps):
        mid = (lo + hi) / 2
        red = reduction(mid)
        if abs(red - cfg.target_reduction) < best[0]:
            best = (abs(red - cfg.target_reduction), mid, red)
        if best[0] <= tolerance:
            break
        lo, hi = (mid, hi) if red < cfg.target_reduction else (lo, mid)
    return replace(cfg, ratio=round(best[1], 4), target="ratio")
