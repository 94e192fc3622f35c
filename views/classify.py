"""Classify page: upload or take a photo; the original and the current compressed model
classify it side by side, each with its time for this photo."""
from __future__ import annotations

import streamlit as st

from compress import charts
from compress.errors import CompressError
from compress.images import MAX_PIXELS, classify, read_image
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
        preds = []
        for col, (title, model, dev) in zip(st.columns(len(models)), models):
            try:
                pred = classify(model, image, spec.preprocess.transform(), spec.categories, dev)
            except Exception as e:  # noqa: BLE001 - a model that cannot run here is a message
                col.error(f"{title} could not classify this photo: {type(e).__name__}: {e}")
                continue
            preds.append(pred)
            col.markdown(f"#### {title}")
            col.markdown(f"**{pred.labels[0]}** ({100 * pred.probs[0]:.1f}%)")
            col.caption(f"{pred.ms:.2f} ms for this photo on {pred.device}: median of {pred.runs} runs "
                        "after one warm-up, model only (preprocessing excluded), batch 1.")
            col.plotly_chart(charts.topk_bars(pred, "Top-5 classes"), width="stretch", key=f"cls_{len(preds)}")
        if len(preds) == 2:
            a, b = preds
            if a.indices[0] != b.indices[0]:
                st.warning(f"The two models disagree: the original says **{a.labels[0]}**, the compressed "
                           f"model says **{b.labels[0]}**.")
            else:
                st.success(f"Both models say **{a.labels[0]}**; the compressed model took "
                           f"{b.ms / a.ms:.2f}× the original's time on this photo.")
        elif comp is None:
            st.caption("Compress the model on the Prune, Distill or Quantize page to see its answer "
                       "next to the original's.")
        if not loaded.trained:
            st.warning("These predictions come from UNTRAINED weights and mean nothing.")
else:
    st.info(f"Upload a photo (at most {MAX_PIXELS / 1e6:.0f} megapixels) to see what the model thinks it is.")
