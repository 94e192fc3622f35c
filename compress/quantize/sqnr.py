"""Per-layer quantization error: the simulated 8-bit SQNR of each Conv2d/Linear alone."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch import nn

from compress.equalize import feed
from compress.errors import QuantizeError


@dataclass
class LayerError:
    layer: str
    sqnr_db: float          # 10·log10(signal power / quantization-noise power); higher is better
    params: int


def layer_sqnr(model: nn.Module, batches: Iterable, per_channel: bool = True,
               reduce_range: bool = True, max_images: int = 64) -> list[LayerError]:
    """Simulated INT8 error of every Conv2d/Linear, one layer at a time, on real images.

    Each layer's float output is compared with the output it gives when its input is
    fake-quantized to uint8 (per-tensor, observed min/max) and its weights to int8
    (per-channel symmetric), as static INT8 does. The SQNR ranks which layers lose most
    in 8 bits: the candidates to keep in float. (BatchNorm folding is not simulated.)
    """
    work = copy.deepcopy(model).cpu().eval()
    layers = [(n, m) for n, m in work.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    power = {n: [0.0, 0.0] for n, _ in layers}
    qmax = 127 if reduce_range else 255

    def fq_weight(w):
        if per_channel:
            s = (w.abs().amax(dim=tuple(range(1, w.dim()))) / 127).clamp(min=1e-12)
            return torch.fake_quantize_per_channel_affine(w, s, torch.zeros_like(s, dtype=torch.int32),
                                                          0, -128, 127)
        s = float(w.abs().max()) / 127 or 1e-12
        return torch.fake_quantize_per_tensor_affine(w, s, 0, -128, 127)

    def hook(name):
        def run(mod, inp, out):
            x = inp[0]
            lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
            scale = (hi - lo) / qmax or 1e-12
            zp = int(round(-lo / scale))
            xq = torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, qmax)
            # the layer's own forward (a same-padding conv subclass pads inside it), with 8-bit
            # weights swapped in; calling forward directly does not fire this hook again
            weight = mod.weight.data
            mod.weight.data = fq_weight(weight)
            try:
                yq = type(mod).forward(mod, xq)
            finally:
                mod.weight.data = weight
            power[name][0] += float(out.pow(2).sum())
            power[name][1] += float((out - yq).pow(2).sum())
        return run
    seen = feed(work, batches, max_images, [m.register_forward_hook(hook(n)) for n, m in layers])
    if seen == 0:
        raise QuantizeError("Per-layer quantization error needs real images: choose a dataset.")
    out = []
    for n, m in layers:
        sig, noise = power[n]
        db = float("inf") if noise == 0 else 10 * float(np.log10(max(sig, 1e-30) / noise))
        out.append(LayerError(n, db, m.weight.numel()))
    return out
