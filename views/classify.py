"""Classify page: upload or take a photo; the original and the current compressed model
classify it side by side, each with its time for this photo."""
from __future__ import annotations

import streamlit as st

from compress import charts, saliency
from compress.errors import CompressError
from compress.images import MAX_PIXELS, classify_side_by_side, read_image
from compress.report import photo as photo_report
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
        models = photo_report.photo_models(loaded.model, comp, device)
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
            col.caption(photo_report.prediction_caption(pred, len(models) > 1))
            col.plotly_chart(charts.topk_bars(pred, "Top-5 classes"), width="stretch", key=f"cls_{i}")
        if len(preds) == 2:
            agree, words = photo_report.verdict(*preds, side.speed)
            (st.success if agree else st.warning)(words)
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
                st.caption(photo_report.saliency_caption(maps))
            if len(maps) == 2:
                st.markdown("**Similarity of the two maps:** "
                            + saliency.similarity_words(saliency.similarity(*maps)))
        if not loaded.trained:
            st.warning("These predictions come from UNTRAINED weights and mean nothing.")
else:
    st.info(f"Upload a photo (at most {MAX_PIXELS / 1e6:.0f} megapixels) to see what the model thinks it is.")
