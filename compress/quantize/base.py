"""What every quantize backend shares: the config, the result, the registry of modes and
the one context object a handler takes.

A backend registers each of its modes next to its code, as torchao's
``register_quantize_module_handler`` does::

    @register("ort-int8", "ONNX Runtime INT8: ...", runtime=f"{ONNX_RUNTIME} INT8 (QDQ)",
              engine=ONNX_RUNTIME, artifact="onnx", calibrates=True, is_int8=True,
              float_twin="ort-fp32")
    def _ort_int8(ctx: QuantContext) -> QuantizedModel: ...

Validation, the CLI's choices, recipes, the pipeline and the Quantize page read the
entry (:data:`MODES`); nothing else compares a mode's name with a string.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from compress.checkpoint import ARTIFACT_KINDS
from compress.errors import DeviceError, QuantizeError
from compress.measure import gzip_size
from compress.progress import Cancel, OnProgress

BACKENDS = ("x86", "qnnpack")
KEEP_RANKS = {"sqnr": "simulated 8-bit error of each layer alone (seconds)",
              "accuracy": "measured: quantize with each candidate kept in float, keep those that help most "
                          "(one quantization per candidate)"}
OBSERVERS = {"auto": "try both, keep the one closer to FP32 (ONNX Runtime; PyTorch uses histogram)",
             "minmax": "smallest and largest value seen", "histogram": "a range that ignores rare outliers"}
CPU_ONLY = "runs on the CPU; choose fp16 or bf16 for the GPU."


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
    ort_variant: Optional[object] = None   # ONNX Runtime INT8: the settings chosen (an OrtVariant)
    pte: Optional[bytes] = None         # the ExecuTorch program, for ExecuTorch modes
    pt2: Optional[bytes] = None         # the torch.export program (.pt2), for pt2e

    @property
    def artifact(self) -> str:
        """The kind of file a run saves for this model (a key of compress.checkpoint's
        ARTIFACT_KINDS), as its mode names it."""
        return MODES[self.mode].artifact


@dataclass(frozen=True)
class QuantMode:
    """One quantize mode: its registry entry."""
    name: str
    description: str
    handler: Callable[["QuantContext"], QuantizedModel]
    runtime: str                       # label of the runtime that runs it; "{backend}" is filled in
    engine: str                        # the runtime family (compress.runtimes: PYTORCH, ONNX_RUNTIME, EXECUTORCH)
    artifact: str = "torchscript"      # the file a run saves: a key of compress.checkpoint.ARTIFACT_KINDS
    calibrates: bool = False           # learns activation ranges from real photos
    trains: bool = False               # fine-tunes on labelled training photos
    is_int8: bool = False              # rounds weights and activations to 8 bits (CLE, bias correction,
    #                                    keep-K-in-float apply)
    devices: tuple[str, ...] = ("cpu",)   # device types it runs on
    device_note: str = ""              # what to say on another device
    float_twin: Optional[str] = None   # the FP32 mode in the same runtime: the fair baseline for speed
    yardstick: bool = False            # a float baseline measured beside every set of variants
    caveat: Optional[Callable[[nn.Module], Optional[str]]] = None   # a warning for a model, before waiting
    order: int = 0                     # where it is listed (CLI choices, the Quantize page)

    def runtime_label(self, cfg: QuantConfig) -> str:
        return self.runtime.format(backend=cfg.backend)


MODES: dict[str, QuantMode] = {}


def register(name: str, description: str, *, runtime: str, engine: str, order: int, **fields) -> Callable:
    """Decorator: register the handler below as quantize mode ``name`` (fields of
    :class:`QuantMode`). A handler may be registered under several names."""
    def add(handler: Callable) -> Callable:
        if name in MODES:
            raise ValueError(f"quantize mode {name!r} is registered twice")
        entry = QuantMode(name, description, handler, runtime, engine, order=order,
                          device_note=fields.pop("device_note", f"{name} {CPU_ONLY}"), **fields)
        if entry.artifact not in ARTIFACT_KINDS:
            raise ValueError(f"quantize mode {name!r}: unknown artifact kind {entry.artifact!r}")
        listed = sorted([*MODES.values(), entry], key=lambda m: m.order)
        MODES.clear()
        MODES.update((m.name, m) for m in listed)
        return handler
    return add


@dataclass
class QuantContext:
    """Everything a handler gets: the float model (not changed), the settings, and the
    run's surroundings."""
    model: nn.Module
    cfg: QuantConfig
    input_size: tuple
    calib: Optional[list] = None                # calibration batches (images only)
    device: torch.device = torch.device("cpu")
    on_progress: Optional[OnProgress] = None
    train_batches: Optional[Iterable] = None    # labelled batches, for modes that train
    cancel: Optional[Cancel] = None             # anything with is_set()

    @property
    def mode(self) -> QuantMode:
        return MODES[self.cfg.mode]

    def evolve(self, **changes) -> "QuantContext":
        """A copy with other fields; ``cfg=`` replaces the settings, other keys that are
        settings change only those (e.g. ``keep_float=...``)."""
        cfg_changes = {k: changes.pop(k) for k in list(changes) if k in QuantConfig.__dataclass_fields__}
        ctx = replace(self, **changes)
        return replace(ctx, cfg=replace(ctx.cfg, **cfg_changes)) if cfg_changes else ctx

    def result(self, model: nn.Module, data: bytes, notes: Iterable[str] = (), **kw) -> QuantizedModel:
        """The QuantizedModel of this context's mode: ``data`` is the runtime's own file."""
        return QuantizedModel(model, self.cfg.mode, self.mode.runtime_label(self.cfg), len(data),
                              gzip_len(data), kw.pop("device", torch.device("cpu")), list(notes), **kw)


def dispatch(ctx: QuantContext) -> QuantizedModel:
    return ctx.mode.handler(ctx)


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
    if MODES[cfg.mode].trains and cfg.qat_epochs < 1:
        raise QuantizeError("QAT needs at least 1 training epoch.")


def reference_modes(modes: Iterable[str]) -> list[str]:
    """The float baselines to measure beside ``modes`` (not results, yardsticks): every
    yardstick mode, then the float twin of each mode, once each."""
    chosen = list(modes)
    out = [m.name for m in MODES.values() if m.yardstick]
    out += [MODES[m].float_twin for m in chosen if m in MODES and MODES[m].float_twin is not None]
    return list(dict.fromkeys(out))


def caveats(model: nn.Module, modes: Iterable[str]) -> list[str]:
    """What to tell a user about ``model`` before they wait for ``modes`` (each once)."""
    said = [MODES[m].caveat(model) for m in modes if m in MODES and MODES[m].caveat is not None]
    return list(dict.fromkeys(c for c in said if c))


# ------------------------------------------------------------------ small shared helpers

def gzip_len(data: bytes) -> int:
    return gzip_size(data)


def torch_bytes(model: nn.Module) -> bytes:
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


def logits(model: nn.Module, batches) -> torch.Tensor:
    """``model``'s float logits for every image of ``batches`` (CPU, no gradients)."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x).float().cpu() for x in batches])


def closeness(reference: torch.Tensor, out: torch.Tensor) -> tuple[float, float]:
    """(share of top-1 answers equal to the reference's, mean |logit difference|): how
    close a quantized model stays to its float original on the same images."""
    return float((reference.argmax(1) == out.argmax(1)).float().mean()), float((reference - out).abs().mean())


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_has_native_bf16() -> bool:
    flags = _cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_vnni() -> bool:
    """x86 CPUs without VNNI multiply u8×s8 with a 16-bit saturating instruction, so 8-bit
    weights can overflow; 7-bit weights (reduce_range) avoid it. Measured here (AVX2, no
    VNNI): ONNX Runtime INT8 resnet18_cifar10 agreed with FP32 on 85% of images with full
    range and 99.5% with reduce_range."""
    flags = _cpu_flags()
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags
