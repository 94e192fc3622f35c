"""Model page: the baseline profile, per-layer table and charts."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from compress import charts
from compress.measure import Profile
from compress.report import figures, noisy_latency, profile_table
from compress.zoo import no_data_hint
from views.common import base_recipe, current_device, keep_result, model_key, require_model, run_pipeline, shown_result

loaded = require_model()
spec = loaded.spec
st.title(f"Model: {spec.name}")
st.caption(f"{spec.description}  \nWeights: {loaded.weights_origin}")
key = model_key()


@st.cache_data(show_spinner="Counting parameters, bytes and MACs…", max_entries=16)
def static_figures(_model, key: str, input_size) -> figures.StaticFigures:
    return figures.static_figures(_model, input_size)


@st.cache_data(show_spinner=False, max_entries=16)
def gzip_figure(_model, key: str) -> int:
    return figures.gzip_bytes(_model)


counts = static_figures(loaded.model, key, spec.input_size)
slots = [c.empty() for c in st.columns(5)]   # gzip (the fourth) is filled last: compressing tens of MB takes seconds
for slot, m in zip(slots, figures.static_metrics(counts, spec.input_size)):
    slot.metric(m["label"], m["value"], help=m["help"])

st.subheader("Measured profile")
st.write("Latency is timed here, now, on the chosen device; accuracy on the images chosen in the sidebar.")
with st.expander("Measurement settings"):
    s = st.columns(3)
    batch = s[0].number_input("Batch size", 1, 256, 1, key="prof_batch")
    runs = s[1].number_input("Timed runs", 5, 1000, 50, key="prof_runs")
    warmup = s[2].number_input("Warm-up runs", 1, 100, 10, key="prof_warmup")

if st.button("Measure latency and accuracy", type="primary", key="measure"):
    if current_device() is not None:
        recipe = replace(base_recipe(), measure=replace(base_recipe().measure, batch=int(batch), runs=int(runs),
                                                        warmup=int(warmup)), name="original, measured")
        # a run with no steps: recorded like any other, on the same images as every page
        result = run_pipeline(recipe, "Measure", make_current=False)
        if result is not None:
            keep_result("profile", Profile.from_json(result.before))

prof = shown_result("profile")
if prof is None:
    st.info("Press **Measure** to time the model and, with a dataset in the sidebar, measure accuracy.")
else:
    st.dataframe(pd.DataFrame(profile_table(prof, no_data_hint(spec))).rename(columns={"how": "how it was measured"}),
                 hide_index=True, width="stretch")
    if prof.latency_ms.noisy:
        st.warning(noisy_latency(prof.latency_ms))

if counts.layers:
    st.subheader("Layers")
    st.dataframe(pd.DataFrame(figures.layer_rows(counts.layers)), hide_index=True, width="stretch", height=320)
    left, right = st.columns(2)
    left.plotly_chart(charts.layer_bars(counts.layers, "params", "Parameters per layer"), width="stretch")
    right.plotly_chart(charts.layer_bars(counts.layers, "macs", "MACs per layer"), width="stretch")
else:
    st.info("Per-layer figures are not available for a TorchScript model.")

gz = figures.static_metrics(counts, spec.input_size, gzip_figure(loaded.model, key))[3]
slots[3].metric(gz["label"], gz["value"], help=gz["help"])
