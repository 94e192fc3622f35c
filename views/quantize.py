"""Quantize page: every mode measured in the runtime that runs it, next to two FP32 baselines.

Widgets -> QuantConfig -> compress.quantize -> profiles measured in one run -> table and
charts. The chosen result becomes the session's current compressed model.
"""
from __future__ import annotations

from dataclasses import asdict, replace

import pandas as pd
import streamlit as st
import torch

from compress import charts
from compress import quantize as Q
from compress.errors import CompressError
from compress.measure import profile_model
from views.common import (current_compressed, current_device, data_settings, eval_sets_for, recipe_of,
                          record, require_model, set_compressed)

loaded = require_model()
spec = loaded.spec
key = st.session_state.get("model_key", spec.name)
st.title("Quantize")
st.caption("Quantization stores numbers in fewer bits: 8-bit integers instead of 32-bit floats. "
           "The model gets about 4× smaller, and faster **if** the runtime has fast 8-bit kernels. "
           "Everything below is measured now, on this machine, in the runtime that runs each model.")

comp = current_compressed()
sources = {"original": (loaded.model, "original (FP32)")}
if comp and not comp["quantized"]:
    sources["compressed"] = (comp["model"], f"current compressed model: {comp['label']}")
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
    # ort-fp32 is always measured as a baseline
    modes = st.multiselect("Modes to measure", [m for m in Q.MODES if m != "ort-fp32"],
                           default=["static", "ort-int8"], key="q_modes",
                           help="Each is compared with PyTorch FP32 and ONNX Runtime FP32.")
    for m in modes:
        st.caption(f"**{m}**: {Q.MODES[m]}")
with right:
    backend = st.radio("PyTorch INT8 kernels for", Q.BACKENDS, horizontal=True, key="q_backend",
                       format_func={"x86": "x86 servers and PCs", "qnnpack": "ARM phones (qnnpack)"}.get,
                       help="qnnpack runs here too, but its speed on this machine is not a phone's.")
    calib = st.slider("Calibration photos", 16, 1024, 128, 16, key="q_calib",
                      help="Photos used to learn the range of each layer's values. They are never "
                           "among the photos accuracy is measured on.")
    observer = st.radio("Range from", list(Q.OBSERVERS), index=1, horizontal=True, key="q_observer",
                        format_func=lambda o: f"{o}: {Q.OBSERVERS[o]}")
    layers = [n for n, m in source.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    keep = st.multiselect("Layers to keep in float (mixed precision)", layers, key="q_keep",
                          help="Layers that lose most in 8 bits can stay in float; see the error ranking below.")
    keep_worst = st.number_input("…and the K layers with the highest error, ranked automatically", 0, 20, 0,
                                 key="q_keep_worst",
                                 help="Measured on the calibration photos (SQNR per layer), then kept in float.")

has_data = bool(data_settings()[0])
if not has_data:
    st.warning("Choose a labelled dataset in the sidebar: static INT8 needs real photos to calibrate, "
               "and accuracy needs labels.")

qat_epochs, qat_lr, train_path, train_limit = 1, 1e-4, "", 2000
if "qat" in modes:
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

cfg = Q.QuantConfig(mode="static", backend=backend, calibration=calib, observer=observer, keep_float=tuple(keep),
                    keep_worst=int(keep_worst), qat_epochs=int(qat_epochs), qat_lr=float(qat_lr))


def training_batches():
    """Training photos for QAT, or None (QAT then says what it needs)."""
    from compress.data import train_loader
    if not train_path.strip():
        return None
    return train_loader(train_path.strip(), spec.preprocess.transform(), limit=int(train_limit),
                        seed=int(st.session_state.get("data_seed", 0)))


device = current_device()
with st.expander("Measurement settings"):
    runs = st.number_input("Timed runs for latency (batch 1, after 5 warm-up runs)", 5, 500, 30, key="q_runs")


def load_sets():
    """The evaluation and calibration images, read when a button needs them (not on every
    slider move); None after showing why they cannot be read."""
    sets, error = eval_sets_for(spec, n_scoring=calib)
    if error:
        st.error(error)
    return sets


def run_all(sets):
    """FP32 eager and ORT FP32 baselines, then each mode: same images, same run."""
    results = []
    bar = st.progress(0.0, text="starting")
    steps = (["original"] if src_key == "compressed" else []) + ["fp32"] + ["ort-fp32"] + list(modes)
    batches = sets.evaluation if sets else None
    for i, mode in enumerate(steps):
        bar.progress(i / len(steps), text=f"{mode}: quantizing and measuring")
        if mode == "original":       # the unpruned model, so every run compares with it
            prof = profile_model(loaded.model, spec.name, spec.input_size, torch.device("cpu"), runs=int(runs),
                                 warmup=5, eval_batches=batches, weights=loaded.weights_note)
            results.append({"mode": "original", "name": "Original (unpruned) FP32", "profile": prof,
                            "model": loaded.model})
            continue
        if mode == "fp32":
            prof = profile_model(source, spec.name, spec.input_size, torch.device("cpu"), runs=int(runs),
                                 warmup=5, eval_batches=batches, weights=loaded.weights_note)
            results.append({"mode": "fp32", "name": "PyTorch FP32", "profile": prof, "model": source})
            continue
        mode_cfg = replace(cfg, mode=mode)
        dev = device if mode in ("fp16", "bf16") else torch.device("cpu")
        try:
            train = training_batches() if mode == "qat" else None

            def show(ev, mode=mode, i=i):
                bar.progress(min(0.999, (i + ev.fraction) / len(steps)), text=f"{mode}: {ev.stage} {ev.message}")
            q = Q.quantize(source, mode_cfg, spec.input_size, sets.scoring if sets else None, dev,
                           on_progress=show, train_batches=train)
            prof = Q.profile_quantized(q, source, spec.name, spec.input_size, runs=int(runs), warmup=5,
                                       eval_batches=batches, weights=loaded.weights_note)
            name = q.runtime + (f" on {dev.type}" if mode in ("fp16", "bf16") else "")
            results.append({"mode": mode, "name": name, "profile": prof, "model": q.model, "quantized": q,
                            "config": asdict(mode_cfg)})
        except CompressError as err:
            results.append({"mode": mode, "name": mode, "error": str(err)})
    bar.empty()
    # every quantized result is a run in the history, compared with the original model
    original = results[0]["profile"]
    prior = comp["steps"] if src_key == "compressed" else []
    for r in results:
        if "profile" in r and r["mode"] not in ("original", "fp32"):
            recipe = recipe_of(prior, quantize=r["config"])
            r["run_id"] = record(recipe, original, r["profile"], prior + [{"step": "quantize", "config": r["config"]}],
                                 "cpu")
    return results


if st.button("Quantize and measure", type="primary", key="q_go", disabled=not modes or device is None):
    sets = load_sets() if has_data else None
    if sets is not None or not has_data:
        st.session_state.quant_result = {"key": key, "source": source_label, "results": run_all(sets),
                                         "n_calibration": sets.n_scoring if sets else 0}

res = st.session_state.get("quant_result")
if res and res["key"] == key:
    ok = [r for r in res["results"] if "profile" in r]
    for r in res["results"]:
        if "error" in r:
            st.error(f"{r['mode']}: {r['error']}")
    base = next(r["profile"] for r in ok if r["mode"] == "fp32")
    rows = []
    for r in ok:
        p, lat = r["profile"], r["profile"].latency_ms
        acc = p.accuracy
        rows.append({
            "model": r["name"], "size (MB)": p.size_bytes / 1e6, "× size": p.size_bytes / base.size_bytes,
            "latency median (ms)": lat.median, "latency p90 (ms)": lat.p90,
            "speed-up vs PyTorch FP32": base.latency_ms.median / lat.median,
            "top-1 %": None if acc is None else acc.top1,
            "95% CI": "" if acc is None else f"{acc.ci95[0]:.1f}–{acc.ci95[1]:.1f}",
            "same top-1 as FP32 %": 100.0 if r["mode"] == "fp32" else p.agreement_top1,
            "history run": r.get("run_id"),
            "notes": " ".join(p.notes)})
    st.subheader(f"Results for the {res['source']}")
    lat0 = base.latency_ms
    n = base.accuracy.n if base.accuracy else 0
    st.caption(f"Latency: batch 1, {lat0.runs} timed runs after {lat0.warmup} warm-up, {lat0.threads} "
               f"threads, CPU unless noted. Accuracy: the same {n} images for every row "
               f"({res['n_calibration']} other images calibrated INT8). Size: the bytes of each "
               "runtime's own file.")
    fmt = {"size (MB)": "{:.2f}", "× size": "×{:.2f}", "latency median (ms)": "{:.2f}",
           "latency p90 (ms)": "{:.2f}", "speed-up vs PyTorch FP32": "{:.2f}×", "top-1 %": "{:.2f}",
           "same top-1 as FP32 %": "{:.1f}", "history run": "#{:.0f}"}
    st.table(pd.DataFrame(rows).set_index("model").style.format(fmt, na_rep="–"))
    names = [r["model"] for r in rows]
    c = st.columns(3)
    c[0].plotly_chart(charts.variant_bars(names, [round(r["size (MB)"], 2) for r in rows], "Size", "MB"),
                      width="stretch", key="q_size")
    c[1].plotly_chart(charts.variant_bars(names, [r["latency median (ms)"] for r in rows],
                                          "Latency (median, batch 1)", "ms"), width="stretch", key="q_lat")
    if base.accuracy is not None:
        c[2].plotly_chart(charts.variant_bars(names, [r["top-1 %"] for r in rows], "Top-1 accuracy", "%"),
                          width="stretch", key="q_acc")
    choice = st.selectbox("Make one of them the current compressed model",
                          [r["name"] for r in ok if r["mode"] not in ("original", "fp32")], key="q_pick")
    if st.button("Use this model", key="q_use"):
        r = next(r for r in ok if r["name"] == choice)
        prefix = comp["label"] + " + " if src_key == "compressed" and comp else ""
        steps = (comp["steps"] if src_key == "compressed" and comp else []) + [
            {"step": "quantize", "config": r.get("config", {})}]
        set_compressed(r["model"], f"{prefix}{r['name']}", steps, quantized=True, exportable=r.get("quantized"),
                       run_id=r.get("run_id"))
        st.success(f"The current compressed model is now: {prefix}{r['name']}.")

st.subheader("Which layers lose most in 8 bits")
st.caption("Each layer is quantized alone on the calibration photos and compared with its float "
           "output (signal-to-quantization-noise ratio). The lowest bars are the best candidates to "
           "keep in float.")
if st.button("Rank layers by quantization error", key="q_sqnr", disabled=not has_data):
    sets = load_sets()
    if sets is not None:
        try:
            st.session_state.q_errors = {"key": key, "src": src_key,
                                         "errors": Q.layer_sqnr(source, sets.scoring, max_images=min(calib, 128))}
        except CompressError as err:
            st.error(str(err))
errs = st.session_state.get("q_errors")
if errs and errs["key"] == key and errs["src"] == src_key:
    worst = sorted(errs["errors"], key=lambda e: e.sqnr_db)[:3]
    st.plotly_chart(charts.sqnr_bars(errs["errors"], keep), width="stretch", key="q_sqnr_chart")
    st.caption("Lowest SQNR: " + ", ".join(f"{e.layer} ({e.sqnr_db:.1f} dB)" for e in worst) +
               ". Add them to *Layers to keep in float* and measure again.")
