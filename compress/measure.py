"""Measurements: the numbers every other page is judged by.

Every figure here is measured in this process, on this machine:

* params / nonzero params: counted from the model's tensors;
* size: the real bytes of ``torch.save(state_dict)`` (``torch.jit.save`` for TorchScript),
  plus the same bytes gzip-compressed (what a zip or app store download costs);
* MACs: ultralytics-thop at the model's input size, batch 1;
* latency: ``warmup`` untimed runs, then ``runs`` timed runs; median and p90 in ms, with
  batch, device and thread count (CUDA is synchronised around every run);
* peak memory: the allocator's peak during one forward pass (CUDA: max_memory_allocated;
  CPU: torch.profiler's memory events);
* accuracy: top-1/top-5 with n and a 95% Wilson interval, in percent.
"""
from __future__ import annotations

import copy
import gzip
import io
import math
import os
import uuid
from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from compress.errors import CacheError, DataError
from compress.paths import cache_dir
from compress.progress import Cancel, Cancelled, OnProgress, emit
from compress.runtimes import ONNX_RUNTIME, PYTORCH_EAGER
from compress.timing import Latency, measure_latency


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion, in percent."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (100 * max(0.0, centre - half), 100 * min(1.0, centre + half))


@dataclass
class Accuracy:
    top1: float                     # percent
    top5: Optional[float]           # percent (None with fewer than 5 classes)
    n: int
    ci95: tuple[float, float]       # Wilson interval of top-1, percent
    correct1: int = 0
    correct5: int = 0
    source: str = ""                # which images: the folder/tarball, or the bundled sample
    per_class: list = field(default_factory=list)   # {"class", "index", "n", "correct"}, by class index


@dataclass
class Profile:
    model: str
    params: int
    nonzero_params: int
    size_bytes: int
    size_gzip_bytes: int
    macs: Optional[int]
    input_size: tuple[int, int, int]
    latency_ms: Optional[Latency] = None
    peak_memory_bytes: Optional[int] = None
    accuracy: Optional[Accuracy] = None
    weights: str = ""
    notes: list[str] = field(default_factory=list)
    runtime: str = f"{PYTORCH_EAGER} FP32"   # what executed the model for latency/accuracy
    agreement_top1: Optional[float] = None   # % of images whose top-1 matches the float model
    # speed ratios from the interleaved loop this profile was timed in (Speedup JSONs):
    # role "total" (against the original), and for a model in another runtime "runtime"
    # (PyTorch -> that runtime, both FP32) and "compression" (within that runtime)
    speed: list[dict] = field(default_factory=list)
    # every evaluation image's top-1 class and its probability, in the order of the run's
    # data["files"] (what "what changed" compares between two models on the same images)
    per_image: Optional[dict] = None        # {"pred": [int], "prob": [float]}

    def to_json(self) -> dict:
        d = asdict(self)
        if self.latency_ms is not None:
            d["latency_ms"]["noisy"] = self.latency_ms.noisy
        if self.accuracy is not None:
            d["accuracy"]["ci95"] = list(self.accuracy.ci95)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Profile":
        """The inverse of :meth:`to_json` (history and recipes store profiles as JSON)."""
        d = dict(d)
        if d.get("latency_ms"):
            lat = {k: v for k, v in d["latency_ms"].items() if k != "noisy"}
            d["latency_ms"] = Latency(**lat)
        if d.get("accuracy"):
            a = dict(d["accuracy"])
            a["ci95"] = tuple(a["ci95"])
            d["accuracy"] = Accuracy(**a)
        d["input_size"] = tuple(d["input_size"])
        return cls(**d)


# ------------------------------------------------------------------ static counts

def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, nonzero parameters). An ONNX Runtime model counts its float weight
    initializers (an INT8 file holds integer weights: counted too, scales and zero points not)."""
    if getattr(model, "onnx_bytes", None) is not None:
        return _onnx_params(model.onnx_bytes)
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    return total, nonzero


def _onnx_params(data: bytes) -> tuple[int, int]:
    import numpy as np
    import onnx
    from onnx import numpy_helper
    total = nonzero = 0
    for init in onnx.load_from_string(data).graph.initializer:
        if len(init.dims) < 2:            # biases, scales, zero points: not weights
            continue
        a = numpy_helper.to_array(init)
        total += a.size
        nonzero += int(np.count_nonzero(a))
    return total, nonzero


def serialized_bytes(model: nn.Module) -> bytes:
    """The model's file: TorchScript, the ONNX file of an ONNX Runtime model, else the
    state_dict as torch.save writes it."""
    if getattr(model, "onnx_bytes", None) is not None:
        return model.onnx_bytes
    buf = io.BytesIO()
    if isinstance(model, torch.jit.ScriptModule):
        torch.jit.save(model, buf)
    else:
        torch.save(model.state_dict(), buf)
    return buf.getvalue()


_GZIP_SIZES = "gzip-sizes.json"


def gzip_size(raw: bytes) -> int:
    """Bytes of ``raw`` after gzip level 6 (what a download costs).

    Compressing a ResNet18's 45 MB takes seconds on a small CPU, and the same files (the
    original model, a run's start model) are sized again and again, so sizes are kept in a
    small table in the cache folder, keyed by the bytes' SHA-256 (a tenth of a second)."""
    import hashlib
    import json
    if len(raw) < 1 << 20:                      # small files: compressing is cheaper than the table
        return len(gzip.compress(raw, compresslevel=6))
    key = hashlib.sha256(raw).hexdigest()
    try:
        path = cache_dir() / _GZIP_SIZES
        table = json.loads(path.read_text())
    except CacheError:                          # no cache folder: size it every time
        return len(gzip.compress(raw, compresslevel=6))
    except (OSError, ValueError):
        table = {}
    if key in table:
        return int(table[key])
    n = len(gzip.compress(raw, compresslevel=6))
    table = dict(list(table.items())[-999:]) if isinstance(table, dict) else {}
    table[key] = n
    tmp = path.with_name(f"{_GZIP_SIZES}.{os.getpid()}.{uuid.uuid4().hex[:6]}")
    try:
        tmp.write_text(json.dumps(table))
        os.replace(tmp, path)                   # atomic: a reader sees the old table or the new one
    except OSError:
        pass
    return n


def serialized_size(model: nn.Module) -> tuple[int, int]:
    """(bytes of the saved file, bytes after gzip level 6)."""
    raw = serialized_bytes(model)
    return len(raw), gzip_size(raw)


def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> Optional[int]:
    """Multiply-accumulates for one image, counted by ultralytics-thop (None for TorchScript
    and ONNX Runtime models, which thop cannot walk)."""
    if isinstance(model, torch.jit.ScriptModule) or getattr(model, "onnx_bytes", None) is not None:
        return None
    import thop
    m = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        macs, _ = thop.profile(m, inputs=(torch.zeros(1, *input_size),), verbose=False)
    return int(macs)


@dataclass
class LayerRow:
    name: str
    type: str
    in_channels: Optional[int]
    out_channels: Optional[int]
    kernel: str
    params: int
    macs: int


def layer_table(model: nn.Module, input_size: tuple[int, int, int]) -> list[LayerRow]:
    """One row per leaf layer that has parameters or MACs, in execution-graph order.

    MACs per layer come from thop's per-layer report, so the rows add up to ``count_macs``.
    """
    import thop
    m = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        _, _, info = thop.profile(m, inputs=(torch.zeros(1, *input_size),), verbose=False,
                                  ret_layer_info=True)
    macs_by_name: dict[str, float] = {}

    def walk(prefix: str, d: dict):
        for k, (ops, _params, sub) in d.items():
            name = f"{prefix}.{k}" if prefix else k
            macs_by_name[name] = ops
            if sub:
                walk(name, sub)
    walk("", info)
    rows = []
    for name, mod in model.named_modules():
        # A row is a leaf, or a layer with weights of its own that also has children (e.g.
        # a Conv2d subclass holding its padding module): thop counts it as a whole.
        params = sum(p.numel() for p in mod.parameters(recurse=False))
        if list(mod.children()) and params == 0:
            continue
        macs = int(macs_by_name.get(name, 0))
        if params == 0 and macs == 0:
            continue
        cin = getattr(mod, "in_channels", getattr(mod, "in_features", getattr(mod, "num_features", None)))
        cout = getattr(mod, "out_channels", getattr(mod, "out_features", getattr(mod, "num_features", None)))
        k = getattr(mod, "kernel_size", None)
        kernel = "x".join(map(str, k)) if isinstance(k, tuple) else ("" if k is None else str(k))
        groups = getattr(mod, "groups", 1)
        if groups and groups > 1:
            kernel += f" (groups={groups})"
        rows.append(LayerRow(name, type(mod).__name__, cin, cout, kernel, params, macs))
    return rows


def measure_peak_memory(model: nn.Module, input_size: tuple[int, int, int],
                        device: torch.device, batch: int = 1) -> Optional[int]:
    """Peak bytes the allocator held during one forward pass, above what was held before.

    On CUDA this is ``max_memory_allocated``; on CPU it is the running sum of
    torch.profiler's allocation/free events, i.e. activations and workspaces (weights
    already allocated are not counted).
    """
    model = model.to(device).eval()
    x = torch.randn(batch, *input_size, device=device)
    with torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            model(x)
            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated(device) - base)
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            model(x)
    # Ops report the bytes they allocated (self, excluding children); "[memory]" events
    # report frees that happen between ops. Their running sum in time order is the live
    # allocation; its maximum is the peak.
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    if not events:
        return None
    current = peak = 0
    for e in events:
        current += e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        peak = max(peak, current)
    return int(peak)


# ------------------------------------------------------------------ accuracy

@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, device: torch.device, total: Optional[int] = None,
             on_progress: Optional[OnProgress] = None, cancel: Optional[Cancel] = None,
             predictions: Optional[list] = None, per_image: Optional[dict] = None,
             class_names: Sequence[str] = ()) -> Accuracy:
    """Top-1/top-5 over labelled batches (labels < 0 are skipped), with a 95% interval and
    per-class counts (named by ``class_names`` where given). ``predictions``, when given,
    is extended with every image's top-1 class; ``per_image`` (a dict) gets "pred" and
    "prob": every image's top-1 class and its softmax probability, in batch order."""
    model = model.to(device).eval()
    c1 = c5 = n = 0
    num_classes = None
    per_class: dict[int, list[int]] = {}
    if per_image is not None:
        per_image.setdefault("pred", [])
        per_image.setdefault("prob", [])
    for i, (x, y) in enumerate(batches):
        if cancel is not None and cancel.is_set():
            raise Cancelled("evaluation cancelled")
        x, y = x.to(device), y.to(device)
        logits = model(x)
        num_classes = logits.shape[1]
        if predictions is not None:
            predictions.extend(logits.argmax(1).tolist())
        if per_image is not None:
            prob, pred = torch.softmax(logits.float(), dim=1).max(dim=1)
            per_image["pred"].extend(pred.tolist())
            per_image["prob"].extend(round(float(p), 4) for p in prob)
        for label, hit in zip(y.tolist(), (logits.argmax(1) == y).tolist()):
            if label >= 0:
                counts = per_class.setdefault(int(label), [0, 0])
                counts[0] += 1
                counts[1] += int(hit)
        keep = y >= 0
        logits, y = logits[keep], y[keep]
        k = min(5, num_classes)
        top = logits.topk(k, dim=1).indices
        c1 += int((top[:, 0] == y).sum())
        c5 += int((top == y[:, None]).any(dim=1).sum())
        n += int(y.numel())
        if total:
            emit(on_progress, "accuracy", min(1.0, n / total), f"evaluated {n}/{total} images")
    if n == 0:
        raise DataError("The dataset has no labelled images to measure accuracy on.")
    lo, hi = wilson_interval(c1, n)
    top5 = 100.0 * c5 / n if (num_classes or 0) >= 5 else None
    classes = [{"class": class_names[k] if k < len(class_names) else str(k), "index": k, "n": v[0],
                "correct": v[1]} for k, v in sorted(per_class.items())]
    return Accuracy(top1=100.0 * c1 / n, top5=top5, n=n, ci95=(lo, hi), correct1=c1, correct5=c5,
                    per_class=classes)


# ------------------------------------------------------------------ all together

def profile_model(model: nn.Module, name: str, input_size: tuple[int, int, int],
                  device: torch.device, batch: int = 1, runs: int = 50, warmup: int = 10,
                  threads: Optional[int] = None, eval_batches: Optional[Iterable] = None,
                  eval_total: Optional[int] = None, weights: str = "",
                  on_progress: Optional[OnProgress] = None,
                  cancel: Optional[Cancel] = None, latency: bool = True, eval_source: str = "",
                  class_names: Sequence[str] = ()) -> Profile:
    """Measure everything about one model. The model is not changed (it is moved to ``device``).
    ``latency=False`` leaves the timing to the caller (the pipeline times the models it
    compares together, with :func:`time_interleaved`)."""
    emit(on_progress, "static", 0.0, "counting parameters, bytes and MACs")
    params, nonzero = count_params(model)
    size, size_gz = serialized_size(model)
    macs = count_macs(model, input_size)
    lat = measure_latency(model, input_size, device, batch=batch, warmup=warmup, runs=runs,
                          threads=threads, on_progress=on_progress, cancel=cancel) if latency else None
    ort = getattr(model, "onnx_bytes", None) is not None     # ONNX Runtime's memory is its own
    mem = None if ort else measure_peak_memory(model, input_size, device, batch=batch)
    acc = per_image = None
    if eval_batches is not None:
        per_image = {}
        acc = evaluate(model, eval_batches, device, total=eval_total, on_progress=on_progress,
                       cancel=cancel, per_image=per_image, class_names=class_names)
        acc.source = eval_source
    emit(on_progress, "done", 1.0, "profile complete")
    return Profile(model=name, params=params, nonzero_params=nonzero, size_bytes=size,
                   size_gzip_bytes=size_gz, macs=macs, input_size=tuple(input_size),
                   latency_ms=lat, peak_memory_bytes=mem, accuracy=acc, weights=weights, per_image=per_image,
                   **({"runtime": ONNX_RUNTIME} if ort else {}))


def top1_agreement(reference: nn.Module, predictions: list, batches: Iterable) -> float:
    """Percent of images on which ``predictions`` (top-1 classes, in batch order, as
    :func:`evaluate` collects them) match ``reference``'s top-1 on the CPU."""
    ref: list = []
    with torch.no_grad():
        reference = reference.cpu().eval()
        for x, _ in batches:
            ref.extend(reference(x.cpu()).argmax(1).tolist())
    if len(ref) != len(predictions):
        raise ValueError("predictions and batches differ in length")
    return 100.0 * sum(a == b for a, b in zip(ref, predictions)) / max(len(ref), 1)
