"""Turning an uploaded file into a model input, and classifying it.

Accepted: JPEG, PNG, WebP, BMP, TIFF, GIF (anything Pillow decodes), including grayscale,
palette, RGBA, CMYK, 16-bit and float, animated (first frame) and EXIF-rotated images. Rejected with :class:`ImageError`:
non-images, truncated files and images over ``MAX_PIXELS``.
"""
from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from compress.errors import ImageError
from compress.timing import time_interleaved

MAX_PIXELS = 50_000_000          # 50 megapixels
MAX_BYTES = 200 * 1024 * 1024


def read_image(data: bytes, name: str = "upload") -> Image.Image:
    """Decode ``data`` into an upright RGB image, or raise ImageError with the reason."""
    if not data:
        raise ImageError(f"{name} is empty.")
    if len(data) > MAX_BYTES:
        raise ImageError(f"{name} is {len(data) / 1e6:.0f} MB; the limit is {MAX_BYTES / 1e6:.0f} MB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))       # reads the header only
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"{name} is {w}x{h} = {w * h / 1e6:.0f} megapixels; the limit is "
                                 f"{MAX_PIXELS / 1e6:.0f} megapixels. Downscale it first.")
            im.load()                               # decodes; raises on truncation
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} has more than {Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; the limit "
                         f"is {MAX_PIXELS / 1e6:.0f} megapixels. Downscale it first.") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image Pillow can read (JPEG, PNG, WebP or BMP expected).") from None
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, struct.error…
        raise ImageError(f"{name} is damaged or truncated and cannot be decoded ({e}).") from None
    return to_rgb(im)


def _to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float image as 8-bit grayscale, scaled by its bit depth
    (Pillow's own convert clips values above 255, so a 16-bit photo turns white)."""
    import numpy as np
    a = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        top = 1.0 if a.size and float(np.nanmax(a)) <= 1.0 else max(float(np.nanmax(a)) if a.size else 1.0, 1.0)
    elif im.mode.startswith("I;16") or (a.size and float(a.max()) <= 65535 and float(a.max()) > 255):
        top = 65535.0
    else:
        top = max(float(a.max()) if a.size else 255.0, 255.0)
    a = np.nan_to_num(a, nan=0.0).clip(0, top) * (255.0 / top)
    return Image.fromarray(a.round().astype(np.uint8), mode="L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any decoded image as upright 8-bit RGB, the way a person sees it: EXIF rotation
    applied, the first frame of an animation, transparency over white, 16-bit and float
    images scaled (not clipped), CMYK/palette/LA converted."""
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _to_8bit(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def open_image_file(path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A file from a dataset as upright RGB, or ImageError naming the file and the reason
    (not an image, damaged, or more pixels than ``max_pixels``, checked from the header
    before anything is decoded)."""
    name = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # the size check below names it
            with Image.open(path) as im:               # reads the header only
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(f"{name} is {w}x{h} = {w * h / 1e6:.0f} megapixels; the limit is "
                                     f"{max_pixels / 1e6:.0f} megapixels (a decompression bomb, or a photo "
                                     "to downscale). Remove it from the folder.")
                im.load()
                return to_rgb(im)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} has more than {Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (a "
                         "decompression bomb?). Remove it from the folder.") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image Pillow can read.") from None
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, struct.error…
        raise ImageError(f"{name} is damaged or truncated and cannot be decoded "
                         f"({type(e).__name__}: {str(e)[:120]}).") from None


@dataclass
class Prediction:
    labels: list[str]
    probs: list[float]
    indices: list[int]
    ms: float                  # median wall time of the forward pass for this image
    device: str
    runs: int = 1              # timed runs behind ``ms`` (after one warm-up run)


@torch.inference_mode()
def classify(model: torch.nn.Module, image: Image.Image, transform, categories,
             device: torch.device, k: int = 5, runs: int = 5) -> Prediction:
    """Top-k classes of one image. ``ms`` is the median time of the model alone
    (preprocessing excluded) over ``runs`` passes after one warm-up pass."""
    import statistics
    model = model.to(device).eval()
    x = transform(image).unsqueeze(0).to(device)
    logits = model(x)                          # warm-up: first-call allocations, lazy init
    times = []
    for _ in range(max(1, runs)):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        logits = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    ms = statistics.median(times)
    probs = torch.softmax(logits.float(), dim=1)[0]
    k = min(k, probs.numel())
    top = probs.topk(k)
    idx = top.indices.tolist()
    names = [categories[i] if i < len(categories) else f"class {i}" for i in idx]
    return Prediction(names, top.values.tolist(), idx, ms, str(device), max(1, runs))


@dataclass
class SideBySide:
    """Several models on one photo: each one's answer (or why it could not answer), and
    how many times faster the last one ran than the first, timed in turn on this photo."""
    names: list[str]
    predictions: list          # a Prediction, or a str saying why that model could not answer
    speed: object = None       # measure.Speedup of the first model against the last, or None


def classify_side_by_side(models, image: Image.Image, transform, categories, runs: int = 15,
                          warmup: int = 3) -> SideBySide:
    """Classify ``image`` with each of ``models`` ((name, module, device)); then time the
    ones that answered in one interleaved loop (``runs`` rounds after ``warmup``), so both
    see the same machine load. Each Prediction's ``ms`` is its median from that loop."""
    preds: list = []
    for name, model, device in models:
        try:
            preds.append(classify(model, image, transform, categories, device, runs=1))
        except Exception as e:  # noqa: BLE001 - a model that cannot run here is a message, not a crash
            preds.append(f"{name} could not classify this photo: {type(e).__name__}: {str(e)[:300]}")
    ok = [(n, m, d) for (n, m, d), p in zip(models, preds) if not isinstance(p, str)]
    speed = None
    if ok:
        shape = tuple(transform(image).shape)
        timing = time_interleaved(ok, shape, runs=runs, warmup=warmup)
        for (name, _, _), p in zip(models, preds):
            if not isinstance(p, str):
                p.ms, p.runs = timing.latency[name].median, runs
        if len(ok) >= 2:
            speed = timing.speedup(ok[0][0], ok[-1][0], "total")
    return SideBySide([n for n, _, _ in models], preds, speed)
