"""Classify photo files with any model the project can load: the ``predict`` command.

Each file is read the way a person sees it (:func:`compress.images.read_image`: EXIF
rotation, 16-bit and float images scaled, the first frame of an animation, transparency
over white); files that cannot be read get a message of their own and the rest are still
answered. Readable photos go through the model in batches.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

import torch

from compress.data.folders import is_hidden
from compress.errors import CompressError, ImageError
from compress.images import MAX_BYTES, read_image

PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff", ".gif")


def photo_files(args: Iterable[str | os.PathLike]) -> list[Path]:
    """The files to classify: each file as given, and every photo (by extension, hidden
    files skipped) under each folder, in sorted order. A path that does not exist is a
    CompressError."""
    out: list[Path] = []
    for a in args:
        p = Path(a).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in PHOTO_EXTENSIONS
                           and not is_hidden(f, p))
            if not found:
                raise CompressError(f"{p} holds no photos ({', '.join(PHOTO_EXTENSIONS)}).")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise CompressError(f"{p} does not exist.")
    if not out:
        raise CompressError("Give at least one photo file or folder.")
    return out


def _read(path: Path, transform) -> torch.Tensor:
    if not path.is_file():
        raise ImageError(f"{path.name} is not a file.")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ImageError(f"{path.name} is {size / 1e6:.0f} MB; the limit is {MAX_BYTES / 1e6:.0f} MB.")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path.name} cannot be read: {e.strerror or e}.") from None
    return transform(read_image(data, path.name))


@torch.inference_mode()
def predict_files(model: torch.nn.Module, spec, paths: list[Path], device: Optional[torch.device] = None,
                  topk: int = 5, batch_size: int = 32) -> list[dict]:
    """One entry per path, in order: ``{"file", "top": [{"index", "label", "prob"}, …]}``,
    or ``{"file", "error"}`` for a file that is not a usable photo."""
    device = device or torch.device("cpu")
    transform = spec.preprocess.transform()
    cats = spec.categories
    model = model.to(device).eval() if isinstance(model, torch.nn.Module) else model
    entries: list[dict] = []
    ready: list[tuple[int, torch.Tensor]] = []

    def flush():
        if not ready:
            return
        x = torch.stack([t for _, t in ready]).to(device)
        probs = torch.softmax(model(x).float().cpu(), dim=1)
        k = min(topk, probs.shape[1])
        top = probs.topk(k, dim=1)
        for (i, _), values, indices in zip(ready, top.values.tolist(), top.indices.tolist()):
            entries[i]["top"] = [{"index": int(c), "label": cats[c] if c < len(cats) else f"class {c}",
                                  "prob": round(float(v), 6)} for v, c in zip(values, indices)]
        ready.clear()

    for path in paths:
        entries.append({"file": str(path)})
        try:
            ready.append((len(entries) - 1, _read(path, transform)))
        except ImageError as e:
            entries[-1]["error"] = str(e)
        if len(ready) >= batch_size:
            flush()
    flush()
    return entries
