"""Mixed precision: keep the K layers that lose most in 8 bits in float, ranked by
simulated error (``keep_rank="sqnr"``, seconds) or by measured agreement with FP32
(``keep_rank="accuracy"``, one quantization per candidate)."""
from __future__ import annotations

from compress.errors import QuantizeError
from compress.progress import Cancelled, emit
from compress.quantize.base import QuantContext, QuantizedModel, closeness, dispatch, logits
from compress.quantize.sqnr import layer_sqnr


def keep_worst(ctx: QuantContext, notes: list[str]) -> QuantizedModel:
    """Quantize ``ctx`` with its ``keep_worst`` lowest-ranked layers also kept in float;
    ``notes`` (from the float rewrites before) lead the result's notes."""
    cfg = ctx.cfg
    if ctx.calib is None:
        raise QuantizeError("Ranking layers by quantization error needs calibration images.")
    by_sqnr = [e.layer for e in sorted(layer_sqnr(ctx.model, ctx.calib), key=lambda e: e.sqnr_db)
               if e.layer not in cfg.keep_float]
    if cfg.keep_rank == "accuracy":
        q, _, note = keep_by_accuracy(ctx, by_sqnr)
        q.notes = notes + [note] + q.notes
        return q
    worst = by_sqnr[:cfg.keep_worst]
    q = dispatch(ctx.evolve(keep_float=tuple(dict.fromkeys(cfg.keep_float + tuple(worst)))))
    q.notes = notes + [f"kept in float (lowest SQNR): {', '.join(worst)}"] + q.notes
    return q


def keep_by_accuracy(ctx: QuantContext, by_sqnr: list[str]) -> tuple[QuantizedModel, list[str], str]:
    """Keep-K-in-float ranked by measured closeness to FP32, as NNCF's accuracy control
    and AIMET's AutoQuant rank by a measured metric rather than a proxy.

    The 3K lowest-SQNR layers (at least 4, at most 12) are the candidates. The model is
    quantized once with all layers in 8 bits and once per candidate with that layer alone
    in float; each is compared with FP32 on the calibration photos (top-1 agreement, then
    mean logit error). The K candidates whose float copy helped most are kept, and the
    result is quantized with them. ONNX Runtime's settings (weight width, ranges) are fixed
    first, by the all-8-bit quantization, so every candidate is compared on equal terms.
    ``ctx.cancel`` (anything with ``is_set()``) is checked before each candidate."""
    cfg, calib = ctx.cfg, ctx.calib
    quiet = ctx.evolve(on_progress=None)
    base = dispatch(quiet)
    fixed = quiet if base.ort_variant is None else quiet.evolve(**base.ort_variant.settings())
    reference = logits(ctx.model, calib)
    base_score = closeness(reference, logits(base.model, calib))
    candidates = by_sqnr[:min(12, max(4, 3 * cfg.keep_worst))]
    scored = []
    for i, layer in enumerate(candidates):
        emit(ctx.on_progress, "rank", i / len(candidates),
             f"quantizing with {layer} in float ({i + 1}/{len(candidates)})")
        if ctx.cancel is not None and ctx.cancel.is_set():
            raise Cancelled(f"quantization cancelled while ranking layers to keep in float "
                            f"({i} of {len(candidates)} candidates measured)")
        trial = dispatch(fixed.evolve(keep_float=cfg.keep_float + (layer,)))
        scored.append((layer, closeness(reference, logits(trial.model, calib))))
    scored.sort(key=lambda t: (-t[1][0], t[1][1]))
    worst = [layer for layer, _ in scored[:cfg.keep_worst]]
    q = dispatch(fixed.evolve(on_progress=ctx.on_progress,
                              keep_float=tuple(dict.fromkeys(cfg.keep_float + tuple(worst)))))
    final = closeness(reference, logits(q.model, calib))
    note = (f"kept in float (ranked by measured agreement with FP32 on {sum(len(x) for x in calib)} calibration "
            f"photos, {len(candidates)} candidates): {', '.join(worst)}; agreement {100 * base_score[0]:.1f}% "
            f"with every layer in 8 bits, {100 * final[0]:.1f}% with these in float")
    return q, worst, note
