"""ONNX Runtime: ``ort-fp32`` (the model exported to ONNX and run by ONNX Runtime in FP32:
the second FP32 baseline, a different runtime, not a quantization) and ``ort-int8``
(static QDQ INT8 of that export, per-channel, calibrated on the same images; the weights'
width and the range method are chosen per CPU by agreement with FP32)."""
from __future__ import annotations

import contextlib
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from compress.errors import QuantizeError
from compress.progress import emit
from compress.quantize.base import (QuantConfig, QuantContext, QuantizedModel, closeness, cpu_has_vnni, logits,
                                    register)
from compress.runtimes import ONNX_RUNTIME, OrtModel, export_onnx


def _export(ctx: QuantContext) -> bytes:
    emit(ctx.on_progress, "export", 0.0, "exporting to ONNX")
    return export_onnx(ctx.model, ctx.input_size)


@register("ort-fp32", "ONNX Runtime FP32: the same float model in a faster inference engine. Not a "
          "quantization: the fair float baseline for ONNX Runtime INT8.",
          runtime=f"{ONNX_RUNTIME} FP32", engine=ONNX_RUNTIME, order=40, artifact="onnx", yardstick=True)
def ort_fp32(ctx: QuantContext) -> QuantizedModel:
    fp32 = _export(ctx)
    return ctx.result(OrtModel(fp32), fp32, onnx=fp32)


@register("ort-int8", "ONNX Runtime INT8: static 8-bit in ONNX Runtime, calibrated on the same "
          "photos. Often the fastest CPU path.",
          runtime=f"{ONNX_RUNTIME} INT8 (QDQ)", engine=ONNX_RUNTIME, order=50, artifact="onnx",
          calibrates=True, is_int8=True, float_twin="ort-fp32")
def ort_int8(ctx: QuantContext) -> QuantizedModel:
    fp32 = _export(ctx)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    cfg, calib = ctx.cfg, ctx.calib
    n_cal = sum(len(x) for x in calib)
    with tempfile.TemporaryDirectory() as tmp:
        src, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        src.write_bytes(fp32)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:
            pre = src          # pre-processing only improves the result; quantize without it
        exclude = _onnx_nodes_for(pre, cfg.keep_float)
        variants = ort_int8_variants(cfg.observer, cpu_has_vnni(), cfg.weight_bits)
        reference = logits(OrtModel(fp32), calib) if len(variants) > 1 else None
        tried, failed = [], []
        for i, v in enumerate(variants):
            emit(ctx.on_progress, "calibrate", 0.1 + 0.8 * i / len(variants),
                 f"ONNX Runtime INT8 ({v.label}) calibrating on {n_cal} images")
            try:
                int8 = _ort_int8_once(pre, Path(tmp) / f"int8-{i}.onnx", calib, cfg, exclude, v)
            except Exception as e:  # noqa: BLE001 - one variant failing leaves the others
                failed.append(f"{v.label} failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})")
                continue
            score = None if reference is None else closeness(reference, logits(OrtModel(int8), calib))
            tried.append((v, int8, score))
    if not tried:
        raise QuantizeError("ONNX Runtime could not quantize this model: " + "; ".join(failed)
                            + (". Choose min/max ranges (--observer minmax)." if cfg.observer == "histogram" else "."))
    # most top-1 answers shared with FP32 on the calibration photos; then the smaller error
    v, int8, score = min(tried, key=lambda t: (-t[2][0], t[2][1]) if t[2] else (0, 0))
    notes = [f"{len(cfg.keep_float)} layer(s) kept in float"] if cfg.keep_float else []
    notes += failed
    if len(tried) > 1:
        notes.append(f"INT8 settings: {v.label}, chosen by agreement with FP32 on the {n_cal} calibration "
                     "photos (" + "; ".join(f"{t[0].label}: {100 * t[2][0]:.1f}% same top-1" for t in tried) + ")")
    else:
        notes.append(f"INT8 settings: {v.label}")
    return ctx.result(OrtModel(int8), int8, notes, onnx=int8, ort_variant=v)


@dataclass(frozen=True)
class OrtVariant:
    """One way to make ONNX Runtime INT8: the weights' width and the activation ranges."""
    reduce_range: bool                 # 7-bit weights (the AVX2 saturation workaround)
    observer: str                      # "minmax" or "histogram" (percentile 99.999)

    @property
    def label(self) -> str:
        ranges = "min/max ranges" if self.observer == "minmax" else "percentile ranges"
        return f"{7 if self.reduce_range else 8}-bit weights, {ranges}"

    def settings(self) -> dict:
        """The QuantConfig fields that make ``ort-int8`` use this variant alone."""
        return {"observer": self.observer, "weight_bits": 7 if self.reduce_range else 8}


def ort_int8_variants(observer: str, vnni: bool, weight_bits: int = 0) -> list[OrtVariant]:
    """The settings ``ort-int8`` tries, for this CPU.

    7-bit weights (``reduce_range``) cost accuracy: on efficientnet_lite0, 488 ImageNet
    photos, they agreed with FP32 on 96.5% against 98.8% for 8-bit weights (measured on a
    VNNI CPU, docs/quantization.md). With VNNI, 8-bit weights are safe, so only they are
    tried. Without VNNI, ONNX Runtime documents a risk of u8 x s8 saturation with 8-bit
    weights (an earlier measurement here on an AVX2 CPU: resnet18_cifar10 agreed on 85%
    with 8-bit weights, 99.5% with 7-bit), and whether it bites depends on the model, so
    both are quantized and the one that agrees more with FP32 on the calibration photos
    is kept. ``observer="auto"`` tries both range methods as well; ``weight_bits`` 8 or 7
    fixes the width."""
    observers = ("minmax", "histogram") if observer == "auto" else (observer,)
    widths = {8: (False,), 7: (True,)}.get(weight_bits, (False,) if vnni else (False, True))
    return [OrtVariant(r, o) for r in widths for o in observers]


def _ort_int8_once(pre, dst, calib, cfg: QuantConfig, exclude, v: OrtVariant) -> bytes:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"images": x[i:i + 1].numpy()} for x in calib for i in range(len(x))])

        def get_next(self):
            return next(self.items, None)

    # the calibrator prints progress to stdout, which would corrupt a CLI's JSON output
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=cfg.per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                        reduce_range=v.reduce_range,
                        calibrate_method=(CalibrationMethod.Percentile if v.observer == "histogram"
                                          else CalibrationMethod.MinMax),
                        extra_options={"CalibPercentile": 99.999})
    return dst.read_bytes()


def onnx_node_module(node_name: str) -> str:
    """The PyTorch module path an exported node came from: the TorchScript exporter names
    nodes by scope, e.g. ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``."""
    path = ""
    for seg in node_name.strip("/").split("/")[:-1]:
        path = seg if (not path or seg.startswith(path + ".")) else f"{path}.{seg}"
    return path


def _onnx_nodes_for(path, layer_names: tuple[str, ...]) -> list[str]:
    """ONNX node names that belong to the given PyTorch layers (or their children)."""
    if not layer_names:
        return []
    import onnx
    out = []
    for node in onnx.load(str(path)).graph.node:
        mod = onnx_node_module(node.name)
        if any(mod == n or mod.startswith(n + ".") for n in layer_names):
            out.append(node.name)
    return out
