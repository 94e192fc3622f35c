"""Quantize page: every mode measured in the runtime that runs it, next to two FP32 baselines.

Widgets -> QuantConfig -> compress.quantize -> profiles measured in one run -> table and
charts. The chosen result becomes the session's current compressed model.
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st
import torch

from compress import charts
from compress.zoo import no_data_hint
from compress import quantize as Q
from compress.errors import CompressError
from compress.report import quantizing as RQ
from views.common import (base_recipe, keep_result, shown_result, current, current_device, data_settings, eval_sets_for, model_key,
                          on_sidebar_settings, require_model, run_variants, set_current)

loaded = require_model()
spec = loaded.spec
key = model_key()
st.title("Quantize")
st.caption("Quantization stores numbers in fewer bits: 8-bit integers instead of 32-bit floats. "
           "The model gets about 4× smaller, and faster **if** the runtime has fast 8-bit kernels. "
           "Everything below is measured now, on this machine, in the runtime that runs each model.")

comp = current()
sources = {"original": (loaded.model, "original (FP32)")}
if comp is not None and not comp.quantized:
    sources["compressed"] = (comp.model, f"current compressed model: {comp.label}")
src_key = st.radio("Quantize", list(sources), horizontal=True, key="q_source",
                   format_func=lambda k: sources[k][1],
                   help="Prune first, then quantize: the savings multiply.")
source, source_label = sources[src_key]
if isinstance(source, torch.jit.ScriptModule):
    st.error("This is a TorchScript model: it cannot be quantized here. Load a state_dict or a "
             "project checkpoint.")
    st.stop()

left, right = st.columns([3, 2])
with left:
    # the FP32 modes of other runtimes are measured as baselines, not chosen
    twins = {Q.MODES[m].float_twin for m in Q.MODES} - {None}
    modes = st.multiselect("Modes to measure", [m for m in Q.MODES if m not in twins],
                           default=["pt2e", "ort-int8"], key="q_modes",
                           help="Each is compared with PyTorch FP32 and with FP32 in its own runtime "
                                "(ONNX Runtime FP32, ExecuTorch FP32).")
    for m in modes:
        st.caption(f"**{m}**: {Q.MODES[m].description}")
    for caveat in Q.caveats(source, modes):
        st.warning(caveat)
with right:
    backend = st.radio("PyTorch INT8 kernels for", Q.BACKENDS, horizontal=True, key="q_backend",
                       format_func={"x86": "x86 servers and PCs", "qnnpack": "ARM phones (qnnpack)"}.get,
                       help="qnnpack runs here too, but its speed on this machine is not a phone's.")
    calib = st.slider("Calibration photos", 16, 1024, 128, 16, key="q_calib",
                      help="Photos used to learn the range of each layer's values. They are never "
                           "among the photos accuracy is measured on.")
    observer = st.radio("Range from", list(Q.OBSERVERS), index=0, horizontal=True, key="q_observer",
                        format_func=lambda o: f"{o}: {Q.OBSERVERS[o]}")
    equalize = st.checkbox("Cross-layer equalization first", False, key="q_equalize",
                           help="Rescales pairs of convolutions joined by a ReLU so each channel's weights "
                                "use the 8-bit range evenly. The float model's answers do not change. Pairs "
                                "joined by ReLU6 (MobileNet, EfficientNet-Lite) are left alone.")
    bias_correction = st.checkbox("Bias correction", False, key="q_bias",
                                  help="Rounding weights to 8 bits shifts each layer's average output; the shift "
                                       "is measured on the calibration photos and taken out of the layer's bias.")
    layers = [n for n, m in source.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    keep = st.multiselect("Layers to keep in float (mixed precision)", layers, key="q_keep",
                          help="Layers that lose most in 8 bits can stay in float; see the error ranking below.")
    keep_worst = st.number_input("…and the K layers with the highest error, ranked automatically", 0, 20, 0,
                                 key="q_keep_worst",
                                 help="Ranked on the calibration photos, then kept in float.")
    keep_rank = st.radio("Rank them by", list(Q.KEEP_RANKS), horizontal=True, key="q_keep_rank",
                         format_func=lambda r: f"{r}: {Q.KEEP_RANKS[r]}", disabled=not keep_worst)

has_data = bool(data_settings()[0])
if not has_data:
    st.warning("Choose a labelled dataset in the sidebar: static INT8 needs real photos to calibrate, "
               "and accuracy needs labels. " + no_data_hint(spec))

qat_epochs, qat_lr, train_path, train_limit = 1, 1e-4, "", 2000
if any(Q.MODES[m].trains for m in modes):
    st.markdown("**Quantization-aware training** fine-tunes the model with 8-bit rounding simulated, "
                "on labelled training photos, then converts it to INT8.")
    t = st.columns(4)
    qat_epochs = t[0].number_input("QAT epochs", 1, 50, 1, key="q_qat_epochs")
    qat_lr = t[1].number_input("Learning rate", 1e-6, 1.0, 1e-4, format="%.6f", key="q_qat_lr",
                               help="Small: the model is already trained; QAT only adapts it to 8 bits.")
    train_path = t[2].text_input("Training photos", value=st.session_state.get("data_path", ""),
                                 key="q_train_path",
                                 help="A labelled folder, or a CIFAR-10 tarball/folder (its train split is used).")
    train_limit = t[3].number_input("Train on at most N photos", 100, 1_000_000, 2000, step=500,
                                    key="q_train_limit", help="A fixed random subset (by the sidebar's seed).")
    st.caption("Training runs on the CPU and can take minutes; the progress bar follows every step.")

cfg = Q.QuantConfig(mode="pt2e", backend=backend, calibration=calib, observer=observer, equalize=equalize,
                    bias_correction=bias_correction,
                    keep_float=tuple(keep),
                    keep_worst=int(keep_worst), keep_rank=keep_rank, qat_epochs=int(qat_epochs), qat_lr=float(qat_lr))


device = current_device()
with st.expander("Measurement settings"):
    runs = st.number_input("Timed runs for latency (batch 1, after 5 warm-up runs)", 5, 500, 30, key="q_runs")


def load_sets():
    """The evaluation images and the calibration pool, read when a button needs them (not
    on every slider move); None after showing why they cannot be read."""
    sets, error = eval_sets_for(spec)
    if error:
        st.error(error)
    return sets


if st.button("Quantize and measure", type="primary", key="q_go", disabled=not modes or device is None):
    from_comp = src_key == "compressed"
    recipe = on_sidebar_settings(comp.recipe, runs) if from_comp else base_recipe(runs)
    if train_path.strip():
        recipe = replace(recipe, data=replace(recipe.data, train_path=train_path.strip(),
                                              train_limit=int(train_limit)))
    # ONNX Runtime FP32 is always measured (not recorded), and ExecuTorch FP32 when et-int8 is
    # chosen: the fair float baselines for INT8 in those runtimes
    references = Q.reference_modes(modes)
    out = run_variants(recipe, [replace(cfg, mode=m) for m in modes], "Quantize",
                       start=comp if from_comp else None, references=[replace(cfg, mode=r) for r in references])
    if out is not None:
        keep_result("quant_result", {"source": source_label, "from_comp": from_comp, "variants": out})

res = shown_result("quant_result")
if res:
    table = RQ.quantize_table(res["variants"], res["from_comp"])
    for error in table.errors:
        st.error(error)
    rows = table.rows
    st.subheader(f"Results for the {res['source']}")
    st.caption(table.caption)
    st.table(pd.DataFrame(rows).set_index("model").style.format(RQ.TABLE_FORMAT, na_rep="–"))
    if table.busy:
        st.warning(table.busy)
    for line in table.speed_lines:
        st.caption(line)
    names = [r["model"] for r in rows]
    c = st.columns(3)
    c[0].plotly_chart(charts.variant_bars(names, [round(r["size (MB)"], 2) for r in rows], "Size", "MB"),
                      width="stretch", key="q_size")
    c[1].plotly_chart(charts.variant_bars(names, [r["latency median (ms)"] for r in rows],
                                          "Latency (median, batch 1)", "ms"), width="stretch", key="q_lat")
    if any(r["top-1 %"] is not None for r in rows):
        c[2].plotly_chart(charts.variant_bars(names, [r["top-1 %"] for r in rows], "Top-1 accuracy", "%"),
                          width="stretch", key="q_acc")
    if table.variants:
        labels = [f"{name} (run #{r.run_id})" for name, r in table.variants]
        choice = st.selectbox("Make one of them the current compressed model", labels, key="q_pick")
        if st.button("Use this model", key="q_use"):
            point = table.variants[labels.index(choice)][1].point
            set_current(point)
            st.success(f"The current compressed model is now: {point.label}.")

st.subheader("Which layers lose most in 8 bits")
st.caption("Each layer is quantized alone on the calibration photos and compared with its float "
           "output (signal-to-quantization-noise ratio). The lowest bars are the best candidates to "
           "keep in float.")
if st.button("Rank layers by quantization error", key="q_sqnr", disabled=not has_data):
    sets = load_sets()
    if sets is not None:
        try:
            keep_result("q_errors", {"src": src_key, "errors": RQ.rank_layers(source, sets, calib)})
        except CompressError as err:
            st.error(str(err))
errs = shown_result("q_errors")
if errs and errs["src"] == src_key:
    st.plotly_chart(charts.sqnr_bars(errs["errors"], keep), width="stretch", key="q_sqnr_chart")
    st.caption(RQ.sqnr_sentence(errs["errors"]))
