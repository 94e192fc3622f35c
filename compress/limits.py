"""The allowed range of every number a user can type: one table for the CLI's flags,
recipe files and the engine, so all three give the same message for the same mistake.

A value outside its range is a :class:`BadNumber` (a CompressError) that names the
setting, the range and the value, before any model runs.
"""
from __future__ import annotations

import math
from typing import Optional

from compress.errors import CompressError


class BadNumber(CompressError):
    """A number outside the range its setting allows."""


# name -> (lowest, highest, what it is); whole numbers unless the bounds are floats
BOUNDS: dict[str, tuple[float, float, str]] = {
    "batch": (1, 4096, "images per timed batch"),
    "runs": (1, 100_000, "timed runs for latency"),
    "warmup": (0, 10_000, "warm-up runs before timing"),
    "threads": (1, 1024, "CPU threads"),
    "limit": (1, 10_000_000, "images to evaluate on"),
    "train_limit": (1, 10_000_000, "training images"),
    "seed": (0, 2**32 - 1, "random seed"),
    "num_classes": (0, 100_000, "number of classes (0 = read from the file)"),
    "calibration": (1, 100_000, "calibration images"),
    "prune_steps": (1, 100, "pruning steps"),
    "round_to": (1, 512, "channel multiple"),
    "bn_images": (0, 100_000, "photos for BatchNorm re-estimation (0 = off)"),
    "keep_worst": (0, 1000, "layers kept in float"),
    "epochs": (1, 10_000, "training epochs"),
    "recover_epochs": (0, 200, "recovery epochs"),
    "recover_minutes": (0.05, 1440.0, "recovery budget in minutes"),
    "holdout": (0, 100_000, "training photos held out"),
    "qat_epochs": (1, 1000, "QAT epochs"),
    "batch_size": (1, 65_536, "training batch size"),
    "run_id": (1, 2**63 - 1, "run id"),
    "topk": (1, 1000, "classes to list per photo"),
    "prune_ratio": (0.0, 0.9, "channel ratio (or MACs/params saving)"),
    "unstructured_amount": (0.0, 0.95, "share of weights set to zero"),
    "lr": (1e-6, 1.0, "learning rate"),
    "temperature": (0.05, 100.0, "distillation temperature"),
    "alpha": (0.0, 1.0, "weight of the teacher's term"),
    "attention": (0.0, 100_000.0, "attention-transfer weight"),
    "warmup_epochs": (0.0, 200.0, "warm-up epochs"),
    "max_drop": (0.0, 100.0, "points of top-1 the model may lose"),
    "budget_minutes": (0.1, 10_000.0, "minutes the search may take"),
    "screen_images": (10, 100_000, "images each candidate is screened on"),
}


def check(name: str, value, where: Optional[str] = None):
    """``value`` if it is a number within ``BOUNDS[name]``, else BadNumber naming ``where``
    (default: the setting's name)."""
    lo, hi, what = BOUNDS[name]
    label = where or name
    whole = isinstance(lo, int) and isinstance(hi, int)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (whole and isinstance(value, float) and not value.is_integer()):
        got = "null" if value is None else repr(value)          # None comes from a recipe file's null
        raise BadNumber(f"{label}: expected {'a whole number' if whole else 'a number'} ({what}), got {got}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadNumber(f"{label}: {value} is not a usable {what}.")
    if not lo <= value <= hi:
        fmt = _whole if whole else (lambda x: f"{x:g}")
        raise BadNumber(f"{label}: {fmt(value)} is out of range for {what}; use {fmt(lo)} to {fmt(hi)}.")
    return int(value) if whole else float(value)


def _whole(x) -> str:
    """A whole number with thousands separators; one too long to read as its first digits
    and length (a Python int has no size limit, a recipe file's number neither)."""
    digits = int(x).bit_length() * 0.30103                 # about log10, without str() (4,300-digit limit)
    if digits > 24:
        return f"a number of about {digits:.0f} digits"
    return f"{int(x):,}"


def check_optional(name: str, value, where: Optional[str] = None):
    return None if value is None else check(name, value, where)
