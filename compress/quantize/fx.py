"""PyTorch torch.ao FX quantization: ``static`` (post-training static INT8: Conv-BN(-ReLU)
fusion, per-channel weights, activations calibrated on real images; x86 (fbgemm/oneDNN)
for server CPUs, qnnpack for ARM) and ``dynamic`` (Linear weights only: a CNN's
convolutions stay float, so a CNN gains almost nothing; the result says so).

Also here: what QAT and PT2E share with it (the qconfig, plain convolutions for EfficientNet
ports, the depthwise caveat).
"""
from __future__ import annotations

import copy
import warnings
from typing import Optional

import torch
from torch import nn

from compress.errors import QuantizeError
from compress.progress import emit
from compress.quantize.base import QuantConfig, QuantContext, QuantizedModel, register, torch_bytes
from compress.runtimes import PYTORCH


STATIC = "static"          # the FX mode PT2E falls back to


def qconfig(cfg: QuantConfig):
    from torch.ao.quantization import QConfig
    from torch.ao.quantization.observer import (HistogramObserver, MinMaxObserver,
                                                PerChannelMinMaxObserver)
    # x86's fbgemm kernels need 7-bit activations on CPUs without VNNI to avoid overflow
    reduce = cfg.backend == "x86"
    act = (MinMaxObserver if cfg.observer == "minmax" else HistogramObserver).with_args(
        reduce_range=reduce, dtype=torch.quint8)
    weight = (PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
              if cfg.per_channel else
              MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric))
    return QConfig(activation=act, weight=weight)


def torch_int8_caveat(model: nn.Module) -> Optional[str]:
    """What to tell a user before they wait for PyTorch INT8 on a network with depthwise
    convolutions (None for other networks)."""
    depthwise = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1
                    and m.groups == m.in_channels)
    if not depthwise:
        return None
    return (f"This network has {depthwise} depthwise convolutions, which PyTorch's x86 INT8 kernels handle "
            "poorly: on efficientnet_lite0, on this project's machines, PyTorch static INT8 ran slower than "
            "PyTorch FP32 and lost about 8 points of top-1 (docs/quantization.md). ONNX Runtime INT8 "
            "(ort-int8) is the fast and accurate CPU path for it; et-int8 is the one for phones.")


def standard_convs(model: nn.Module, input_size) -> tuple[nn.Module, int]:
    """A copy of ``model`` whose "same padding" conv subclasses are plain ``nn.Conv2d``s.

    EfficientNet ports (``Conv2dStaticSamePadding``: a Conv2d that pads in its own
    ``forward``) are not leaf modules to FX, which traces through them to ``F.conv2d``.
    Conv-BN fusion then finds no ``Conv2d`` module, and every BatchNorm stays a separate
    quantized op: on efficientnet_lite0 static INT8 ran 9x slower than FP32. Symmetric
    padding becomes the conv's own ``padding``; asymmetric padding (stride 2 on an even
    input) a ``ZeroPad2d`` before it. The copy is checked to give the same outputs; any
    other subclass is left alone. Returns the copy and how many convs were replaced."""
    work = copy.deepcopy(model).cpu().eval()
    replaced = 0
    for parent in list(work.modules()):
        for name, c in list(parent.named_children()):
            pad = getattr(c, "static_padding", None)
            if not (isinstance(c, nn.Conv2d) and type(c) is not nn.Conv2d
                    and (isinstance(pad, nn.ZeroPad2d) or type(pad).__name__ == "Identity")
                    and c.padding in ((0, 0), 0)
                    and c.padding_mode == "zeros"):
                continue
            left, right, top, bottom = pad.padding if isinstance(pad, nn.ZeroPad2d) else (0, 0, 0, 0)
            symmetric = left == right and top == bottom
            new = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride,
                            (top, left) if symmetric else 0, c.dilation, c.groups, c.bias is not None).eval()
            new.weight, new.bias = c.weight, c.bias
            setattr(parent, name, new if symmetric else nn.Sequential(nn.ZeroPad2d(pad.padding), new))
            replaced += 1
    if replaced:
        x = torch.randn(2, *input_size)
        with torch.no_grad():
            if not torch.allclose(model.cpu().eval()(x), work(x), atol=1e-4, rtol=1e-4):
                return copy.deepcopy(model).cpu().eval(), 0
    return work, replaced


def kept_note(cfg: QuantConfig) -> list[str]:
    return [f"{len(cfg.keep_float)} layer(s) kept in float"] if cfg.keep_float else []


@register(STATIC, "Static INT8 (PyTorch torch.ao FX, deprecated by PyTorch): weights and activations "
          "in 8-bit, ranges learned from a few real photos. Fast for ResNet-style networks, slow and "
          "inaccurate for depthwise ones. qnnpack (ARM) kernels are here.",
          runtime=f"{PYTORCH} INT8 ({{backend}})", engine=PYTORCH, order=30, calibrates=True, is_int8=True,
          caveat=torch_int8_caveat)
def static(ctx: QuantContext) -> QuantizedModel:
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    cfg, calib = ctx.cfg, ctx.calib
    torch.backends.quantized.engine = cfg.backend
    qmap = QConfigMapping().set_global(qconfig(cfg))
    for n in cfg.keep_float:
        qmap = qmap.set_module_name(n, None)
    work, _ = standard_convs(ctx.model, ctx.input_size)
    example = (torch.zeros(1, *ctx.input_size),)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = prepare_fx(work, qmap, example)     # fuses Conv-BN(-ReLU) for eval
    except Exception as e:
        raise QuantizeError(f"PyTorch could not trace this model for static INT8 "
                            f"({type(e).__name__}: {str(e)[:200]}). Try ort-int8.") from None
    with torch.no_grad():
        for i, x in enumerate(calib):
            emit(ctx.on_progress, "calibrate", i / len(calib), f"calibration batch {i + 1}/{len(calib)}")
            prepared(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = convert_fx(prepared)
    notes = kept_note(cfg) + [c for c in [torch_int8_caveat(ctx.model)] if c]
    if cfg.backend == "qnnpack":
        notes.append("qnnpack is built for ARM; on an x86 machine its latency is not what a phone sees.")
    return ctx.result(q, torch_bytes(q), notes)


@register("dynamic", "Dynamic INT8: only fully-connected weights become 8-bit. Does little for "
          "image CNNs, whose work is in convolutions.",
          runtime=f"{PYTORCH} dynamic INT8 ({{backend}})", engine=PYTORCH, order=10)
def dynamic(ctx: QuantContext) -> QuantizedModel:
    from torch.ao.quantization import quantize_dynamic
    model = ctx.model
    torch.backends.quantized.engine = ctx.cfg.backend
    work = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(work, {nn.Linear, nn.LSTM}, dtype=torch.qint8)
    conv = sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d) for p in m.parameters())
    total = sum(p.numel() for p in model.parameters())
    note = (f"{100 * conv / max(total, 1):.0f}% of this model's parameters are in convolutions, "
            "which dynamic INT8 leaves in float: expect little gain in size or speed.")
    return ctx.result(q, torch_bytes(q), [note])
