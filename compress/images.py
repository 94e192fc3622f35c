"""Turning an uploaded file into a model input, and classifying it.

Accepted: JPEG, PNG, WebP, BMP (anything Pillow decodes), including grayscale,
palette, RGBA, CMYK and EXIF-rotated images. Rejected with :class:`ImageError`:
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
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name} is damaged or truncated and cannot be decoded ({e}).") from None
    im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


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
