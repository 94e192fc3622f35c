"""Model page: the baseline profile, per-layer table and charts."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st
import torch

from compress import charts
from compress.zoo import no_data_hint
from compress.measure import Profile, count_params, layer_table, serialized_bytes, serialized_size
from compress.report import BUSY
from views.common import base_recipe, current_device, keep_result, model_key, require_model, run_pipeline, shown_result

loaded = require_model()
spec = loaded.spec
st.title(f"Model: {spec.name}")
st.caption(f"{spec.description}  \nWeights: {loaded.weights_origin}")
key = model_key()


@st.cache_data(show_spinner="Counting parameters, bytes and MACs…", max_entries=16)
def static_figures(_model, key: str, input_size):
    params, nonzero = count_params(_model)
    size = len(serialized_bytes(_model))
    if isinstance(_model, torch.jit.ScriptModule):  # thop cannot walk TorchScript
        return params, nonzero, size, None, None
    rows = layer_table(_model, input_size)
    return params, nonzero, size, sum(r.macs for r in rows), rows


@st.cache_data(show_spinner=False, max_entries=16)
def gzip_figure(_model, key: str) -> int:
    return serialized_size(_model)[1]


params, nonzero, size, macs, rows = static_figures(loaded.model, key, spec.input_size)
c = st.columns(5)
c[0].metric("Parameters", f"{params / 1e6:.2f} M")
c[1].metric("Nonzero parameters", f"{nonzero / 1e6:.2f} M")
c[2].metric("Size (torch.save)", f"{size / 1e6:.2f} MB", help="Real serialized bytes of the state_dict.")
gz_slot = c[3].empty()             # filled last: compressing tens of MB takes seconds the first time
gz_slot.metric("Size (gzip)", "…", help="Being compressed…")
c[4].metric("MACs / image", "n/a" if macs is None else f"{macs / 1e9:.3f} G",
            help=f"Multiply-accumulates at {spec.input_size[1]}×{spec.input_size[2]}, counted by thop.")

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
    lat = prof.latency_ms
    table = [
        ("Latency, median", f"{lat.median:.2f} ms", f"{lat.runs} timed runs after {lat.warmup} warm-up; batch {lat.batch}, {lat.device}, {lat.threads} threads"),
        ("Latency, p90", f"{lat.p90:.2f} ms", "90th percentile of the same runs"),
        ("Peak activation memory", "n/a" if prof.peak_memory_bytes is None else f"{prof.peak_memory_bytes / 1e6:.2f} MB", "allocator peak during one forward pass"),
    ]
    if prof.accuracy is not None:
        a = prof.accuracy
        table.append(("Top-1 accuracy", f"{a.top1:.2f}%", f"n = {a.n} images, 95% interval {a.ci95[0]:.1f}–{a.ci95[1]:.1f}%"
                      + (f"; {a.source}" if a.source else "")))
        if a.top5 is not None:
            table.append(("Top-5 accuracy", f"{a.top5:.2f}%", f"n = {a.n}"))
    else:
        table.append(("Accuracy", "not measured", no_data_hint(spec)))
    st.dataframe(pd.DataFrame(table, columns=["measure", "value", "how it was measured"]),
                 hide_index=True, width="stretch")
    if lat.noisy:
        st.warning(f"⚠ The slowest runs (p90) took {lat.p90 / lat.median:.1f}× the median: {BUSY}.")

if rows:
    st.subheader("Layers")
    st.dataframe(pd.DataFrame([r.__dict__ for r in rows]), hide_index=True, width="stretch",
                 height=320)
    left, right = st.columns(2)
    left.plotly_chart(charts.layer_bars(rows, "params", "Parameters per layer"), width="stretch")
    right.plotly_chart(charts.layer_bars(rows, "macs", "MACs per layer"), width="stretch")
else:
    st.info("Per-layer figures are not available for a TorchScript model.")

gz_slot.metric("Size (gzip)", f"{gzip_figure(loaded.model, key) / 1e6:.2f} MB",
               help="The same bytes gzip-compressed (level 6): what a download costs.")
