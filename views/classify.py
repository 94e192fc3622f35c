"""Classify page: upload or take a photo, see the top-5 classes and the time it took."""
from __future__ import annotations

import streamlit as st

from compress import charts
from compress.errors import CompressError
from compress.images import MAX_PIXELS, classify, read_image
from views.common import current_device, require_model

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
        pred = classify(loaded.model, image, spec.preprocess.transform(), spec.categories, device)
        left, right = st.columns([1, 2])
        left.image(image, caption=f"{image.width}×{image.height}", width="stretch")
        right.markdown(f"### Prediction: **{pred.labels[0]}** ({100 * pred.probs[0]:.1f}%)")
        right.caption(f"Model time for this photo: {pred.ms:.1f} ms on {pred.device} "
                      "(one forward pass, preprocessing excluded, includes first-call overhead).")
        right.plotly_chart(charts.topk_bars(pred, "Top-5 classes"), width="stretch")
        if not loaded.trained:
            st.warning("These predictions come from UNTRAINED weights and mean nothing.")
else:
    st.info(f"Upload a photo (at most {MAX_PIXELS / 1e6:.0f} megapixels) to see what the model thinks it is.")
