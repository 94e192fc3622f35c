"""What the Classify and Explore pages say about one photo: which model runs where, each
model's answer and time, whether they agree, and how the saliency maps were made."""
from __future__ import annotations

import torch

from compress import saliency
from compress.report.speed import photo_speed


def device_of(model) -> torch.device:
    """Where ``model`` runs: a runtime wrapper's own device (INT8 and ONNX Runtime models run
    on the CPU), else its parameters' device (the CPU for a model without parameters)."""
    device = getattr(model, "device", None)
    if device is not None:
        return device
    return next(model.parameters(), torch.zeros(0)).device


def photo_models(original, current, device: torch.device) -> list[tuple]:
    """(title, module, device) of the models that classify a photo: the original on the
    chosen device and, when there is one, the current compressed model (a Point) where its
    runtime runs (quantized) or on the chosen device."""
    models = [("Original", original, device)]
    if current is not None:
        models.append((f"Compressed: {current.label}", current.module,
                       device_of(current.model) if current.quantized else device))
    return models


def run_and_original(original, name: str, module) -> list[tuple]:
    """(title, module, device) of the original where it lives and of a run's saved model,
    which loads onto the CPU."""
    return [("Original", original, device_of(original)), (name, module, torch.device("cpu"))]


def prediction_caption(pred, in_turn: bool) -> str:
    """How one model's time for the photo was taken."""
    return (f"{pred.ms:.2f} ms for this photo on {pred.device}: median of {pred.runs} runs, "
            + ("timed in turn with the other model, " if in_turn else "")
            + "model only (preprocessing excluded), batch 1.")


def verdict(original, compressed, speed) -> tuple[bool, str]:
    """(do the two models agree, the sentence saying so with their speed on this photo)."""
    tail = photo_speed(speed)
    if original.indices[0] != compressed.indices[0]:
        return False, (f"The two models disagree: the original says **{original.labels[0]}**, the compressed "
                       f"model says **{compressed.labels[0]}**.{tail}")
    return True, f"Both models say **{original.labels[0]}**.{tail}"


def answer(pred) -> str:
    """One model's answer in a line (or why it could not answer)."""
    return pred if isinstance(pred, str) else f"**{pred.labels[0]}** ({100 * pred.probs[0]:.1f}%), {pred.ms:.2f} ms"


def saliency_caption(maps: list) -> str:
    """How the saliency maps were made, and why both are occlusion maps when they are."""
    return (f"Method: {maps[0].note}. Red = most important; the grey border is the part "
            "of the photo the model never sees (it is cropped away)."
            + (" Both models are explained by occlusion, because the compressed model "
               "has no gradients (INT8 or ONNX Runtime)." if maps[0].method == saliency.OCCLUSION else ""))
