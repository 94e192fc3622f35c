"""Quantization behind one interface: ``quantize(model, QuantConfig, ...) -> QuantizedModel``.

Every mode returns a model that takes the same float images and returns float logits, so
the same latency and accuracy code measures all of them, each in the runtime that
executes it:

* ``dynamic``   torch.ao dynamic INT8: Linear weights only. A CNN's convolutions stay
                float, so a CNN gains almost nothing; the result says so.
* ``static``    torch.ao FX post-training static INT8: Conv-BN(-ReLU) fusion, per-channel
                weights, activations calibrated on real images; x86 (fbgemm/oneDNN) for
                server CPUs, qnnpack for ARM.
* ``ort-fp32``  the model exported to ONNX and run by ONNX Runtime in FP32: the second
                FP32 baseline (a different runtime, not a quantization).
* ``ort-int8``  ONNX Runtime static QDQ INT8 of that export, per-channel, calibrated on
                the same images.
* ``fp16`` / ``bf16``  half-precision weights and activations: FP16 on CUDA; BF16 on CUDA
                or the CPU.

The backends verified to work on the pinned torch 2.14.1 are the ones used here; torchao's
PT2E X86InductorQuantizer failed on resnet18 (see docs/quantization.md).
"""
from __future__ import annotations

import contextlib
import copy
import io
import sys
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np
import torch
from torch import nn

from compress.errors import CompressError, DeviceError
from compress.progress import OnProgress, emit

BACKENDS = ("x86", "qnnpack")
KEEP_RANKS = {"sqnr": "simulated 8-bit error of each layer alone (seconds)",
              "accuracy": "measured: quantize with each candidate kept in float, keep those that help most "
                          "(one quantization per candidate)"}
OBSERVERS = {"auto": "try both, keep the one closer to FP32 (ONNX Runtime; PyTorch uses histogram)",
             "minmax": "smallest and largest value seen", "histogram": "a range that ignores rare outliers"}


class QuantizeError(CompressError):
    """A quantization request that cannot be carried out."""


@dataclass(frozen=True)
class QuantConfig:
    mode: str = "static"
    backend: str = "x86"                # torch modes: x86 (server CPUs) or qnnpack (ARM)
    calibration: int = 128              # images used to learn activation ranges
    observer: str = "auto"              # "auto", "minmax" or "histogram"
    per_channel: bool = True
    equalize: bool = False              # cross-layer equalization first (compress/equalize.py)
    bias_correction: bool = False       # cancel the mean output shift of 8-bit weights (equalize.py)
    keep_float: tuple[str, ...] = ()    # layer names left in float (mixed precision)
    keep_worst: int = 0                 # also keep K layers in float, ranked by keep_rank
    keep_rank: str = "sqnr"             # "sqnr" (simulated error, fast) or "accuracy" (measured)
    weight_bits: int = 0                # ONNX Runtime weights: 8, 7 (reduce_range), or 0: chosen per CPU
    qat_epochs: int = 1                 # QAT: fake-quant fine-tuning epochs
    qat_lr: float = 1e-4


@dataclass
class QuantizedModel:
    """A model that maps float images to float logits, plus what it is and where it runs."""
    model: nn.Module
    mode: str
    runtime: str                        # e.g. "PyTorch eager", "PyTorch INT8 (x86)", "ONNX Runtime"
    size_bytes: int                     # serialized bytes in that runtime's own format
    size_gzip_bytes: int
    device: torch.device
    notes: list[str] = field(default_factory=list)
    onnx: Optional[bytes] = None        # the ONNX file, for ORT modes
    ort_variant: Optional["OrtVariant"] = None   # ONNX Runtime INT8: the settings chosen
    pte: Optional[bytes] = None         # the ExecuTorch program, for ExecuTorch modes
    pt2: Optional[bytes] = None         # the torch.export program (.pt2), for pt2e


def validate(model: nn.Module, cfg: QuantConfig, device: Optional[torch.device] = None) -> None:
    """Raise for a request that cannot run (cheap; call it before slow work)."""
    validate_config(cfg)
    names = dict(model.named_modules())
    for n in cfg.keep_float:
        if n not in names:
            raise QuantizeError(f"Layer {n!r} (to keep in float) does not exist in this model.")
    if isinstance(model, torch.jit.ScriptModule):
        raise QuantizeError("This is a TorchScript model; quantization needs the Python model "
                            "(load a state_dict or a project checkpoint).")
    device = device or torch.device("cpu")
    mode = MODES[cfg.mode]
    if device.type not in mode.devices:
        raise DeviceError(mode.device_note)


def validate_config(cfg: QuantConfig) -> None:
    """Checks of the settings alone (no model): for recipes and the CLI."""
    if cfg.mode not in MODES:
        raise QuantizeError(f"Unknown quantization mode {cfg.mode!r}. Choose one of: {', '.join(MODES)}.")
    if cfg.backend not in BACKENDS:
        raise QuantizeError(f"Unknown backend {cfg.backend!r}: use 'x86' (server CPUs) or 'qnnpack' (ARM).")
    if cfg.observer not in OBSERVERS:
        raise QuantizeError(f"Unknown observer {cfg.observer!r}: use {', '.join(map(repr, OBSERVERS))}.")
    if cfg.keep_worst < 0:
        raise QuantizeError("The number of layers to keep in float cannot be negative.")
    if cfg.keep_rank not in KEEP_RANKS:
        raise QuantizeError(f"Unknown ranking {cfg.keep_rank!r} for layers kept in float: use "
                            f"{' or '.join(map(repr, KEEP_RANKS))}.")
    if cfg.weight_bits not in (0, 7, 8):
        raise QuantizeError("ONNX Runtime INT8 weights are 8-bit or 7-bit (0 chooses per CPU).")
    if cfg.calibration < 1 and MODES[cfg.mode].calibrates:
        raise QuantizeError("Static quantization needs at least 1 calibration image (128 is a good start).")
    if cfg.mode == "qat" and cfg.qat_epochs < 1:
        raise QuantizeError("QAT needs at least 1 training epoch.")


def _gzip_len(data: bytes) -> int:
    from compress.measure import gzip_size
    return gzip_size(data)


def _torch_bytes(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def calibration_images(batches: Iterable, n: int) -> list[torch.Tensor]:
    """The first ``n`` images of ``batches`` (labels dropped), as batches."""
    out, seen = [], 0
    for b in batches:
        x = b[0] if isinstance(b, (tuple, list)) else b
        x = x[: n - seen]
        out.append(x)
        seen += len(x)
        if seen >= n:
            break
    if not out:
        raise QuantizeError("Static quantization needs calibration images: choose a dataset.")
    return out


# ------------------------------------------------------------------ PyTorch (torch.ao)

def _qconfig(cfg: QuantConfig):
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


def _static_torch(model, cfg, input_size, calib, on_progress) -> QuantizedModel:
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = cfg.backend
    qmap = QConfigMapping().set_global(_qconfig(cfg))
    for n in cfg.keep_float:
        qmap = qmap.set_module_name(n, None)
    work, _ = standard_convs(model, input_size)
    example = (torch.zeros(1, *input_size),)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = prepare_fx(work, qmap, example)     # fuses Conv-BN(-ReLU) for eval
    except Exception as e:
        raise QuantizeError(f"PyTorch could not trace this model for static INT8 "
                            f"({type(e).__name__}: {str(e)[:200]}). Try ort-int8.") from None
    with torch.no_grad():
        for i, x in enumerate(calib):
            emit(on_progress, "calibrate", i / len(calib), f"calibration batch {i + 1}/{len(calib)}")
            prepared(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = convert_fx(prepared)
    data = _torch_bytes(q)
    notes = [f"{len(cfg.keep_float)} layer(s) kept in float"] if cfg.keep_float else []
    notes += [c for c in [torch_int8_caveat(model)] if c]
    if cfg.backend == "qnnpack":
        notes.append("qnnpack is built for ARM; on an x86 machine its latency is not what a phone sees.")
    return QuantizedModel(q, "static", f"PyTorch INT8 ({cfg.backend})", len(data), _gzip_len(data),
                          torch.device("cpu"), notes)


def _dynamic_torch(model, cfg) -> QuantizedModel:
    from torch.ao.quantization import quantize_dynamic
    torch.backends.quantized.engine = cfg.backend
    work = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(work, {nn.Linear, nn.LSTM}, dtype=torch.qint8)
    data = _torch_bytes(q)
    conv = sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d) for p in m.parameters())
    total = sum(p.numel() for p in model.parameters())
    note = (f"{100 * conv / max(total, 1):.0f}% of this model's parameters are in convolutions, "
            "which dynamic INT8 leaves in float: expect little gain in size or speed.")
    return QuantizedModel(q, "dynamic", f"PyTorch dynamic INT8 ({cfg.backend})", len(data),
                          _gzip_len(data), torch.device("cpu"), [note])


def _half(model, cfg, device: torch.device) -> QuantizedModel:
    dtype = torch.float16 if cfg.mode == "fp16" else torch.bfloat16
    notes = []
    if device.type != "cuda":
        if not _cpu_has_native_bf16():
            notes.append("This CPU has no native BF16 (AVX512-BF16 or AMX): BF16 is emulated "
                         "and is expected to be slower than FP32 here.")
    work = copy.deepcopy(model).eval().to(device=device, dtype=dtype)
    data = _torch_bytes(work)
    return QuantizedModel(_CastInput(work, dtype), cfg.mode, f"PyTorch eager {cfg.mode.upper()}", len(data),
                          _gzip_len(data), device, notes)


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def _cpu_has_native_bf16() -> bool:
    flags = _cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_vnni() -> bool:
    """x86 CPUs without VNNI multiply u8×s8 with a 16-bit saturating instruction, so 8-bit
    weights can overflow; 7-bit weights (reduce_range) avoid it. Measured here (AVX2, no
    VNNI): ONNX Runtime INT8 resnet18_cifar10 agreed with FP32 on 85% of images with full
    range and 99.5% with reduce_range."""
    flags = _cpu_flags()
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags


class _CastInput(nn.Module):
    """Feeds float images to a half-precision model and returns float32 logits."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def forward(self, x):
        return self.inner(x.to(self.dtype)).float()


# ------------------------------------------------------------------ ONNX Runtime

def export_onnx(model: nn.Module, input_size, opset: int = 17) -> bytes:
    """The model as ONNX bytes with a dynamic batch axis (TorchScript-based exporter)."""
    buf = io.BytesIO()
    x = torch.zeros(1, *input_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(copy.deepcopy(model).cpu().eval(), (x,), buf, dynamo=False,
                              input_names=["images"], output_names=["logits"], opset_version=opset,
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    except Exception as e:
        raise QuantizeError(f"ONNX export failed: {type(e).__name__}: {str(e)[:300]}") from None
    return buf.getvalue()


class OrtModel(nn.Module):
    """An ONNX Runtime session behind a module's interface: float tensor in, float logits out.

    Latency measured through it is ONNX Runtime's (the numpy conversion costs microseconds).
    """

    def __init__(self, onnx_bytes: bytes, threads: Optional[int] = None):
        super().__init__()
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # ONNX Runtime's worker threads spin for a while after each run by default, which
        # steals the cores from whatever runs next (PyTorch, timed in the same loop, ran
        # 2-10x slower beside a spinning session). Idle threads sleep instead.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.onnx_bytes = onnx_bytes
        self.session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x):
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(out)


def _ort(model, cfg, input_size, calib, on_progress) -> QuantizedModel:
    emit(on_progress, "export", 0.0, "exporting to ONNX")
    fp32 = export_onnx(model, input_size)
    if cfg.mode == "ort-fp32":
        return QuantizedModel(OrtModel(fp32), "ort-fp32", "ONNX Runtime FP32", len(fp32), _gzip_len(fp32),
                              torch.device("cpu"), onnx=fp32)
    import tempfile
    from pathlib import Path
    from onnxruntime.quantization.shape_inference import quant_pre_process
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
            emit(on_progress, "calibrate", 0.1 + 0.8 * i / len(variants),
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
    return QuantizedModel(OrtModel(int8), "ort-int8", "ONNX Runtime INT8 (QDQ)", len(int8),
                          _gzip_len(int8), torch.device("cpu"), notes, onnx=int8, ort_variant=v)


@dataclass(frozen=True)
class OrtVariant:
    """One way to make ONNX Runtime INT8: the weights' width and the activation ranges."""
    reduce_range: bool                 # 7-bit weights (the AVX2 saturation workaround)
    observer: str                      # "minmax" or "histogram" (percentile 99.999)

    @property
    def label(self) -> str:
        ranges = "min/max ranges" if self.observer == "minmax" else "percentile ranges"
        return f"{7 if self.reduce_range else 8}-bit weights, {ranges}"


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


# ------------------------------------------------------------------ PyTorch 2 export quantization (x86)

class InductorModel(nn.Module):
    """A PT2E-quantized graph compiled by TorchInductor with freezing, which lowers its
    quantize/dequantize patterns to oneDNN INT8 kernels (without freezing the graph runs
    reference ops in float). The graph has a fixed batch of 1, so a batch runs image by
    image, and it is compiled on the first call (tens of seconds; once per model)."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        self.graph_module = graph
        object.__setattr__(self, "_compiled", None)     # not a submodule: eval()/copies skip it

    def forward(self, x):
        import torch._inductor.config as inductor
        with inductor.patch(freezing=True), torch.no_grad():
            if self._compiled is None:
                object.__setattr__(self, "_compiled", torch.compile(self.graph_module))
            x = x.detach().cpu().float()
            return torch.cat([self._compiled(x[i:i + 1]) for i in range(len(x))])

    def __deepcopy__(self, memo):
        return InductorModel(copy.deepcopy(self.graph_module, memo))


def _drop_unused_tensors(graph: torch.fx.GraphModule) -> None:
    """Delete the parameters and buffers no node reads: after ``convert_pt2e`` the graph
    reads INT8 copies of the weights, and the float originals would otherwise be saved too
    (5x the bytes)."""
    used = {n.target for n in graph.graph.nodes if n.op == "get_attr"}
    for name, _ in list(graph.named_parameters()) + list(graph.named_buffers()):
        if name not in used:
            parent, _, leaf = name.rpartition(".")
            owner = graph.get_submodule(parent) if parent else graph
            owner._parameters.pop(leaf, None)
            owner._buffers.pop(leaf, None)


def _pt2e(model, cfg, input_size, calib, on_progress) -> QuantizedModel:
    """PyTorch 2 export quantization for x86: ``torch.export`` (strict, so a ReLU module
    called twice per block is two partitions), torchao's ``X86InductorQuantizer``
    (per-channel 8-bit weights, histogram-calibrated 8-bit activations; 7-bit activations
    on a CPU without VNNI, as torch.ao does), ``convert_pt2e``, then TorchInductor. This is
    the path that replaces torch.ao's FX quantization (``static``), which PyTorch has
    deprecated. If any of it fails (no C++ compiler for Inductor, an untraceable model) the
    FX path runs instead and the notes say why."""
    import time as _time
    t0 = _time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
            from torchao.quantization.pt2e import allow_exported_model_train_eval
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            work, _ = standard_convs(model, input_size)
            example = (torch.zeros(1, *input_size),)
            graph = torch.export.export(work, example, strict=True).module()
            quantizer = xiq.X86InductorQuantizer().set_global(
                xiq.get_default_x86_inductor_quantization_config(reduce_range=not cpu_has_vnni()))
            for n in cfg.keep_float:
                quantizer.set_module_name_qconfig(n, None)
            prepared = prepare_pt2e(graph, quantizer)
            n_cal, done = sum(len(x) for x in calib), 0
            with torch.no_grad():
                for x in calib:
                    for i in range(len(x)):
                        prepared(x[i:i + 1])
                    done += len(x)
                    emit(on_progress, "calibrate", 0.8 * done / n_cal, f"calibrated on {done}/{n_cal} images")
            converted = convert_pt2e(prepared)
            _drop_unused_tensors(converted)
            allow_exported_model_train_eval(converted)
            buf = io.BytesIO()
            torch.export.save(torch.export.export(converted, example), buf)
            data = buf.getvalue()
            emit(on_progress, "compile", 0.85, "compiling with TorchInductor (once per model)")
            compiled = InductorModel(converted)
            compiled(example[0])
    except Exception as e:  # noqa: BLE001 - fall back to FX, and say why
        from dataclasses import replace
        q = _static_torch(model, replace(cfg, mode="static"), input_size, calib, on_progress)
        q.notes.insert(0, f"PyTorch 2 export quantization failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:160] if str(e) else ''}); torch.ao FX static INT8 was used.")
        return q
    notes = [f"PyTorch 2 export quantization (X86InductorQuantizer), compiled by TorchInductor: "
             f"{_time.perf_counter() - t0:.0f} s including calibration; batch 1 graph"]
    if cfg.keep_float:
        notes.append(f"{len(cfg.keep_float)} layer(s) kept in float")
    return QuantizedModel(compiled, "pt2e", "PyTorch INT8 (PT2E, Inductor)", len(data), _gzip_len(data),
                          torch.device("cpu"), notes, pt2=data)


# ------------------------------------------------------------------ ExecuTorch (PT2E + XNNPACK)

class ExecuTorchModel(nn.Module):
    """An ExecuTorch program behind a module's interface, run by the ExecuTorch runtime
    with its XNNPACK kernels (the CPU backend phones use; it has x86 kernels too). The
    program has a fixed batch of 1, so a batch runs image by image."""

    def __init__(self, pte: bytes):
        super().__init__()
        from executorch.runtime import Runtime
        # the method reads the program's memory: both must live as long as it does (a
        # dropped Program or buffer crashed the runtime with a segfault)
        object.__setattr__(self, "_pte", bytes(pte))
        object.__setattr__(self, "_program", Runtime.get().load_program(self._pte))
        object.__setattr__(self, "method", self._program.load_method("forward"))

    def forward(self, x):
        x = x.detach().cpu().float()
        return torch.cat([self.method.execute([x[i:i + 1].contiguous()])[0] for i in range(len(x))])


def _executorch(model, cfg, input_size, calib, on_progress) -> QuantizedModel:
    """``et-fp32``: the float model as an ExecuTorch XNNPACK program. ``et-int8``: PyTorch 2
    export quantization (PT2E, torchao's ``prepare_pt2e``/``convert_pt2e``) with
    ExecuTorch's ``XNNPACKQuantizer`` (per-channel symmetric 8-bit weights, 8-bit
    activations), calibrated on the photos, then lowered to XNNPACK: the path that replaces
    torch.ao's FX quantization, and the same file a phone runs."""
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise QuantizeError("ExecuTorch is not installed: pip install -r requirements.txt") from None
    example = (torch.zeros(1, *input_size),)
    work = copy.deepcopy(model).cpu().eval()
    notes = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if cfg.mode == "et-int8":
                from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                    XNNPACKQuantizer, get_symmetric_quantization_config)
                from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
                # strict export records one source per call of a module: torchvision's ResNet
                # calls one ReLU module twice per block, and the non-strict default groups both
                # calls into one partition, which PT2E quantizers reject
                graph = torch.export.export(work, example, strict=True).module()
                quantizer = XNNPACKQuantizer().set_global(
                    get_symmetric_quantization_config(is_per_channel=cfg.per_channel))
                for n in cfg.keep_float:
                    quantizer.set_module_name(n, None)
                prepared = prepare_pt2e(graph, quantizer)
                n_cal = sum(len(x) for x in calib)
                done = 0
                with torch.no_grad():
                    for x in calib:
                        for i in range(len(x)):
                            prepared(x[i:i + 1])
                        done += len(x)
                        emit(on_progress, "calibrate", done / n_cal, f"calibrated on {done}/{n_cal} images")
                work = convert_pt2e(prepared)
                if cfg.keep_float:
                    notes.append(f"{len(cfg.keep_float)} layer(s) kept in float")
            emit(on_progress, "export", 0.9, "lowering to ExecuTorch (XNNPACK)")
            program = torch.export.export(work, example)
            pte = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    except Exception as e:  # noqa: BLE001 - any export/quantizer failure becomes a plain message
        raise QuantizeError(f"ExecuTorch could not take this model ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''}). Try ort-int8.") from None
    runtime = "ExecuTorch INT8 (XNNPACK)" if cfg.mode == "et-int8" else "ExecuTorch FP32 (XNNPACK)"
    notes.append("batch 1: an ExecuTorch program has a fixed input shape")
    return QuantizedModel(ExecuTorchModel(pte), cfg.mode, runtime, len(pte), _gzip_len(pte), torch.device("cpu"),
                          notes, pte=pte)


# ------------------------------------------------------------------ the one entry point

def _qat(model, cfg, input_size, train_batches, on_progress, cancel) -> QuantizedModel:
    """Fake-quant fine-tuning with the project's one training loop, then convert to INT8."""
    from torch.ao.quantization import QConfigMapping, get_default_qat_qconfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx
    from compress.train import TrainConfig, fit
    from compress.distill import _has_labels
    if train_batches is None:
        raise QuantizeError("QAT fine-tunes on labelled training photos: give a training set.")
    if not _has_labels(train_batches):
        raise QuantizeError("QAT fine-tunes on labelled training photos; these have no labels. Give one "
                            "sub-folder per class, a labels.csv, or a CIFAR-10 tarball.")
    torch.backends.quantized.engine = cfg.backend
    qmap = QConfigMapping().set_global(get_default_qat_qconfig(cfg.backend))
    for n in cfg.keep_float:
        qmap = qmap.set_module_name(n, None)
    work = standard_convs(model, input_size)[0].train()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = prepare_qat_fx(work, qmap, (torch.zeros(1, *input_size),))
    except Exception as e:
        raise QuantizeError(f"PyTorch could not trace this model for QAT "
                            f"({type(e).__name__}: {str(e)[:200]}).") from None
    # A trained model's BatchNorm statistics are better than those of a few QAT batches:
    # keep them frozen (PyTorch's QAT recipe freezes them after the first epochs).
    import torch.ao.nn.intrinsic.qat as nniqat
    prepared.apply(nniqat.freeze_bn_stats)
    tcfg = TrainConfig(epochs=cfg.qat_epochs, lr=cfg.qat_lr, optimizer="sgd", weight_decay=0.0,
                       warmup_epochs=0.0, amp=False, channels_last=False)
    fit(prepared, train_batches, tcfg, torch.device("cpu"), on_progress=on_progress, cancel=cancel)
    prepared.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = convert_fx(prepared)
    data = _torch_bytes(q)
    return QuantizedModel(q, "qat", f"PyTorch INT8 ({cfg.backend}, QAT)", len(data), _gzip_len(data),
                          torch.device("cpu"), [f"{cfg.qat_epochs} QAT epoch(s) at lr {cfg.qat_lr}"])


def quantize(model: nn.Module, cfg: QuantConfig, input_size, calibration: Optional[Iterable] = None,
             device: Optional[torch.device] = None,
             on_progress: Optional[OnProgress] = None, train_batches: Optional[Iterable] = None,
             cancel=None) -> QuantizedModel:
    """Quantize a copy of ``model`` (the caller's model is not changed).

    ``calibration``: batches of real images (labels ignored), kept apart from the images
    accuracy is measured on; the first ``cfg.calibration`` images are used.
    ``train_batches``: labelled training batches, for ``qat`` only.
    """
    device = device or torch.device("cpu")
    validate(model, cfg, device)
    calib = None
    if MODES[cfg.mode].calibrates:
        if calibration is None:
            raise QuantizeError(f"{cfg.mode} learns activation ranges from real images: choose a "
                                "dataset (its calibration images are kept apart from evaluation).")
        calib = calibration_images(calibration, cfg.calibration)
    notes = []
    if cfg.equalize and cfg.mode in INT8_MODES:
        from compress.equalize import equalize
        model, report = equalize(model)
        notes.append(report.summary())
    if cfg.bias_correction and cfg.mode in INT8_MODES and calib is not None:
        from compress.equalize import correct_bias
        model, n = correct_bias(model, calib)
        notes.append(f"bias correction on {n} layer(s): the mean output shift of 8-bit weights, measured on "
                     f"{sum(len(x) for x in calib)} calibration photos, taken out of their biases")
    if cfg.keep_worst > 0 and cfg.mode in INT8_MODES:
        if calib is None:
            raise QuantizeError("Ranking layers by quantization error needs calibration images.")
        from dataclasses import replace
        by_sqnr = [e.layer for e in sorted(layer_sqnr(model, calib), key=lambda e: e.sqnr_db)
                   if e.layer not in cfg.keep_float]
        if cfg.keep_rank == "accuracy":
            q, worst, note = _keep_by_accuracy(model, cfg, input_size, calib, device, by_sqnr, on_progress,
                                               train_batches, cancel)
            q.notes = notes + [note] + q.notes
            return q
        worst = by_sqnr[:cfg.keep_worst]
        cfg = replace(cfg, keep_float=tuple(dict.fromkeys(cfg.keep_float + tuple(worst))))
        notes.append(f"kept in float (lowest SQNR): {', '.join(worst)}")
    q = _dispatch(model, cfg, input_size, calib, device, on_progress, train_batches, cancel)
    q.notes = notes + q.notes
    return q


def logits(model: nn.Module, batches) -> torch.Tensor:
    """``model``'s float logits for every image of ``batches`` (CPU, no gradients)."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x).float().cpu() for x in batches])


def closeness(reference: torch.Tensor, out: torch.Tensor) -> tuple[float, float]:
    """(share of top-1 answers equal to the reference's, mean |logit difference|): how
    close a quantized model stays to its float original on the same images."""
    return float((reference.argmax(1) == out.argmax(1)).float().mean()), float((reference - out).abs().mean())


def _keep_by_accuracy(model, cfg, input_size, calib, device, by_sqnr, on_progress, train_batches, cancel):
    """Keep-K-in-float ranked by measured closeness to FP32, as NNCF's accuracy control
    and AIMET's AutoQuant rank by a measured metric rather than a proxy.

    The 3K lowest-SQNR layers (at least 4, at most 12) are the candidates. The model is
    quantized once with all layers in 8 bits and once per candidate with that layer alone
    in float; each is compared with FP32 on the calibration photos (top-1 agreement, then
    mean logit error). The K candidates whose float copy helped most are kept, and the
    result is quantized with them. ONNX Runtime's settings (weight width, ranges) are fixed
    first, by the all-8-bit quantization, so every candidate is compared on equal terms."""
    from dataclasses import replace
    base = _dispatch(model, cfg, input_size, calib, device, None, train_batches, cancel)
    fixed = cfg
    if base.ort_variant is not None:
        v = base.ort_variant
        fixed = replace(cfg, observer=v.observer, weight_bits=7 if v.reduce_range else 8)
    reference = logits(model, calib)
    base_score = closeness(reference, logits(base.model, calib))
    candidates = by_sqnr[:min(12, max(4, 3 * cfg.keep_worst))]
    scored = []
    for i, layer in enumerate(candidates):
        emit(on_progress, "rank", i / len(candidates), f"quantizing with {layer} in float ({i + 1}/{len(candidates)})")
        if cancel is not None and cancel():
            raise QuantizeError("Cancelled while ranking layers.")
        trial = _dispatch(model, replace(fixed, keep_float=cfg.keep_float + (layer,)), input_size, calib, device,
                          None, train_batches, cancel)
        scored.append((layer, closeness(reference, logits(trial.model, calib))))
    scored.sort(key=lambda t: (-t[1][0], t[1][1]))
    worst = [layer for layer, _ in scored[:cfg.keep_worst]]
    q = _dispatch(model, replace(fixed, keep_float=tuple(dict.fromkeys(cfg.keep_float + tuple(worst)))),
                  input_size, calib, device, on_progress, train_batches, cancel)
    final = closeness(reference, logits(q.model, calib))
    note = (f"kept in float (ranked by measured agreement with FP32 on {sum(len(x) for x in calib)} calibration "
            f"photos, {len(candidates)} candidates): {', '.join(worst)}; agreement {100 * base_score[0]:.1f}% "
            f"with every layer in 8 bits, {100 * final[0]:.1f}% with these in float")
    return q, worst, note


def _dispatch(model, cfg, input_size, calib, device, on_progress, train_batches, cancel) -> QuantizedModel:
    return MODES[cfg.mode].handler(model, cfg, input_size, calib, device, on_progress, train_batches, cancel)


@dataclass(frozen=True)
class QuantMode:
    """One quantize mode: its registry entry. Validation, the CLI's choices, recipes and
    the Quantize page all read these."""
    name: str
    description: str
    calibrates: bool                   # learns activation ranges from real photos
    trains: bool                       # fine-tunes on labelled training photos
    devices: tuple[str, ...]           # device types it runs on
    device_note: str                   # what to say on another device
    handler: Callable                  # (model, cfg, input_size, calib, device, on_progress, train, cancel)
    float_twin: Optional[str] = None   # the FP32 mode in the same runtime: the fair baseline for speed


INT8_MODES = ("static", "pt2e", "ort-int8", "qat", "et-int8")     # the modes that round weights and activations to 8 bits
_CPU_ONLY = "runs on the CPU; choose fp16 or bf16 for the GPU."
MODES: dict[str, QuantMode] = {m.name: m for m in (
    QuantMode("dynamic", "Dynamic INT8: only fully-connected weights become 8-bit. Does little for "
              "image CNNs, whose work is in convolutions.", False, False, ("cpu",), f"dynamic {_CPU_ONLY}",
              lambda m, c, i, cal, d, p, t, x: _dynamic_torch(m, c)),
    QuantMode("pt2e", "PyTorch 2 INT8 (PT2E + TorchInductor): weights and activations in 8-bit, ranges "
              "learned from a few real photos, compiled for x86. PyTorch's current INT8 path; compiling "
              "takes tens of seconds once.", True, False, ("cpu",), f"pt2e {_CPU_ONLY}",
              lambda m, c, i, cal, d, p, t, x: _pt2e(m, c, i, cal, p)),
    QuantMode("static", "Static INT8 (PyTorch torch.ao FX, deprecated by PyTorch): weights and activations "
              "in 8-bit, ranges learned from a few real photos. Fast for ResNet-style networks, slow and "
              "inaccurate for depthwise ones. qnnpack (ARM) kernels are here.", True, False, ("cpu",),
              f"static {_CPU_ONLY}", lambda m, c, i, cal, d, p, t, x: _static_torch(m, c, i, cal, p)),
    QuantMode("ort-fp32", "ONNX Runtime FP32: the same float model in a faster inference engine. Not a "
              "quantization: the fair float baseline for ONNX Runtime INT8.", False, False, ("cpu",),
              f"ort-fp32 {_CPU_ONLY}", lambda m, c, i, cal, d, p, t, x: _ort(m, c, i, cal, p)),
    QuantMode("ort-int8", "ONNX Runtime INT8: static 8-bit in ONNX Runtime, calibrated on the same "
              "photos. Often the fastest CPU path.", True, False, ("cpu",), f"ort-int8 {_CPU_ONLY}",
              lambda m, c, i, cal, d, p, t, x: _ort(m, c, i, cal, p), float_twin="ort-fp32"),
    QuantMode("et-fp32", "ExecuTorch FP32 (XNNPACK): the float model as an ExecuTorch program, the format "
              "phones run. Not a quantization: the fair float baseline for ExecuTorch INT8.", False, False,
              ("cpu",), f"et-fp32 {_CPU_ONLY}", lambda m, c, i, cal, d, p, t, x: _executorch(m, c, i, cal, p)),
    QuantMode("et-int8", "ExecuTorch INT8 (XNNPACK): PyTorch 2 export quantization calibrated on the same "
              "photos, lowered to XNNPACK. The INT8 file for phones; timed here on this CPU.", True, False,
              ("cpu",), f"et-int8 {_CPU_ONLY}", lambda m, c, i, cal, d, p, t, x: _executorch(m, c, i, cal, p),
              float_twin="et-fp32"),
    QuantMode("qat", "Quantization-aware training: fine-tune with 8-bit rounding simulated, then convert "
              "to static INT8. Recovers accuracy that plain static INT8 loses; needs training photos.",
              False, True, ("cpu",), f"qat {_CPU_ONLY}",
              lambda m, c, i, cal, d, p, t, x: _qat(m, c, i, t, p, x)),
    QuantMode("fp16", "Half precision (FP16): 2× smaller, faster on NVIDIA GPUs. Needs CUDA.", False, False,
              ("cuda",), "FP16 runs fast only on a CUDA GPU, and there is none here (choose bf16, static "
              "INT8 or ort-int8 for a CPU).", lambda m, c, i, cal, d, p, t, x: _half(m, c, d)),
    QuantMode("bf16", "Bfloat16: 2× smaller; fast on GPUs and on CPUs with native BF16 (AVX512-BF16/AMX).",
              False, False, ("cpu", "cuda"), "bf16 runs on the CPU or a CUDA GPU.",
              lambda m, c, i, cal, d, p, t, x: _half(m, c, d)),
)}


def profile_quantized(q: QuantizedModel, reference: nn.Module, name: str, input_size,
                      batch: int = 1, runs: int = 50, warmup: int = 10, threads: Optional[int] = None,
                      eval_batches: Optional[list] = None, weights: str = "",
                      on_progress: Optional[OnProgress] = None, latency: bool = True, eval_source: str = "",
                      class_names=()):
    """A Profile of a quantized model, measured in the runtime that executes it.

    Params and MACs are the float reference's (quantization keeps every weight and every
    multiply, in fewer bits); bytes are the quantized file's own; latency and accuracy
    come from running ``q.model``; agreement compares its top-1 with the reference's.
    """
    from compress.measure import (Profile, count_macs, count_params, evaluate, measure_latency,
                                  measure_peak_memory, top1_agreement)
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


# ------------------------------------------------------------------ per-layer error

@dataclass
class LayerError:
    layer: str
    sqnr_db: float          # 10·log10(signal power / quantization-noise power); higher is better
    params: int


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
