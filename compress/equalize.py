"""Float-model rewrites that make 8-bit quantization lose less: cross-layer equalization
(CLE) and bias correction (at the end of this file).

Cross-layer equalization: a float model whose weights quantize better, with the same
outputs.

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
from typing import Iterable

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



# ------------------------------------------------------------------ bias correction

@torch.no_grad()
def correct_bias(model: nn.Module, batches, bits: int = 8, max_images: int = 128) -> tuple[nn.Module, int]:
    """A copy of ``model`` whose biases cancel the mean shift that 8-bit weights cause.

    Rounding a layer's weights to ``bits`` per-channel symmetric integers changes its
    output by ``ΔW · x``; over the data that has a mean ``ΔW · E[x]`` per output channel,
    a bias the quantized model adds (Nagel et al., "Data-Free Quantization", §4.2; AIMET's
    empirical bias correction). This measures ``E[x]`` per input channel on real
    ``batches`` (calibration photos), computes the shift with the weights as they will be
    quantized (after folding a following BatchNorm, as the ONNX export and PyTorch's fusion
    do) and subtracts it from the bias (the BatchNorm's, when there is one). Each layer is
    corrected for its own weights; the float model's outputs change by exactly the shift.
    Returns the copy and the number of layers corrected."""
    work = copy.deepcopy(model).cpu().eval()
    try:
        graph = _Leaves().trace(work)
    except Exception:
        return work, 0
    modules = dict(work.named_modules())
    # conv -> the BatchNorm that is its only user (folded into it before quantizing)
    follow = {}
    for node in graph.nodes:
        if isinstance(_module(modules, node), nn.Conv2d) and len(node.users) == 1:
            user = next(iter(node.users))
            if isinstance(_module(modules, user), nn.BatchNorm2d):
                follow[node.target] = user.target
    convs = {n: m for n, m in work.named_modules() if isinstance(m, nn.Conv2d)}
    sums: dict[str, list] = {}             # conv -> [sum over positions per input channel, positions]

    def hook(name):
        def run(mod, inp):
            x = inp[0]
            acc = sums.setdefault(name, [0.0, 0])
            acc[0] = acc[0] + x.sum(dim=(0, 2, 3))
            acc[1] += x.shape[0] * x.shape[2] * x.shape[3]
        return run
    seen = feed(work, batches, max_images, [m.register_forward_pre_hook(hook(n)) for n, m in convs.items()])
    if seen == 0:
        return work, 0
    qmax = 2 ** (bits - 1) - 1
    corrected = 0
    for name, conv in convs.items():
        if name not in sums:
            continue
        # E[x] per input channel, over every image and position the layer saw (padding's
        # zeros are not counted: a small bias at the borders only)
        mean_x = sums[name][0] / max(sums[name][1], 1)
        bn = modules[follow[name]] if name in follow else None
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)) if bn is not None else torch.ones(conv.out_channels)
        w = conv.weight * scale.view(-1, 1, 1, 1)
        step = (w.abs().flatten(1).amax(1) / qmax).clamp(min=1e-12).view(-1, 1, 1, 1)
        dw = torch.round(w / step).clamp(-qmax - 1, qmax) * step - w
        if conv.groups == 1:
            shift = (dw.sum(dim=(2, 3)) * mean_x.view(1, -1)).sum(1)
        elif conv.groups == conv.in_channels == conv.out_channels:
            shift = dw.sum(dim=(1, 2, 3)) * mean_x
        else:
            continue
        if bn is not None:
            bn.bias.sub_(shift)
        elif conv.bias is not None:
            conv.bias.sub_(shift)
        else:
            conv.bias = nn.Parameter(-shift)
        corrected += 1
    return work, corrected


def feed(model: nn.Module, batches: Iterable, max_images: int, hooks: Iterable = ()) -> int:
    """Run the first ``max_images`` images of ``batches`` (labels dropped) through ``model``
    without gradients, for the ``hooks`` watching it, which are removed afterwards (even on
    an error); returns how many images ran."""
    seen = 0
    try:
        with torch.no_grad():
            for b in batches:
                x = (b[0] if isinstance(b, (tuple, list)) else b)[: max_images - seen]
                model(x)
                seen += len(x)
                if seen >= max_images:
                    break
    finally:
        for h in hooks:
            h.remove()
    return seen
