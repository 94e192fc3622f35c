"""Reading torch.save files safely: ``torch.load(weights_only=True)`` with a plain message
for every bad file, and a pickled model told apart (by reading its opcodes, never running
them) so the user can choose to trust it; state_dicts fitted to an architecture."""
from __future__ import annotations

import os
import pickletools
import zipfile
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from compress.errors import ArchitectureMismatch, CheckpointError, UntrustedPickle
from compress.zoo import ARCHITECTURES

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C          # the first pickle of a pre-1.6 torch.save file
CLASSIFIER_KEYS = ("fc.weight", "classifier.3.weight", "classifier.weight", "_fc.weight", "head.weight")


def _legacy_globals(p: Path) -> Optional[list[str]]:
    """The classes and functions a pre-1.6 (non-zip) torch.save file refers to, read without
    running it (``pickletools``); None when the file is not such a checkpoint."""
    try:
        with open(p, "rb") as f:
            ops = list(pickletools.genops(f))          # the first pickle: the magic number
            if not any(op.name in ("LONG1", "LONG4", "LONG") and arg == LEGACY_MAGIC for op, arg, _ in ops):
                return None
            found, strings = [], []
            for _ in range(3):                          # protocol version, sys info, the object
                for op, arg, _pos in pickletools.genops(f):
                    if op.name == "GLOBAL":
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
            return found
    except Exception:  # noqa: BLE001 - any parse failure means "not a legacy checkpoint"
        return None


def pickled_classes(p: Path) -> Optional[list[str]]:
    """Classes/functions a torch.save file needs that ``weights_only=True`` refuses, found by
    reading the pickle's opcodes without executing anything. None: not a torch.save file at
    all (random bytes, a plain pickle, a truncated archive)."""
    if zipfile.is_zipfile(p):
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(p)))
        except Exception:  # noqa: BLE001 - a damaged archive
            return None
    legacy = _legacy_globals(p)
    if legacy is None:
        return None
    from torch import _weights_only_unpickler as wu
    safe = set(wu._get_allowed_globals()) | set(wu._get_user_allowed_globals())
    return [g for g in legacy if g not in safe]


def unreadable(p: Path, e: Optional[BaseException] = None) -> CheckpointError:
    """The one message for a file that is not a checkpoint at all (the loader's own error
    text is long and about its internals, so it is not repeated)."""
    if not p.is_file() or p.stat().st_size == 0:
        what = "is empty (0 bytes)"
    elif zipfile.is_zipfile(p):
        what = "is a damaged or incomplete PyTorch archive"
    else:
        what = "is not a PyTorch, TorchScript or ONNX file (corrupt, truncated, or another format)"
    return CheckpointError(
        f"{p.name} {what}: not a readable checkpoint. Give a state_dict or project checkpoint "
        "saved with torch.save, a TorchScript file or an ONNX model.")


def first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def check_file(p: Path) -> None:
    if p.is_dir():
        raise CheckpointError(f"{p} is a folder, not a checkpoint file.")
    if not p.is_file():
        raise CheckpointError(f"Checkpoint {p} does not exist.")


def safe_torch_load(path: str | os.PathLike):
    """``torch.load(weights_only=True)``, turning every failure into a plain message.

    Only a real torch.save pickle that refers to classes beyond plain tensors (a pickled
    model object) is reported as :class:`UntrustedPickle` (which a user may choose to
    trust); anything else that fails is "not a readable checkpoint"."""
    p = Path(path)
    check_file(p)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        classes = pickled_classes(p)
        if classes:
            shown = ", ".join(classes[:3]) + (f" and {len(classes) - 3} more" if len(classes) > 3 else "")
            raise UntrustedPickle(
                f"{p.name} is a full pickled model, not plain weights: it refers to {shown}. Loading "
                "it runs code stored in the file. Only if you trust where it came from, tick 'I trust "
                "this file' (CLI: --trust-pickle).") from None
        raise unreadable(p, e) from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict with ``torch.load(weights_only=True)``; plain errors for bad files."""
    obj = safe_torch_load(path)
    state = unwrap_state_dict(obj)
    if state is None:
        raise CheckpointError(f"{path} does not hold a state_dict (found {type(obj).__name__}).")
    return state


def unwrap_state_dict(obj) -> Optional[dict[str, torch.Tensor]]:
    """Accept a bare state_dict or the common wrappers ({'state_dict': ...}, {'model': ...})."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) for k in obj) and all(torch.is_tensor(v) for v in obj.values()):
            prefix = "module."
            if all(k.startswith(prefix) for k in obj):
                obj = {k[len(prefix):]: v for k, v in obj.items()}
            return obj
    return None


def infer_num_classes(state: dict[str, torch.Tensor]) -> Optional[int]:
    for k in CLASSIFIER_KEYS:
        if k in state and state[k].ndim == 2:
            return int(state[k].shape[0])
    return None


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], arch: str,
                    num_classes: int, source: str) -> None:
    """Strict load with a message naming the mismatch (keys or shapes)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape_bad = [(k, tuple(state[k].shape), tuple(own[k].shape))
                 for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shape_bad:
        got_classes = infer_num_classes(state)
        if got_classes is not None and got_classes != num_classes and not missing and not unexpected:
            raise ArchitectureMismatch(
                f"{Path(source).name} has a {got_classes}-class classifier, but {arch} was asked "
                f"for with {num_classes} classes. Set the number of classes to {got_classes}.")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if shape_bad:
            k, a, b = shape_bad[0]
            parts.append(f"{len(shape_bad)} shape mismatches (e.g. {k}: file {a} vs model {b})")
        guess = guess_architecture(state)
        hint = f" It looks like a {guess} checkpoint." if guess and guess != arch else ""
        raise ArchitectureMismatch(
            f"{Path(source).name} does not fit {arch}: {'; '.join(parts)}.{hint}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def guess_architecture(state: dict[str, torch.Tensor]) -> Optional[str]:
    """Which known architecture these keys and shapes fit, if any."""
    n = infer_num_classes(state) or 1000
    for arch in ARCHITECTURES:
        try:
            with torch.device("meta"):      # shapes only: no memory, no initialisation
                own = ARCHITECTURES[arch](n).state_dict()
        except Exception:
            continue
        if set(own) == set(state) and all(own[k].shape == state[k].shape for k in own):
            return arch
    return None


def reshape_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Resize Conv2d / BatchNorm / Linear layers in place to the shapes in ``state``.

    A channel-pruned model differs from its architecture only in these shapes, so this
    rebuilds it from plain tensors (no pickled modules, ``weights_only=True`` safe).
    """
    for name, m in model.named_modules():
        w = state.get(f"{name}.weight" if name else "weight")
        if w is None or w.shape == getattr(m, "weight", torch.empty(0)).shape:
            continue
        if isinstance(m, nn.Conv2d):
            depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            m.out_channels = w.shape[0]
            if depthwise:
                m.groups = m.in_channels = w.shape[0]
            else:
                m.in_channels = w.shape[1] * m.groups
            m.weight = nn.Parameter(torch.empty_like(w, dtype=torch.float32))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(w.shape[0]))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = w.shape[0]
            m.num_features = c
            m.weight = nn.Parameter(torch.empty(c))
            m.bias = nn.Parameter(torch.empty(c))
            m.running_mean = torch.zeros(c)
            m.running_var = torch.ones(c)
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = w.shape
            m.weight = nn.Parameter(torch.empty_like(w, dtype=torch.float32))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(w.shape[0]))
    return model
