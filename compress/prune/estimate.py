"""Params and MACs of a channel-pruned model, computed from channel counts: no copy of
the model, no pruning, no tracing per call. This is what the Prune page's slider shows and
what the MACs/params target search bisects on.

Once per model (cached while the model object lives), :class:`ChannelCounter`:

1. builds torch-pruning's dependency graph and lists every pruning group (the layers
   whose channels go together: a conv, its BatchNorm, residual partners, the next layers'
   inputs), with how each member's in/out channels follow the group's root;
2. counts each layer's MACs with ultralytics-thop (the same counter ``measure.count_macs``
   uses) and its parameters.

Per call, :meth:`ChannelCounter.estimate` repeats torch-pruning's own arithmetic for how
many channels each group loses (``MetaPruner._prune``: per-scope ``n - int(n * (1 -
ratio))``, ``round_to``, channel groups, ignored/protected layers, the global threshold
over importance scores, the over-pruning check), then scales each layer's thop count and
parameter count by its new channel counts (a conv's MACs are proportional to its input
times its output channels; a depthwise conv's, a BatchNorm's or a pooling layer's to its
channels). tests/test_estimate.py checks the result against real prunes over a grid of
settings on resnet18, efficientnet_lite0 and mobilenet_v3_large.

Exact for uniform scope with any criterion (the counts do not depend on which channels go)
and for global scope with a criterion whose registry entry says ``exact_global`` (the
weight criteria: scores computed once). Global scope with any other criterion (data or
random scores) is ranked with the registry's stand-in (L1) instead and marked
``exact: False``. A model with a layer type this
arithmetic does not know is marked ``supported = False``; ``structured.estimate`` then
prunes a copy as before.
"""
from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch_pruning as tp
from torch import nn

from compress.prune import criteria
from compress.prune.layers import MAX_PRUNING_RATIO

_KNOWN = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)

_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


@dataclass
class _Group:
    root: str
    channels: int                                  # the root's output channels
    ch_groups: int                                 # channel groups (grouped convs), as torch-pruning counts them
    out_members: tuple[str, ...]                   # layers whose outputs shrink with it, in dependency order
    blocked: bool                                  # torch-pruning's ratio check refuses it from the start
    group: object = field(repr=False, default=None)   # the torch-pruning Group (for importance scores)


@dataclass
class _Layer:
    name: str
    kind: str                                      # "conv", "depthwise", "linear", "norm", "channelwise"
    out0: int
    in0: int
    macs0: float
    params0: int
    weight_per_unit: int = 0                       # conv/linear weight per (out × in/groups) unit: the kernel area
    has_bias: bool = False
    groups: int = 1
    out_dim: Optional[tuple[int, float]] = None     # (group index, channels per removed root channel)
    in_dim: Optional[tuple[int, float]] = None


def _round_to(n_pruned: int, current: int, round_to: int) -> int:
    """torch-pruning's MetaPruner._round_to."""
    rounded = current - n_pruned
    rounded = rounded - rounded % round_to
    return max(current - rounded, 0)


class ChannelCounter:
    """A model's pruning groups and per-layer costs, for estimates at any setting."""

    def __init__(self, model: nn.Module, input_size):
        self.input_size = tuple(input_size)
        work = copy.deepcopy(model).cpu().eval()
        names = {m: n for n, m in work.named_modules()}
        self._names = names
        example = torch.zeros(1, *input_size)
        self._pruner = tp.pruner.MetaPruner(work, example, importance=criteria.get(criteria.STAND_IN).make(),
                                            pruning_ratio=0.0, ignored_layers=[],
                                            max_pruning_ratio=MAX_PRUNING_RATIO)
        dg = self._pruner.DG
        self.groups: list[_Group] = []
        dims: dict[tuple[str, str], tuple[int, float]] = {}
        for group in dg.get_all_groups(ignored_layers=[], root_module_types=self._pruner.root_module_types):
            root = group[0].dep.target.module
            channels = dg.get_out_channels(root)
            outs: list[str] = []
            gi = len(self.groups)
            for dep, idxs in group:
                n = names.get(dep.target.module)
                if n is None:
                    continue
                side = "out" if dg.is_out_channel_pruning_fn(dep.handler) else \
                    "in" if dg.is_in_channel_pruning_fn(dep.handler) else None
                if side is None:
                    continue
                dims.setdefault((n, side), (gi, len(idxs) / channels))
                if side == "out" and n not in outs:
                    outs.append(n)
            self.groups.append(_Group(names[root], channels, self._pruner._get_channel_groups(group), tuple(outs),
                                      not self._pruner._check_pruning_ratio(group), group))
        self.layers, self.supported, self.why = self._layers(work, dims)
        self._scores: dict[str, list[torch.Tensor]] = {}
        base = self._totals({})
        self.base_params, self.base_macs = base

    # ------------------------------------------------------------------ per-layer costs

    def _layers(self, work: nn.Module, dims) -> tuple[list[_Layer], bool, str]:
        import thop
        counted = copy.deepcopy(work)
        with torch.no_grad():
            _, _, info = thop.profile(counted, inputs=(torch.zeros(1, *self.input_size),), verbose=False,
                                      ret_layer_info=True)
        macs: dict[str, float] = {}

        def walk(d, prefix=""):                 # every level: a module's count includes its children's
            for k, (ops, _p, sub) in d.items():
                macs[f"{prefix}{k}"] = float(ops)
                if sub:
                    walk(sub, f"{prefix}{k}.")
        walk(info)
        # input channels of every leaf, in execution order: a parameter-free layer with MACs
        # (pooling) takes its channels from the last layer before it that made that many
        order: list[tuple[str, Optional[int], Optional[int]]] = []
        hooks = []
        for n, m in work.named_modules():
            if not list(m.children()) or isinstance(m, _KNOWN):
                def hook(mod, inp, out, n=n):
                    cin = inp[0].shape[1] if inp and isinstance(inp[0], torch.Tensor) and inp[0].dim() >= 2 else None
                    cout = out.shape[1] if isinstance(out, torch.Tensor) and out.dim() >= 2 else None
                    order.append((n, cin, cout))
                hooks.append(m.register_forward_hook(hook))
        try:
            with torch.no_grad():
                work(torch.zeros(1, *self.input_size))
        finally:
            for h in hooks:
                h.remove()
        seen_order = {n: i for i, (n, _, _) in reversed(list(enumerate(order)))}
        layers: list[_Layer] = []
        modules = dict(work.named_modules())
        inside_known: set[str] = set()
        for n, m in work.named_modules():
            own = list(m.parameters(recurse=False))
            if n in inside_known:
                if own:
                    return [], False, f"{n} holds parameters inside a {type(m).__name__}"
                continue
            if isinstance(m, _KNOWN):           # e.g. a same-padding conv with a padding child
                inside_known.update(f"{n}.{c}" for c, _ in m.named_modules() if c)
            elif list(m.children()):
                if own:
                    return [], False, f"{n or type(m).__name__} holds parameters of its own"
                continue
            p0 = sum(p.numel() for p in m.parameters())
            ops = macs.get(n, 0.0)
            if not own and not ops:
                continue
            if isinstance(m, nn.Conv2d):
                dw = m.groups > 1 and m.groups == m.in_channels == m.out_channels
                layer = _Layer(n, "depthwise" if dw else "conv", m.out_channels, m.in_channels, ops, p0,
                               weight_per_unit=m.kernel_size[0] * m.kernel_size[1], has_bias=m.bias is not None,
                               groups=m.groups)
            elif isinstance(m, nn.Linear):
                layer = _Layer(n, "linear", m.out_features, m.in_features, ops, p0, weight_per_unit=1,
                               has_bias=m.bias is not None)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                layer = _Layer(n, "norm", m.num_features, m.num_features, ops, p0,
                               has_bias=m.affine)
            elif not own:
                # parameter-free with MACs (pooling): channels of its input
                i = seen_order.get(n)
                cin = order[i][1] if i is not None else None
                src = None
                if cin is not None:
                    for pn, _, pout in reversed(order[:i]):
                        if pout == cin and any(True for _ in modules[pn].parameters(recurse=False)):
                            src = pn
                            break
                if cin is None or src is None:
                    return [], False, f"cannot tell which channels {n} ({type(m).__name__}) runs on"
                layer = _Layer(n, "channelwise", cin, cin, ops, 0)
                layer.out_dim = dims.get((src, "out"))
                layers.append(layer)
                continue
            else:
                return [], False, f"{n} is a {type(m).__name__}, a layer type the estimate does not know"
            layer.out_dim, layer.in_dim = dims.get((n, "out")), dims.get((n, "in"))
            layers.append(layer)
        return layers, True, ""

    def _totals(self, removed: dict[int, int]) -> tuple[int, int]:
        """(params, MACs) with ``removed[g]`` root channels taken from group g."""
        def count(dim, c0):
            if dim is None:
                return c0
            g, factor = dim
            return c0 - int(round(removed.get(g, 0) * factor))
        params = 0
        macs = 0.0
        for L in self.layers:
            out = count(L.out_dim, L.out0)
            if L.kind in ("depthwise", "norm", "channelwise"):
                c = out if L.out_dim is not None else count(L.in_dim, L.in0)
                macs += L.macs0 * c / L.out0
                if L.kind == "depthwise":
                    params += c * L.weight_per_unit + (c if L.has_bias else 0)
                elif L.kind == "norm":
                    params += 2 * c if L.has_bias else 0
                continue
            inn = count(L.in_dim, L.in0)
            macs += L.macs0 * (out / L.out0) * (inn / L.in0)
            params += out * (inn // L.groups) * L.weight_per_unit + (out if L.has_bias else 0)
        return params, int(round(macs))

    # ------------------------------------------------------------------ torch-pruning's arithmetic

    def _group_scores(self, criterion: str) -> list[Optional[torch.Tensor]]:
        """Each group's channel scores as torch-pruning ranks them globally (averaged over
        channel groups), computed once per criterion."""
        if criterion not in self._scores:
            imp = criteria.get(criterion).make()
            out = []
            for g in self.groups:
                s = imp(g.group)
                if s is not None:
                    s = s.detach().float().cpu()
                    if g.ch_groups > 1:
                        s = s.view(g.ch_groups, -1).mean(dim=0)
                out.append(s)
            self._scores[criterion] = out
        return self._scores[criterion]

    def removed(self, cfg, protected: tuple[str, ...], outputs: tuple[str, ...]) -> tuple[dict[int, int], bool]:
        """Root channels each group loses under ``cfg`` (a StructuredConfig with a
        ratio), and whether that count is exact (see the module docstring)."""
        ignored = set(protected) | set(outputs)
        if cfg.only_layers:
            ratio_dict, default, scope = {n: cfg.ratio for n in cfg.only_layers}, 0.0, "uniform"
        else:
            ratio_dict, default, scope = dict(cfg.layer_ratios), float(cfg.ratio or 0.0), cfg.scope
        exact = True
        removed: dict[int, int] = {}
        pooled: list[int] = []

        def local(gi: int, ratio: float) -> int:
            g = self.groups[gi]
            size = g.channels // g.ch_groups
            n = size - int(size * (1 - min(ratio, MAX_PRUNING_RATIO)))
            if n <= 0:
                return 0
            if cfg.round_to:
                n = min(_round_to(n, g.channels, cfg.round_to), size)
            return n * g.ch_groups

        for gi, g in enumerate(self.groups):
            if g.blocked or ignored.intersection(g.out_members):
                continue
            user = next((n for n in g.out_members if n in ratio_dict), None)
            if user is not None:
                removed[gi] = local(gi, ratio_dict[user])
            elif scope == "global":
                pooled.append(gi)
            else:
                removed[gi] = local(gi, default)
        if pooled:
            exact = criteria.get(cfg.criterion).exact_global
            scores = self._group_scores(criteria.global_ranking_criterion(cfg.criterion))
            pooled = [gi for gi in pooled if scores[gi] is not None]
            concat = torch.cat([scores[gi] for gi in pooled]) if pooled else torch.zeros(0)
            total = len(concat)
            n = total - int(total * (1 - default))
            if n > 0:
                thres = torch.topk(concat, k=n, largest=False).values[-1]
                for gi in pooled:
                    g = self.groups[gi]
                    k = int((scores[gi] <= thres).sum())
                    if k > 0 and cfg.round_to:
                        k = _round_to(k, g.channels, cfg.round_to)
                    removed[gi] = min(k, g.channels // g.ch_groups) * g.ch_groups
        # torch-pruning's over-pruning check: a group that would lose every channel is skipped
        return {gi: r for gi, r in removed.items() if 0 < r < self.groups[gi].channels}, exact

    def estimate(self, cfg, protected: tuple[str, ...], outputs: tuple[str, ...]) -> dict:
        removed, exact = self.removed(cfg, protected, outputs)
        params, macs = self._totals(removed)
        return {"ratio": cfg.ratio, "params": params, "macs": macs, "exact": exact,
                "removed_any": bool(removed),
                "channels": {self.groups[gi].root: [self.groups[gi].channels, self.groups[gi].channels - r]
                             for gi, r in removed.items()}}


def counter_for(model: nn.Module, input_size) -> ChannelCounter:
    """The model's ChannelCounter, built once per (model object, input size)."""
    per_model = _CACHE.setdefault(model, {})
    key = tuple(input_size)
    if key not in per_model:
        per_model[key] = ChannelCounter(model, input_size)
    return per_model[key]
