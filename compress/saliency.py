"""Where a model looks: saliency maps for one photo, for two models side by side.

Two methods, both from Captum (PyTorch's interpretability library):

- **Grad-CAM** (``captum.attr.LayerGradCam``) on the last layer with a spatial output, for
  float PyTorch models. It needs gradients.
- **Occlusion** (``captum.attr.Occlusion``): slide a grey patch (the dataset's mean colour)
  over the photo and record how much the answer's score (logit) drops. It needs only forward
  passes, so it works for INT8 PyTorch models and ONNX Runtime sessions, which have no
  gradients, and it explains the quantized model itself, not a float stand-in.

Two maps are compared only when made by the same method: when either model has no
gradients, both get occlusion. Each model's map explains its own top-1 answer.

Maps are returned at the photo's own size. The model sees only the centre crop of the
resized photo (``Preprocess``: resize the shorter side, centre crop); the map is placed on
that region and the rest of the photo, which the model never saw, is marked so (NaN in the
array, dimmed in the rendering).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from compress.errors import CompressError

GRAD_CAM = "Grad-CAM"
OCCLUSION = "occlusion"


class SaliencyError(CompressError):
    """A saliency map that cannot be made for this model or photo."""


@dataclass
class SaliencyMap:
    """One model's map for one photo.

    ``values``: float array of the photo's (height, width), 0..1 where the model looked
    (1 = most important), NaN outside the region the model sees. ``method`` says how it was
    made, ``target`` the class index it explains and ``label`` that class's name.
    """
    values: np.ndarray
    method: str
    target: int
    label: str
    prob: float
    crop_box: tuple[int, int, int, int]      # (left, top, right, bottom) in photo pixels
    note: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL gives sizes."""
        return self.values.shape[1], self.values.shape[0]


def has_gradients(model) -> bool:
    """True for a float PyTorch module that autograd can differentiate: not an ONNX Runtime
    session, not a quantized (INT8) module, and with floating-point parameters."""
    if not isinstance(model, nn.Module):
        return False
    if getattr(model, "session", None) is not None:          # quantize.OrtModel
        return False
    params = list(model.parameters())
    if not params or not all(p.dtype == torch.float32 for p in params):
        return False
    return not any(type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.nn.quantized",
                                                   "torch.ao.nn.intrinsic.quantized"))
                   for m in model.modules())


def last_spatial_layer(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The layer Grad-CAM reads: the module that finishes last with a 4-D feature map at least
    7 pixels wide, or an eighth of the input on small inputs (ImageNet ResNet: layer4, 7×7;
    a CIFAR ResNet, whose layer4 is 1×1: layer2, 4×4). Found by running
    ``x`` once with forward hooks on every module; a module called more than once in a
    forward pass (e.g. ResNet's shared ReLU) is skipped, as its hook would see two outputs."""
    order: list[nn.Module] = []
    calls: dict[int, int] = {}
    hooks = []

    least = max(2, min(7, min(x.shape[-2:]) // 8))

    def hook(mod, _inp, out):
        calls[id(mod)] = calls.get(id(mod), 0) + 1
        if isinstance(out, torch.Tensor) and out.dim() == 4 and min(out.shape[-2:]) >= least:
            order.append(mod)

    for m in model.modules():
        if m is not model:
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    once = [m for m in order if calls[id(m)] == 1]
    if not once:
        raise SaliencyError("This model has no layer with a spatial feature map, so Grad-CAM has "
                            "nothing to read; occlusion still works.")
    return once[-1]


def crop_box(width: int, height: int, resize: int, crop: int) -> tuple[int, int, int, int]:
    """The region of a ``width``×``height`` photo that ``Resize(resize)`` then
    ``CenterCrop(crop)`` keeps, in the photo's pixels (left, top, right, bottom)."""
    scale = resize / min(width, height)
    side = crop / scale
    sw, sh = min(width, round(side)), min(height, round(side))
    left, top = (width - sw) // 2, (height - sh) // 2
    return left, top, left + sw, top + sh


def _normalise(m: np.ndarray) -> np.ndarray:
    """Negative evidence clipped to 0, the peak scaled to 1 (NaN stays NaN)."""
    m = np.where(np.isnan(m), np.nan, np.maximum(m, 0))
    top = float(np.nanmax(m)) if np.isfinite(m).any() else 0.0
    return m / top if top > 0 else m


def _grad_cam(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    from captum.attr import LayerAttribution, LayerGradCam
    layer = last_spatial_layer(model, x)
    with torch.enable_grad():
        attr = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    up = LayerAttribution.interpolate(attr.detach(), tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return up[0, 0].float().cpu().numpy()


def occlusion_window(side: int) -> tuple[int, int]:
    """Patch side and stride for occlusion on a ``side``-pixel input: an eighth of the input
    (at least 4 pixels), moved by half a patch; 15×15 = 225 positions on 224 pixels."""
    win = max(4, side // 8)
    return win, max(1, win // 2)


def _occlusion(model, x: torch.Tensor, target: int) -> np.ndarray:
    from captum.attr import Occlusion
    win, stride = occlusion_window(min(x.shape[-2:]))

    def logits(batch):                    # the answer's score (a probability saturates near 1)
        with torch.no_grad():
            return model(batch).float()

    attr = Occlusion(logits).attribute(x, target=target, sliding_window_shapes=(3, win, win),
                                     strides=(3, stride, stride), baselines=0.0,
                                     perturbations_per_eval=16)
    return attr[0].sum(0).float().cpu().numpy()


def _place(m: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """``m`` (the model's input grid) resized onto ``box`` of a photo of ``size`` (w, h);
    NaN elsewhere."""
    w, h = size
    out = np.full((h, w), np.nan, dtype=np.float32)
    bw, bh = box[2] - box[0], box[3] - box[1]
    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[None, None]
    out[box[1]:box[3], box[0]:box[2]] = F.interpolate(t, size=(bh, bw), mode="bilinear",
                                                      align_corners=False)[0, 0].numpy()
    return out


def explain(models: Sequence[tuple[str, object]], image: Image.Image, preprocess, categories: Sequence[str],
            method: Optional[str] = None) -> list[SaliencyMap]:
    """One map per ``(name, model)`` for ``image``, all by the same method: Grad-CAM when every
    model has gradients, else occlusion (or ``method`` when given). Models run on the CPU
    (a copy of a GPU model is not made; move it first)."""
    x = preprocess.transform()(image).unsqueeze(0)
    grads = all(has_gradients(m) for _, m in models)
    method = method or (GRAD_CAM if grads else OCCLUSION)
    if method == GRAD_CAM and not grads:
        raise SaliencyError("Grad-CAM needs gradients, and an INT8 or ONNX Runtime model has none; "
                            "use occlusion.")
    if method not in (GRAD_CAM, OCCLUSION):
        raise SaliencyError(f"Unknown saliency method {method!r}: use {GRAD_CAM!r} or {OCCLUSION!r}.")
    box = crop_box(image.width, image.height, preprocess.resize, preprocess.crop)
    maps = []
    for name, model in models:
        if isinstance(model, nn.Module):
            model.eval()
        dev = next((p.device for p in model.parameters()), torch.device("cpu")) \
            if isinstance(model, nn.Module) else torch.device("cpu")
        xi = x.to(dev)
        with torch.no_grad():
            probs = torch.softmax(model(xi).float(), dim=1)[0].cpu()
        target = int(probs.argmax())
        raw = _grad_cam(model, xi, target) if method == GRAD_CAM else _occlusion(model, xi, target)
        label = categories[target] if target < len(categories) else f"class {target}"
        note = ("Grad-CAM: gradients of the answer's score at the last feature map" if method == GRAD_CAM
                else "occlusion (gradient-free): how much the answer's score drops when a grey "
                     f"{occlusion_window(x.shape[-1])[0]}-pixel patch covers each place")
        maps.append(SaliencyMap(_normalise(_place(raw, image.size, box)), method, target, label,
                                float(probs[target]), box, note))
    return maps


def similarity(a: SaliencyMap, b: SaliencyMap) -> float:
    """Pearson correlation of two maps over the region the models see: 1 when they rank the
    same places alike, about 0 when unrelated. NaN when either map is flat."""
    if a.values.shape != b.values.shape:
        raise SaliencyError("The two maps are for photos of different sizes.")
    seen = ~(np.isnan(a.values) | np.isnan(b.values))
    va, vb = a.values[seen].astype(np.float64), b.values[seen].astype(np.float64)
    if va.size < 2 or va.std() == 0 or vb.std() == 0:
        return float("nan")
    return float(np.corrcoef(va, vb)[0, 1])


def similarity_words(r: float) -> str:
    """The correlation in plain words, for the screen and the CLI."""
    if np.isnan(r):
        return "cannot be compared (one map is flat: nothing in the photo moved that model's answer)"
    kind = ("nearly the same places" if r >= 0.9 else "mostly the same places" if r >= 0.7
            else "partly the same places" if r >= 0.4 else "different places")
    return f"{r:.2f} (correlation of the two maps; 1 = identical): they look at {kind}"


def overlay(image: Image.Image, m: SaliencyMap, alpha: float = 0.5) -> Image.Image:
    """The photo with the map laid over it (jet colours, red = most important); the part the
    model never sees is dimmed to grey."""
    from matplotlib import colormaps
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    seen = ~np.isnan(m.values)
    heat = colormaps["jet"](np.nan_to_num(m.values))[..., :3].astype(np.float32)
    out = base.copy()
    out[seen] = (1 - alpha) * base[seen] + alpha * heat[seen]
    grey = base.mean(axis=2, keepdims=True)
    out[~seen] = (0.35 * grey + 0.65 * 0.5).repeat(3, axis=2)[~seen]
    return Image.fromarray((np.clip(out, 0, 1) * 255).astype(np.uint8))


def side_by_side(image: Image.Image, maps: Sequence[SaliencyMap], names: Sequence[str],
                 max_side: int = 512) -> Image.Image:
    """The overlays next to each other, each titled with its model, answer and method, as
    one picture (``predict --saliency`` writes it)."""
    from PIL import ImageDraw
    scale = min(1.0, max_side / max(image.size))
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    title = 36
    canvas = Image.new("RGB", (w * len(maps), h + title), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (m, name) in enumerate(zip(maps, names)):
        canvas.paste(overlay(image, m).resize((w, h), Image.Resampling.BILINEAR), (i * w, title))
        draw.text((i * w + 4, 2), f"{name}: {m.label} ({100 * m.prob:.0f}%)", fill="black")
        draw.text((i * w + 4, 18), m.method, fill="black")
    return canvas
