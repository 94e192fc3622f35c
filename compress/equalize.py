"""Cross-layer equalization (CLE): a float model whose weights quantize better, with the
same outputs.

Per-channel weight quantization gives each output channel its own scale, but activations
are quantized per tensor: one channel with a wide range squeezes all the others into a
few levels. CLE (Nagel et al., "Data-Free Quantization", ICCV 2019; what AIMET's
``equalize_model`` does) uses the positive homogeneity of ReLU, ``relu(x / s) =
relu(x) / s`` for ``s > 0``, to move range between consecutive layers: output channel
``i`` of the first layer is divided by ``s_i`` and the matching input channel of the next
layer multiplied by it, with

    s_i = sqrt(r1_i / r2_i)

where ``r1_i`` is the largest |weight| of channel ``i`` in the first layer (after folding
its BatchNorm) and ``r2_i`` the largest |weight| reading channel ``i`` in the second. Both
then have range ``sqrt(r1_i * r2_i)``. The model computes the same function (to float
rounding), so CLE needs no data and cannot lower float accuracy.

A pair is ``conv -> [BatchNorm] -> [ReLU] -> conv`` where each step feeds only the next.
The BatchNorm is kept (the model keeps its structure for pruning and training): its
weight and bias absorb the 1/s, which is exactly what scaling the folded conv would do.
ReLU6 (MobileNet, EfficientNet-Lite) is not homogeneous, because it clips at 6, so a pair
through ReLU6 is skipped. AIMET replaces those ReLU6s by ReLU first; measured here on
efficientnet_lite0 that took the float model from 85.25% to 59.63% top-1
(docs/quantization.md), so this project does not offer it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class EqualizeReport:
    pairs: list[tuple[str, str]] = field(default_factory=list)    # (first conv, second conv)
    skipped_relu6: int = 0          # pairs left alone because a ReLU6 sits between them

    def summary(self) -> str:
        s = f"cross-layer equalization on {len(self.pairs)} conv pair(s)"
        if self.skipped_relu6:
            s += f" ({self.skipped_relu6} pair(s) through ReLU6 left alone: ReLU6 clips, so scaling would change the outputs)"
        return s


class _Leaves(torch.fx.Tracer):
    """Keeps convolutions (including same-padding subclasses), BatchNorms and activations
    as single nodes, so a pair is found by module type."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardtanh)) or \
            super().is_leaf_module(m, qualname)


def _module(gm_modules, node):
    return gm_modules.get(node.target) if node.op == "call_module" else None


def _relu_kind(node, modules) -> str | None:
    """'relu', 'relu6' or None (not an activation CLE knows)."""
    m = _module(modules, node)
    if isinstance(m, nn.ReLU) or (node.op == "call_function" and node.target in (F.relu, torch.relu)):
        return "relu"
    if isinstance(m, nn.ReLU6) or (isinstance(m, nn.Hardtanh) and m.min_val == 0 and m.max_val == 6) \
            or (node.op == "call_function" and node.target is F.relu6):
        return "relu6"
    return None


@dataclass(frozen=True)
class Pair:
    """``conv1 -> [bn] -> [activation] -> conv2``, by module name. ``act_module`` is empty
    when the activation is a function call (``F.relu``) or absent."""
    conv1: str
    bn: str | None
    act: str | None                 # 'relu', 'relu6' or None
    act_module: str
    conv2: str


def find_pairs(model: nn.Module) -> list[Pair]:
    """Every equalizable chain in ``model`` (found by FX tracing; a model FX cannot trace
    has none)."""
    try:
        graph = _Leaves().trace(model)
    except Exception:
        return []
    modules = dict(model.named_modules())
    out = []

    def only_user(node):
        users = list(node.users)
        return users[0] if len(users) == 1 else None

    for node in graph.nodes:
        conv1 = _module(modules, node)
        if not isinstance(conv1, nn.Conv2d):
            continue
        cur, bn, act, act_module = only_user(node), None, None, ""
        if cur is not None and isinstance(_module(modules, cur), nn.BatchNorm2d):
            bn, cur = cur.target, only_user(cur)
        if cur is not None and _relu_kind(cur, modules):
            act, act_module = _relu_kind(cur, modules), cur.target if cur.op == "call_module" else ""
            cur = only_user(cur)
        conv2 = _module(modules, cur) if cur is not None else None
        if not isinstance(conv2, nn.Conv2d):
            continue
        depthwise = conv2.groups == conv2.in_channels == conv2.out_channels
        if conv2.groups != 1 and not depthwise:
            continue
        if conv2.in_channels != conv1.out_channels:
            continue
        out.append(Pair(node.target, bn, act, act_module, cur.target))
    return out


def _first_ranges(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> torch.Tensor:
    w = conv.weight.detach().flatten(1).abs().amax(1)
    if bn is not None:
        w = w * (bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps))
    return w


def _second_ranges(conv: nn.Conv2d) -> torch.Tensor:
    w = conv.weight.detach()
    if conv.groups == 1:
        return w.transpose(0, 1).flatten(1).abs().amax(1)
    return w.flatten(1).abs().amax(1)           # depthwise: output channel i reads input i


@torch.no_grad()
def equalize(model: nn.Module, iterations: int = 3) -> tuple[nn.Module, EqualizeReport]:
    """A copy of ``model`` (eval mode) with its conv pairs equalized; the caller's model is
    not changed. ``iterations`` repeats the pass, as the paper does for chains of pairs
    (a layer can be the second of one pair and the first of the next)."""
    work = copy.deepcopy(model).cpu().eval()
    report = EqualizeReport()
    usable = []
    for p in find_pairs(work):
        if p.act == "relu6":
            report.skipped_relu6 += 1
            continue
        usable.append((p.conv1, p.bn, p.conv2))
    for _ in range(max(1, iterations)):
        for conv1, bn, conv2 in usable:
            c1, c2 = work.get_submodule(conv1), work.get_submodule(conv2)
            b = work.get_submodule(bn) if bn else None
            r1, r2 = _first_ranges(c1, b), _second_ranges(c2)
            s = torch.sqrt(r1 / r2)
            # a dead channel (zero range on either side) is left as it is
            s = torch.where((r1 > 0) & (r2 > 0) & torch.isfinite(s), s, torch.ones_like(s))
            if b is not None:
                b.weight.div_(s)
                b.bias.div_(s)
            else:
                c1.weight.div_(s.view(-1, *([1] * (c1.weight.dim() - 1))))
                if c1.bias is not None:
                    c1.bias.div_(s)
            if c2.groups == 1:
                c2.weight.mul_(s.view(1, -1, *([1] * (c2.weight.dim() - 2))))
            else:
                c2.weight.mul_(s.view(-1, *([1] * (c2.weight.dim() - 1))))
    report.pairs = [(c1, c2) for c1, _, c2 in usable]
    return work, report


def channel_range_spread(model: nn.Module) -> float:
    """The median, over the equalizable conv layers, of the largest per-output-channel
    weight range (after BatchNorm folding) over the median one: how unevenly one scale
    for the whole tensor would fit. Lower is better for quantization; CLE lowers it."""
    spreads = []
    for p in find_pairs(model):
        r = _first_ranges(model.get_submodule(p.conv1), model.get_submodule(p.bn) if p.bn else None)
        r = r[r > 0]
        if len(r):
            spreads.append(float(r.max() / r.median()))
    return float(torch.tensor(spreads).median()) if spreads else 1.0

