"""Sensitivity scans: prune one group or stage at a time at each ratio, without training,
and measure top-1, so a user sees which parts of a network can be pruned harder.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from compress.errors import PruneError
from compress.measure import count_macs, evaluate
from compress.progress import Cancel, Cancelled, OnProgress, emit
from compress.prune.structured import StructuredConfig, importance_report, run_steps

SENSITIVITY_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class SensitivityRow:
    unit: str                      # a group's root layer, or a stage
    ratio: float
    top1: float                    # percent, on the images given
    n: int
    ci95: tuple[float, float]
    macs_fraction: float           # MACs after / MACs before


@dataclass
class SensitivityTable:
    criterion: str
    unit: str                                  # "group" or "stage"
    baseline_top1: float
    baseline_ci95: tuple[float, float]
    n: int
    rows: list[SensitivityRow]
    cached: bool = False
    reestimate_bn: bool = False                # each pruned model's BatchNorm statistics were re-estimated

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "SensitivityTable":
        rows = [SensitivityRow(**{**r, "ci95": tuple(r["ci95"])}) for r in d["rows"]]
        return cls(**{**d, "rows": rows, "baseline_ci95": tuple(d["baseline_ci95"])})


def _stages(roots: list[str]) -> dict[str, str]:
    """A network's stages: its top-level children (ResNet: layer1..layer4); a container
    holding more than half of the groups is split one level down (MobileNet's features.N,
    EfficientNet's _blocks.N)."""
    tops = [r.split(".")[0] for r in roots]
    out = {}
    for r, t in zip(roots, tops):
        big = tops.count(t) > len(roots) / 2 and r.count(".") >= 1
        out[r] = ".".join(r.split(".")[:2]) if big else t
    return out


def sensitivity_units(model: nn.Module, input_size, unit: str = "group",
                      protected: Optional[tuple[str, ...]] = None) -> dict[str, tuple[str, ...]]:
    """The units a sensitivity scan prunes one at a time, in network order:
    ``{unit name: root layers}``."""
    rep = importance_report(model, StructuredConfig(ratio=0.5, protected=protected), input_size)
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    roots = sorted((g.root for g in rep.groups), key=lambda r: order.get(r, 0))
    if unit == "group":
        return {r: (r,) for r in roots}
    if unit != "stage":
        raise PruneError(f"Unknown sensitivity unit {unit!r}: use 'group' or 'stage'.")
    stages: dict[str, list[str]] = {}
    for r, st in _stages(roots).items():
        stages.setdefault(st, []).append(r)
    return {k: tuple(v) for k, v in stages.items()}


def _fingerprint(model: nn.Module, batches: list, extra: str) -> str:
    h = hashlib.sha1(extra.encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    for x, y in batches:
        h.update(x.contiguous().numpy().tobytes())
        h.update(y.contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def sensitivity(model: nn.Module, input_size, batches: list, criterion: str = "l1",
                unit: str = "group", ratios: tuple[float, ...] = SENSITIVITY_RATIOS,
                protected: Optional[tuple[str, ...]] = None, device=None,
                cache_dir: Optional[Path] = None, on_progress: Optional[OnProgress] = None,
                cancel: Optional[Cancel] = None, reestimate_bn: bool = True) -> SensitivityTable:
    """Prune each unit alone at each ratio (no training) and measure top-1 on ``batches``
    (a list of labelled (x, y) tensors from the scoring pool, kept small). With
    ``reestimate_bn`` each pruned model first gets its BatchNorm statistics re-estimated on
    the same photos, as a real prune does, so the scan ranks what users will get. Results
    are cached on disk, keyed by the weights, the images and the settings, so asking again
    costs nothing."""
    device = device or torch.device("cpu")
    batches = list(batches)
    if not batches:
        raise PruneError("Sensitivity analysis needs labelled images: choose a dataset first.")
    key = _fingerprint(model, batches, f"{criterion}|{unit}|{ratios}|{protected}|{input_size}|bn={reestimate_bn}")
    path = (cache_dir / f"sensitivity-{key}.json") if cache_dir else None
    if path is not None and path.is_file():
        table = SensitivityTable.from_json(json.loads(path.read_text()))
        table.cached = True
        return table
    units = sensitivity_units(model, input_size, unit, protected)
    base_macs = count_macs(model, input_size)
    base = evaluate(model, batches, device)
    rows = []
    total = len(units) * len(ratios)
    for i, (name, roots) in enumerate(units.items()):
        for j, r in enumerate(ratios):
            if cancel is not None and cancel.is_set():
                raise Cancelled("sensitivity analysis cancelled")
            emit(on_progress, "sensitivity", (i * len(ratios) + j) / total, f"{name} at {r:.1f}")
            cfg = StructuredConfig(ratio=r, criterion=criterion, only_layers=roots, protected=protected)
            pruned, _ = run_steps(model, cfg, input_size, batches, apply=True,
                                  bn_batches=batches if reestimate_bn else None)
            acc = evaluate(pruned, batches, device)
            rows.append(SensitivityRow(name, r, acc.top1, acc.n, acc.ci95,
                                       count_macs(pruned, input_size) / base_macs))
    emit(on_progress, "sensitivity", 1.0, "done")
    table = SensitivityTable(criterion, unit, base.top1, base.ci95, base.n, rows, reestimate_bn=reestimate_bn)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(table.to_json()))
    return table
