"""Which layers channel pruning touches, found by structure, not by name: the output layer
(never shrunk), the layers protected by default (the stem, and an inverted-residual
network's projection convs), the prunable layers; and the most of one group's channels
torch-pruning may remove, shared by the pruner and the analytic estimate.
"""
from __future__ import annotations

import weakref

import torch
from torch import nn

MAX_PRUNING_RATIO = 0.95    # MetaPruner's max_pruning_ratio: the most of one group's channels removed


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
