"""Structured (dependency-aware) channel pruning and unstructured magnitude pruning.

Structured pruning uses torch-pruning's dependency graph, so removing output channels of
one conv also removes the matching channels of its BN, of everything joined to it by a
residual add, and of the next layer's input: the model really gets smaller and faster.
No per-architecture code: the graph is traced from the model.

Every function returns a new model; the caller's model is never changed.
"""
from __future__ import annotations

import copy
import weakref
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import torch
import torch_pruning as tp
from torch import nn

from compress.errors import CompressError
from compress.progress import Cancel, Cancelled, OnProgress, emit

@dataclass(frozen=True)
class Criterion:
    """One way to score a channel's importance: its registry entry."""
    name: str
    description: str
    needs_data: bool                   # looks at real images (activation, gradients)
    make: Callable[[], Any]            # a torch-pruning importance object


CRITERIA: dict[str, Criterion] = {c.name: c for c in (
    Criterion("l1", "L1 norm of each channel's weights (small weights matter less)", False,
              lambda: tp.importance.GroupMagnitudeImportance(p=1)),
    Criterion("l2", "L2 norm of each channel's weights", False,
              lambda: tp.importance.GroupMagnitudeImportance(p=2)),
    Criterion("bn_scale", "Size of the BatchNorm scale (gamma) of each channel", False,
              lambda: tp.importance.BNScaleImportance()),
    Criterion("activation", "Mean absolute activation of each channel on real images", True,
              lambda: tp.importance.ActivationImportance()),
    Criterion("taylor", "Weight x gradient on a few real batches: estimated loss change if removed", True,
              lambda: tp.importance.GroupTaylorImportance()),
    Criterion("fpgm", "Geometric median: channels most like the others are redundant", False,
              lambda: tp.importance.FPGMImportance()),
    Criterion("random", "Random choice: the control that every criterion should beat", False,
              lambda: tp.importance.RandomImportance()),
)}
NEEDS_DATA = {n for n, c in CRITERIA.items() if c.needs_data}


class PruneError(CompressError):
    """A pruning request that cannot be carried out (bad ratio, layer name, model)."""


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


def output_layers(model: nn.Module) -> tuple[str, ...]:
    """The layer whose output channels are the model's outputs (the class scores): the last
    Linear, or the last Conv2d in a model without one. Channel pruning never shrinks it
    (its inputs still shrink with the layer before it)."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        return (linears[-1],)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return tuple(convs[-1:])


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


_PROJECTIONS: "weakref.WeakKeyDictionary[nn.Module, tuple[str, ...]]" = weakref.WeakKeyDictionary()


def projection_layers(model: nn.Module) -> tuple[str, ...]:
    """In an inverted-residual network (MobileNetV2/V3, EfficientNet), the 1×1 conv that
    follows each depthwise conv and projects back to the block's output: its channels are
    the residual stream every later block of the stage adds to. Found by structure, not by
    name: the first 1×1, ungrouped conv after a depthwise conv that reads all of its
    channels and keeps a spatial map (a squeeze-excitation conv between them works on a
    pooled 1×1 map and is skipped). Empty for networks without depthwise convs."""
    if model in _PROJECTIONS:              # one forward pass per model object (pages ask on every rerun)
        return _PROJECTIONS[model]
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not any(_is_depthwise(m) for _, m in convs):
        return ()
    _PROJECTIONS[model] = found = _find_projections(model, convs)
    return found


def _find_projections(model: nn.Module, convs: list) -> tuple[str, ...]:
    spatial: dict[str, int] = {}

    def record(name: str):
        def hook(mod, inputs, output) -> None:          # returns None: the output is left alone
            spatial.setdefault(name, output.shape[-1] * output.shape[-2])
        return hook
    hooks = [m.register_forward_hook(record(n)) for n, m in convs]
    first = convs[0][1]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, first.in_channels, 64, 64, device=first.weight.device))
    except Exception:  # noqa: BLE001 - a model that cannot run at 64×64: no projections found, nothing protected
        return ()
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    out, waiting = [], None
    for n, m in convs:
        if _is_depthwise(m):
            waiting = m
        elif waiting is not None and m.groups == 1 and m.kernel_size == (1, 1) \
                and m.in_channels == waiting.out_channels and spatial.get(n, 0) > 1:
            out.append(n)
            waiting = None
    return tuple(out)


def default_protected(model: nn.Module) -> tuple[str, ...]:
    """The stem (first conv), found by order, not by name; in an inverted-residual network
    also its projection convs (:func:`projection_layers`): measured on efficientnet_lite0
    at ratio 0.1 with BatchNorm re-estimation, pruning the residual stream took top-1 from
    85% to 50% (L1), protecting it kept 75% (docs/pruning.md). (The output layer is never
    pruned whatever is protected: see :func:`output_layers`.)"""
    out = set(output_layers(model))
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in out]
    return tuple(convs[:1]) + tuple(n for n in projection_layers(model) if n not in out)


def prunable_layers(model: nn.Module) -> list[str]:
    """Conv2d and Linear layers whose output channels may be removed (not the output layer)."""
    out = set(output_layers(model))
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in out]


def _importance(criterion: str):
    if criterion not in CRITERIA:
        raise PruneError(f"Unknown criterion {criterion!r}. Choose one of: {', '.join(CRITERIA)}.")
    return CRITERIA[criterion].make()


def validate(model: nn.Module, cfg: StructuredConfig) -> None:
    """Raise PruneError for a config that cannot apply to ``model`` (cheap: no tracing)."""
    if cfg.criterion not in CRITERIA:
        raise PruneError(f"Unknown criterion {cfg.criterion!r}. Choose one of: {', '.join(CRITERIA)}.")
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
            model, example, importance=_importance(cfg.criterion),
            global_pruning=(scope == "global"), pruning_ratio=ratio,
            pruning_ratio_dict=ratio_dict or None, ignored_layers=ignored,
            round_to=cfg.round_to, max_pruning_ratio=0.95, iterative_steps=steps)
    except Exception as e:  # tracing failures name the op torch-pruning could not follow
        raise PruneError(f"torch-pruning could not trace this model's dependencies: "
                         f"{type(e).__name__}: {e}") from None


def _prepare_data_criteria(model: nn.Module, pruner, criterion: str,
                           batches: Optional[Iterable], n_batches: int = 4):
    """Activation and Taylor scores need real images: run a few batches first."""
    if criterion not in NEEDS_DATA:
        return None
    if batches is None:
        raise PruneError(f"The {criterion!r} criterion measures the model on real images: "
                         "choose a labelled dataset first.")
    it = iter(batches)
    model.eval()
    if criterion == "activation":
        ctx = pruner.importance.compute_importance(model)
        ctx.__enter__()
        with torch.no_grad():
            for _ in range(n_batches):
                try:
                    x, _y = next(it)
                except StopIteration:
                    break
                model(x)
        return ctx
    model.zero_grad()
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(n_batches):
        try:
            x, y = next(it)
        except StopIteration:
            break
        loss_fn(model(x), y).backward()
    return None


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
    ctx = _prepare_data_criteria(work, pruner, cfg.criterion, batches)
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
    from dataclasses import replace
    validate(model, cfg)
    if cfg.target != "ratio":
        return
    if cfg.criterion in NEEDS_DATA:
        cfg = replace(cfg, criterion="l1")
    if not importance_report(model, cfg, input_size).removed_any:
        raise PruneError(_nothing_removed(cfg))


def _batches_of(batches: Iterable, size: int, max_images: Optional[int]) -> list[torch.Tensor]:
    """The images of labelled or unlabelled ``batches`` regrouped into tensors of ``size``
    (at most ``max_images`` in all; a last batch of one image is dropped)."""
    xs, n = [], 0
    for b in batches:
        x = b[0] if isinstance(b, (tuple, list)) else b
        if max_images is not None:
            x = x[:max(max_images - n, 0)]
        if len(x):
            xs.append(x)
            n += len(x)
        if max_images is not None and n >= max_images:
            break
    if not xs:
        return []
    out = list(torch.cat(xs).split(size))
    return out if len(out[-1]) > 1 else out[:-1]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable, max_images: Optional[int] = None,
                         reference: Optional[nn.Module] = None) -> int:
    """Re-estimate every BatchNorm's running mean and variance on ``batches``, in place;
    returns how many images were used (0: no BatchNorm, or fewer than 2 images, and then
    nothing is changed).

    After channels are removed, each layer's inputs are distributed differently, but its
    BatchNorm still normalises with the unpruned network's statistics, so a pruned model
    can look destroyed when it is only miscalibrated. Photos run through the model with
    every BatchNorm normalising by its batch (as in training; dropout and drop-connect
    stay off), with no gradient step, and the statistics are set from what each BatchNorm
    saw (EagleEye's adaptive BN, ECCV 2020; NNCF's ``batch_norm_adaptation``). Use
    scoring/calibration photos, never evaluation images.

    With ``reference`` (the unpruned model the pruned one came from), the same photos also
    run through it, and each BatchNorm whose channels can be matched to the reference's
    (same name, the kept channels' γ and β unchanged) gets the *change* the photos show:
    mean = reference mean + (pruned − reference photo mean), variance = reference variance ×
    pruned / reference photo variance. The reference's statistics came from its whole
    training set; a few hundred photos estimate a difference far better than the values
    themselves. Measured: re-estimating efficientnet_lite0's statistics from scratch on 162
    photos cost the *unpruned* model 6.2 points (85.2% → 79.1%); the difference form leaves
    it unchanged (docs/pruning.md). BatchNorms that cannot be matched (trained since, or
    not in the reference) are re-estimated from scratch.
    """
    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    xs = _batches_of(batches, 64, max_images)
    if not bns or not xs:
        return 0
    seen = _batchnorm_input_stats(model, xs)
    matched: dict[str, torch.Tensor] = {}
    if reference is not None:
        ref_bns = {n: m for n, m in reference.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        for n, m in bns.items():
            idx = _kept_channels(m, ref_bns.get(n))
            if idx is not None:
                matched[n] = idx
        if matched:
            ref = copy.deepcopy(reference).cpu()
            ref_seen = _batchnorm_input_stats(ref, [x.cpu() for x in xs], only=set(matched))
    for n, m in bns.items():
        if n not in seen or m.running_mean is None:      # never called in the forward, or no statistics
            continue
        mean, var = seen[n]
        if n in matched:
            r, idx = ref_bns[n], matched[n]
            r_mean, r_var = (t.to(mean.device) for t in ref_seen[n])
            mean = r.running_mean[idx].to(mean.device) + (mean - r_mean[idx])
            var = r.running_var[idx].to(var.device) * (var + m.eps) / (r_var[idx] + m.eps)
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        if m.num_batches_tracked is not None:
            m.num_batches_tracked.add_(len(xs))
    return sum(len(x) for x in xs)


@torch.no_grad()
def _batchnorm_input_stats(model: nn.Module, xs: list, only: Optional[set] = None) -> dict:
    """Per-channel mean and (unbiased) variance of each BatchNorm's input over ``xs``, with
    every BatchNorm normalising by its batch and the running statistics left as they are."""
    sums: dict[str, list] = {}

    def hook(name):
        def f(_m, inputs):
            x = inputs[0].detach().float().transpose(0, 1).reshape(inputs[0].shape[1], -1)
            acc = sums.setdefault(name, [0.0, 0.0, 0])
            acc[0] = acc[0] + x.sum(1)
            acc[1] = acc[1] + (x * x).sum(1)
            acc[2] += x.shape[1]
        return f
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and (only is None or n in only)]
    device = next(model.parameters()).device
    was_training = model.training
    momenta = [m.momentum for _, m in bns]
    tracked = [None if m.num_batches_tracked is None else m.num_batches_tracked.clone() for _, m in bns]
    hooks = [m.register_forward_pre_hook(hook(n)) for n, m in bns]
    model.eval()
    try:
        for _, m in bns:
            m.momentum = 0.0            # running = (1 − 0)·running: batch statistics, nothing stored
            m.train()
        for x in xs:
            model(x.to(device))
    finally:
        for h in hooks:
            h.remove()
        for (_, m), mom, t in zip(bns, momenta, tracked):
            m.momentum = mom
            if t is not None:
                m.num_batches_tracked.copy_(t)
            m.eval()
        model.train(was_training)
    out = {}
    for n, (s1, s2, count) in sums.items():
        mean = s1 / count
        out[n] = (mean, ((s2 - count * mean * mean) / max(count - 1, 1)).clamp_min(0.0))
    return out


def _kept_channels(bn: nn.Module, ref: Optional[nn.Module]) -> Optional[torch.Tensor]:
    """Indices of ``ref``'s channels that ``bn`` kept, in order, found by their unchanged
    affine parameters (pruning copies γ and β of the kept channels); None when they do not
    match (another model, or trained since)."""
    if ref is None or ref.running_mean is None or not (bn.affine and ref.affine):
        return None
    g, b = bn.weight.detach().cpu(), bn.bias.detach().cpu()
    rg, rb = ref.weight.detach().cpu(), ref.bias.detach().cpu()
    if len(g) > len(rg):
        return None
    idx, j = [], 0
    for k in range(len(g)):                       # torch-pruning keeps the channels' order
        while j < len(rg) and not (rg[j] == g[k] and rb[j] == b[k]):
            j += 1
        if j == len(rg):
            return None
        idx.append(j)
        j += 1
    return torch.tensor(idx, dtype=torch.long)


def with_reestimated_batchnorm(model: nn.Module, batches: Iterable,
                               max_images: Optional[int] = None,
                               reference: Optional[nn.Module] = None) -> tuple[nn.Module, int]:
    """A copy of ``model`` with BatchNorm statistics re-estimated (see
    :func:`reestimate_batchnorm`), and the number of images used."""
    work = copy.deepcopy(model)
    return work, reestimate_batchnorm(work, batches, max_images, reference=reference)


def _run(model: nn.Module, cfg: StructuredConfig, input_size, batches, apply: bool,
         steps: int = 1, recover: Optional[Recover] = None,
         on_progress: Optional[OnProgress] = None, cancel: Optional[Cancel] = None,
         require_removal: bool = False, bn_batches: Optional[Iterable] = None, keep_as_pruned: bool = False):
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
    _, reports = _run(model, cfg, input_size, batches, apply=False)
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
    return _run(model, cfg, input_size, batches, apply=True, steps=steps, recover=recover,
                on_progress=on_progress, cancel=cancel, require_removal=True, bn_batches=bn_batches,
                keep_as_pruned=keep_as_pruned)


def estimate(model: nn.Module, cfg: StructuredConfig, input_size) -> dict:
    """Params/MACs after pruning, for a slider: computed from channel counts by
    :mod:`compress.estimate` (exact, well under a millisecond once the model's groups are
    cached), or, for a model with a layer type that arithmetic does not know, by pruning a
    copy with the data-free L1 score. ``exact`` is False where the channels chosen may
    differ from a real run (global scope with a data or random criterion is ranked by L1).
    No latency, no accuracy: the caller must label this as an estimate."""
    from dataclasses import replace
    from compress.estimate import EXACT_GLOBAL, counter_for
    from compress.measure import count_macs, count_params
    validate(model, cfg)
    counter = counter_for(model, input_size)
    if counter.supported:
        cfg = _resolve_target(model, cfg, input_size, None)
        protected = default_protected(model) if cfg.protected is None else cfg.protected
        est = counter.estimate(cfg, tuple(protected), output_layers(model))
        if not est["removed_any"]:
            raise PruneError(_nothing_removed(cfg))
        return est
    exact = cfg.scope == "uniform" or cfg.criterion in EXACT_GLOBAL
    if cfg.criterion in NEEDS_DATA:
        cfg = replace(cfg, criterion="l1")
    cfg = _resolve_target(model, cfg, input_size, None)
    pruned, _ = _run(model, cfg, input_size, None, apply=True, require_removal=True)
    return {"ratio": cfg.ratio, "params": count_params(pruned)[0],
            "macs": count_macs(pruned, input_size), "exact": exact}


def _cost(model: nn.Module, what: str, input_size) -> float:
    from compress.measure import count_macs, count_params
    return float(count_macs(model, input_size) if what == "macs" else count_params(model)[0])


def search_ratio(model: nn.Module, cfg: StructuredConfig, input_size,
                 batches: Optional[Iterable] = None, tolerance: float = 0.02,
                 max_steps: int = 12) -> StructuredConfig:
    """The config with the channel ratio whose MACs/params reduction is closest to the
    target (within ``tolerance``); a PruneError says so when the target is out of reach."""
    from dataclasses import replace
    if not 0.0 < cfg.target_reduction < 1.0:
        raise PruneError(f"Target reduction {cfg.target_reduction} is out of range: use a fraction "
                         "between 0 and 1 (0.5 = remove half).")
    from compress.estimate import EXACT_GLOBAL, counter_for
    counter = counter_for(model, input_size)
    if counter.supported and (cfg.scope == "uniform" or cfg.criterion in EXACT_GLOBAL):
        # channel counts decide the cost: computed, not pruned (compress.estimate)
        protected = tuple(default_protected(model) if cfg.protected is None else cfg.protected)
        outputs = output_layers(model)
        base = float(counter.base_macs if cfg.target == "macs" else counter.base_params)

        def reduction(ratio: float) -> float:
            e = counter.estimate(replace(cfg, ratio=ratio, target="ratio"), protected, outputs)
            return 1.0 - e[cfg.target] / base
    else:
        base = _cost(model, cfg.target, input_size)

        def reduction(ratio: float) -> float:
            pruned, _ = _run(model, replace(cfg, ratio=ratio, target="ratio"), input_size, batches, apply=True)
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


# ---------------------------------------------------------------- sensitivity

SENSITIVITY_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class SensitivityRow:
    unit: str                      # a group's root layer, or a stage
    ratio: float
    top1: float                    # percent, on the images given
    n: int
    ci95: tuple[float, float]
    macs_fraction: float           # MACs after / MACs before


@dataclass
class SensitivityTable:
    criterion: str
    unit: str                                  # "group" or "stage"
    baseline_top1: float
    baseline_ci95: tuple[float, float]
    n: int
    rows: list[SensitivityRow]
    cached: bool = False
    reestimate_bn: bool = False                # each pruned model's BatchNorm statistics were re-estimated

    def to_json(self) -> dict:
        from dataclasses import asdict
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "SensitivityTable":
        rows = [SensitivityRow(**{**r, "ci95": tuple(r["ci95"])}) for r in d["rows"]]
        return cls(**{**d, "rows": rows, "baseline_ci95": tuple(d["baseline_ci95"])})


def _stages(roots: list[str]) -> dict[str, str]:
    """A network's stages: its top-level children (ResNet: layer1..layer4); a container
    holding more than half of the groups is split one level down (MobileNet's features.N,
    EfficientNet's _blocks.N)."""
    tops = [r.split(".")[0] for r in roots]
    out = {}
    for r, t in zip(roots, tops):
        big = tops.count(t) > len(roots) / 2 and r.count(".") >= 1
        out[r] = ".".join(r.split(".")[:2]) if big else t
    return out


def sensitivity_units(model: nn.Module, input_size, unit: str = "group",
                      protected: Optional[tuple[str, ...]] = None) -> dict[str, tuple[str, ...]]:
    """The units a sensitivity scan prunes one at a time, in network order:
    ``{unit name: root layers}``."""
    rep = importance_report(model, StructuredConfig(ratio=0.5, protected=protected), input_size)
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    roots = sorted((g.root for g in rep.groups), key=lambda r: order.get(r, 0))
    if unit == "group":
        return {r: (r,) for r in roots}
    if unit != "stage":
        raise PruneError(f"Unknown sensitivity unit {unit!r}: use 'group' or 'stage'.")
    stages: dict[str, list[str]] = {}
    for r, st in _stages(roots).items():
        stages.setdefault(st, []).append(r)
    return {k: tuple(v) for k, v in stages.items()}


def _fingerprint(model: nn.Module, batches: list, extra: str) -> str:
    import hashlib
    h = hashlib.sha1(extra.encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    for x, y in batches:
        h.update(x.contiguous().numpy().tobytes())
        h.update(y.contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def sensitivity(model: nn.Module, input_size, batches: list, criterion: str = "l1",
                unit: str = "group", ratios: tuple[float, ...] = SENSITIVITY_RATIOS,
                protected: Optional[tuple[str, ...]] = None, device=None,
                cache_dir: Optional[Path] = None, on_progress: Optional[OnProgress] = None,
                cancel: Optional[Cancel] = None, reestimate_bn: bool = True) -> SensitivityTable:
    """Prune each unit alone at each ratio (no training) and measure top-1 on ``batches``
    (a list of labelled (x, y) tensors from the scoring pool, kept small). With
    ``reestimate_bn`` each pruned model first gets its BatchNorm statistics re-estimated on
    the same photos, as a real prune does, so the scan ranks what users will get. Results
    are cached on disk, keyed by the weights, the images and the settings, so asking again
    costs nothing."""
    import json
    from compress.measure import count_macs, evaluate
    device = device or torch.device("cpu")
    batches = list(batches)
    if not batches:
        raise PruneError("Sensitivity analysis needs labelled images: choose a dataset first.")
    key = _fingerprint(model, batches, f"{criterion}|{unit}|{ratios}|{protected}|{input_size}|bn={reestimate_bn}")
    path = (cache_dir / f"sensitivity-{key}.json") if cache_dir else None
    if path is not None and path.is_file():
        table = SensitivityTable.from_json(json.loads(path.read_text()))
        table.cached = True
        return table
    units = sensitivity_units(model, input_size, unit, protected)
    base_macs = count_macs(model, input_size)
    base = evaluate(model, batches, device)
    rows = []
    total = len(units) * len(ratios)
    for i, (name, roots) in enumerate(units.items()):
        for j, r in enumerate(ratios):
            if cancel is not None and cancel.is_set():
                raise Cancelled("sensitivity analysis cancelled")
            emit(on_progress, "sensitivity", (i * len(ratios) + j) / total, f"{name} at {r:.1f}")
            cfg = StructuredConfig(ratio=r, criterion=criterion, only_layers=roots, protected=protected)
            pruned, _ = _run(model, cfg, input_size, batches, apply=True,
                             bn_batches=batches if reestimate_bn else None)
            acc = evaluate(pruned, batches, device)
            rows.append(SensitivityRow(name, r, acc.top1, acc.n, acc.ci95,
                                       count_macs(pruned, input_size) / base_macs))
    emit(on_progress, "sensitivity", 1.0, "done")
    table = SensitivityTable(criterion, unit, base.top1, base.ci95, base.n, rows, reestimate_bn=reestimate_bn)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(table.to_json()))
    return table


# ---------------------------------------------------------------- unstructured

@dataclass(frozen=True)
class UnstructuredConfig:
    amount: float = 0.5                 # fraction of weights set to zero (0..0.95)
    method: str = "l1"                  # "l1" (magnitude) or "random"
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
    if not 0.0 <= cfg.amount <= 0.95:
        raise PruneError(f"Unstructured amount {cfg.amount} is out of range: use 0 to 0.95.")
    if cfg.method not in ("l1", "random"):
        raise PruneError(f"Unknown unstructured method {cfg.method!r}: use 'l1' or 'random'.")
    if cfg.scope not in ("global", "layer"):
        raise PruneError(f"Unknown unstructured scope {cfg.scope!r}: use 'global' or 'layer'.")


def prune_unstructured(model: nn.Module, cfg: UnstructuredConfig) -> tuple[nn.Module, SparsityReport]:
    """Zero the smallest (or random) weights of every Conv2d/Linear, made permanent.

    The tensors keep their shapes: dense size and dense latency do not change. Only a
    compressed file (gzip) or a sparse runtime gains from the zeros.
    """
    import torch.nn.utils.prune as tprune
    validate_unstructured(cfg)
    work = copy.deepcopy(model).cpu().eval()
    layers = _weight_layers(work, cfg.include_classifier)
    if not layers:
        raise PruneError("This model has no Conv2d or Linear weights to prune.")
    torch.manual_seed(cfg.seed)
    params = [(m, "weight") for _, m in layers]
    if cfg.method == "l1" and cfg.scope == "global":
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=cfg.amount)
    else:
        for m, name in params:
            if cfg.method == "l1":
                tprune.l1_unstructured(m, name, amount=cfg.amount)
            else:
                tprune.random_unstructured(m, name, amount=cfg.amount)
    for m, name in params:
        tprune.remove(m, name)     # permanent: plain weight tensors with zeros, no masks
    return work, sparsity(work, cfg.include_classifier)
