"""Classify page: upload or take a photo; the original and the current compressed model
classify it side by side, each with its time for this photo."""
from __future__ import annotations

import streamlit as st

from compress import charts, saliency
from compress.errors import CompressError
from compress.images import MAX_PIXELS, classify_side_by_side, read_image
from compress.report import BUSY, times_faster
from views.common import current, current_device, require_model

loaded = require_model()
spec = loaded.spec
st.title("Classify a photo")
st.caption(f"Model: {spec.name}. It knows {spec.num_classes} classes"
           + (f" ({', '.join(spec.categories)})." if spec.num_classes <= 20 else "."))

source = st.radio("Photo from", ["Upload", "Camera"], horizontal=True, key="photo_source")
if source == "Upload":
    photo = st.file_uploader("JPEG, PNG, WebP or BMP, up to 50 megapixels",
                             type=["jpg", "jpeg", "png", "webp", "bmp"], key="photo")
else:
    photo = st.camera_input("Take a photo", key="camera")

if photo is not None:
    device = current_device()
    try:
        image = read_image(photo.getvalue(), photo.name or "photo")
    except CompressError as e:
        st.error(str(e))
        st.stop()
    if device is not None:
        comp = current()
        models = [("Original", loaded.model, device)]
        if comp is not None:
            # a quantized model runs where its runtime runs (CPU for INT8 and ONNX Runtime)
            models.append((f"Compressed: {comp.label}", comp.module,
                           getattr(comp.model, "device", device) if comp.quantized else device))
        st.image(image, caption=f"{image.width}×{image.height}", width=320)
        side = classify_side_by_side(models, image, spec.preprocess.transform(), spec.categories)
        preds = []
        for i, (col, title, pred) in enumerate(zip(st.columns(len(models)), side.names, side.predictions)):
            if isinstance(pred, str):
                col.error(pred)
                continue
            preds.append(pred)
            col.markdown(f"#### {title}")
            col.markdown(f"**{pred.labels[0]}** ({100 * pred.probs[0]:.1f}%)")
            col.caption(f"{pred.ms:.2f} ms for this photo on {pred.device}: median of {pred.runs} runs, "
                        + ("timed in turn with the other model, " if len(models) > 1 else "")
                        + "model only (preprocessing excluded), batch 1.")
            col.plotly_chart(charts.topk_bars(pred, "Top-5 classes"), width="stretch", key=f"cls_{i}")
        if len(preds) == 2:
            a, b = preds
            sp = side.speed
            if sp is None:
                speed = ""
            elif sp.noisy:
                speed = f" Speed is not stated: {BUSY} ({sp.why})."
            else:
                speed = (f" On this photo the compressed model ran {times_faster(sp.ratio)} than the original "
                         f"(95% interval ×{sp.ci95[0]:.2f}–×{sp.ci95[1]:.2f} over {sp.pairs} rounds in turn).")
            if a.indices[0] != b.indices[0]:
                st.warning(f"The two models disagree: the original says **{a.labels[0]}**, the compressed "
                           f"model says **{b.labels[0]}**.{speed}")
            else:
                st.success(f"Both models say **{a.labels[0]}**.{speed}")
        elif comp is None:
            st.caption("Compress the model on the Prune, Distill or Quantize page to see its answer "
                       "next to the original's.")
        answered = [(title, module) for (title, module, _), pred in zip(models, side.predictions)
                    if not isinstance(pred, str)]
        if answered and st.toggle("Where does each model look? (saliency map)", key="saliency"):
            with st.spinner("Computing saliency maps…"):
                try:
                    maps = saliency.explain(answered, image, spec.preprocess, spec.categories)
                except CompressError as e:
                    st.error(str(e))
                    maps = []
            for col, (title, _), m in zip(st.columns(len(maps)) if maps else [], answered, maps):
                col.image(saliency.overlay(image, m), width="stretch",
                          caption=f"{title}: where it looks for '{m.label}' ({100 * m.prob:.0f}%)")
            if maps:
                st.caption(f"Method: {maps[0].note}. Red = most important; the grey border is the part "
                           "of the photo the model never sees (it is cropped away)."
                           + (" Both models are explained by occlusion, because the compressed model "
                              "has no gradients (INT8 or ONNX Runtime)." if maps[0].method == saliency.OCCLUSION
                              else ""))
            if len(maps) == 2:
                st.markdown("**Similarity of the two maps:** "
                            + saliency.similarity_words(saliency.similarity(*maps)))
        if not loaded.trained:
            st.warning("These predictions come from UNTRAINED weights and mean nothing.")
else:
    st.info(f"Upload a photo (at most {MAX_PIXELS / 1e6:.0f} megapixels) to see what the model thinks it is.")
