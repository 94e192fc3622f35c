"""The one entry point, ``quantize(model, QuantConfig, ...) -> QuantizedModel``, and the
profile of its result measured in the runtime that executes it."""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn

from compress.equalize import correct_bias, equalize
from compress.errors import QuantizeError
from compress.measure import Profile, count_macs, count_params, evaluate, measure_peak_memory, top1_agreement
from compress.progress import Cancel, OnProgress
from compress.quantize.base import (MODES, QuantConfig, QuantContext, QuantizedModel, calibration_images,
                                    dispatch, validate)
from compress.quantize.keepfloat import keep_worst
from compress.timing import measure_latency


def quantize(model: nn.Module, cfg: QuantConfig, input_size, calibration: Optional[Iterable] = None,
             device: Optional[torch.device] = None,
             on_progress: Optional[OnProgress] = None, train_batches: Optional[Iterable] = None,
             cancel: Optional[Cancel] = None) -> QuantizedModel:
    """Quantize a copy of ``model`` (the caller's model is not changed).

    ``calibration``: batches of real images (labels ignored), kept apart from the images
    accuracy is measured on; the first ``cfg.calibration`` images are used.
    ``train_batches``: labelled training batches, for modes that train (``qat``).
    ``cancel``: anything with ``is_set()`` (a ``threading.Event``); long steps raise
    :class:`compress.progress.Cancelled` once it is set.
    """
    device = device or torch.device("cpu")
    validate(model, cfg, device)
    mode = MODES[cfg.mode]
    calib = None
    if mode.calibrates:
        if calibration is None:
            raise QuantizeError(f"{cfg.mode} learns activation ranges from real images: choose a "
                                "dataset (its calibration images are kept apart from evaluation).")
        calib = calibration_images(calibration, cfg.calibration)
    notes = []
    if mode.is_int8 and cfg.equalize:
        model, report = equalize(model)
        notes.append(report.summary())
    if mode.is_int8 and cfg.bias_correction and calib is not None:
        model, n = correct_bias(model, calib)
        notes.append(f"bias correction on {n} layer(s): the mean output shift of 8-bit weights, measured on "
                     f"{sum(len(x) for x in calib)} calibration photos, taken out of their biases")
    ctx = QuantContext(model, cfg, tuple(input_size), calib, device, on_progress, train_batches, cancel)
    if mode.is_int8 and cfg.keep_worst > 0:
        return keep_worst(ctx, notes)
    q = dispatch(ctx)
    q.notes = notes + q.notes
    return q


def profile_quantized(q: QuantizedModel, reference: nn.Module, name: str, input_size,
                      batch: int = 1, runs: int = 50, warmup: int = 10, threads: Optional[int] = None,
                      eval_batches: Optional[list] = None, weights: str = "",
                      on_progress: Optional[OnProgress] = None, latency: bool = True, eval_source: str = "",
                      class_names=()) -> Profile:
    """A Profile of a quantized model, measured in the runtime that executes it.

    Params and MACs are the float reference's (quantization keeps every weight and every
    multiply, in fewer bits); bytes are the quantized file's own; latency and accuracy
    come from running ``q.model``; agreement compares its top-1 with the reference's.
    """
    # without its float twin (a model loaded back from a run's file) the counts are the
    # file's own, and there is nothing to compare its answers with
    params, nonzero = count_params(reference if reference is not None else q.model)
    lat = measure_latency(q.model, input_size, q.device, batch=batch, warmup=warmup, runs=runs,
                          threads=threads, on_progress=on_progress) if latency else None
    mem = None if (q.onnx or q.pte) is not None else measure_peak_memory(q.model, input_size, q.device, batch=batch)
    acc = agree = per_image = None
    if eval_batches is not None:
        preds: list = []
        per_image = {}
        acc = evaluate(q.model, eval_batches, q.device, on_progress=on_progress, predictions=preds,
                       per_image=per_image, class_names=class_names)
        acc.source = eval_source
        agree = None if reference is None else top1_agreement(reference, preds, eval_batches)
    return Profile(model=name, params=params, nonzero_params=nonzero, size_bytes=q.size_bytes,
                   size_gzip_bytes=q.size_gzip_bytes,
                   macs=count_macs(reference, input_size) if reference is not None else None,
                   input_size=tuple(input_size), latency_ms=lat, peak_memory_bytes=mem, accuracy=acc,
                   weights=weights, notes=list(q.notes), runtime=q.runtime, agreement_top1=agree,
                   per_image=per_image)
