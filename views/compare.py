"""Compare page: every recorded run, the accuracy/latency/size trade-off, a plain summary,
two runs side by side, and the export of the current compressed model.

Runs come from the history (pages and CLI alike). Each run's ratios are measured within
that run (its "before" is the original model, measured in the same run).
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import streamlit as st

from compress import charts
from compress.checkpoint import ARTIFACT_KINDS, kind_of
from compress.data import has_train_split
from compress.errors import CompressError
from compress.export import FORMATS as EXPORT_FORMATS
from compress.pipeline import point_of_run
from compress.recipe import ExportRef, presets
from compress.report import diff_runs, export_table, forgetting_sentence, per_class_deltas, summary
from compress.report import runs as RR
from views.common import (base_recipe, current, history, model_ref, on_sidebar_settings, require_model, run_pipeline,
                          set_current)

loaded = require_model()
spec = loaded.spec
st.title("Compare")
st.caption("Every run you made (on these pages or with `python -m compress run`) is recorded with its "
           "model. Each run measured the original model and the compressed one in the same session, so "
           "its ratios are fair; comparing latency *across* runs mixes measurement times.")

with st.expander("Presets: one click, no settings"):
    base = base_recipe()
    sidebar_path = st.session_state.get("data_path", "").strip()
    data = replace(base.data, train_path=sidebar_path) if sidebar_path and has_train_split(sidebar_path) else base.data
    if data.train_path:
        st.caption(f"Training photos: the train split of {sidebar_path} (the pruning presets distil for one epoch).")
    for i, (name, (preset, reason)) in enumerate(presets(spec.name, data).items()):
        c1, c2 = st.columns([1, 3])
        go = c1.button(name, key=f"preset_{i}")
        c2.markdown(f"{reason}  \n`{preset.describe()}`, exports: {', '.join(preset.export.formats)}")
        if go:
            result = run_pipeline(replace(preset, model=base.model, measure=base.measure), name)
            if result is not None:
                st.success(f"{name}: run #{result.run_id} recorded; it is the current compressed model. Files: "
                           + ", ".join(f"{k} → {v}" for k, v in result.artifacts.items()))

h = history()
every = h.runs() if h else []
all_models = st.toggle("Show runs of every model", key="cmp_all")
runs, unfinished = RR.split_runs(every, None if all_models else asdict(model_ref()))

if not runs:
    st.info("No runs recorded yet for this model. Prune, distil or quantize it, or run "
            "`python -m compress run`, and the runs appear here.")
else:
    table = pd.DataFrame(RR.runs_table(runs)).set_index("run")
    st.subheader("All runs")
    st.dataframe(table, key="cmp_table", width="stretch")
if unfinished:
    with st.expander(f"{len(unfinished)} run(s) that did not finish"):
        st.dataframe(pd.DataFrame(RR.unfinished_table(unfinished)).set_index("run"), width="stretch",
                     key="cmp_unfinished")
if runs:

    series = RR.pareto_series(runs)
    if series is not None:
        st.subheader("Accuracy against speed")
        st.plotly_chart(charts.pareto(**series), key="cmp_pareto", width="stretch")
        st.caption("Up and left is better; bubble area shows the file size. Each run's speed is against its "
                   "own original, timed in the same run (milliseconds from runs made at different times are "
                   "not comparable on a shared machine). ⚠ marks runs timed while the machine was busy. Red "
                   "points are the Pareto front: no other run is both faster and more accurate. Hover for "
                   "each run's recipe.")

    st.subheader("In plain words")
    ids = [r.id for r in runs]
    by_id = {r.id: r for r in runs}
    pick = st.selectbox("Run", ids, key="cmp_pick", format_func=lambda i: f"#{i} {by_id[i].name}")
    chosen = by_id[pick]
    st.markdown(f"**#{chosen.id} {chosen.name}**: {summary(chosen.before, chosen.after, spec.num_classes)}.")
    with st.expander("Recipe (JSON)"):
        st.json(chosen.recipe)
    model_file = (chosen.artifacts or {}).get("model")
    b = st.columns(3)
    if b[0].button("Use this run's model", key="cmp_reload", disabled=not model_file,
                   help="Load the model this run saved and make it the current compressed model: "
                        "Classify, Quantize and Export then use it."):
        try:
            set_current(point_of_run(chosen))
            st.success(f"The current compressed model is now run #{chosen.id}'s: {current().label}.")
        except CompressError as e:
            st.error(str(e))
    if model_file and Path(model_file).is_file():
        b[1].download_button("Download its model file", data=Path(model_file).read_bytes(),
                             file_name=f"{spec.name}-run{chosen.id}{ARTIFACT_KINDS[kind_of(model_file)].suffix}",
                             key="cmp_model_dl")
    elif not model_file:
        b[1].caption("This run kept no model file (recorded by an earlier version).")
    if b[2].button("Delete this run", key="cmp_delete"):
        h.delete(pick)
        st.rerun()

    st.subheader("What changed")
    other_ids = [i for i in ids if i != pick]
    against = st.radio("Compare its compressed model with", ["its original", "another run's model"],
                       horizontal=True, key="wc_against", disabled=not other_ids)
    if against == "its original" or not other_ids:
        deltas, changed = per_class_deltas(chosen.before, chosen.after), chosen.changed
        what = f"run #{chosen.id}'s original → its compressed model"
        if changed is None:
            st.info("This run kept no per-image results (recorded by an earlier version, or measured without "
                    "labelled images). Measure it again to see what changed.")
    else:
        other = by_id[st.selectbox("Other run", other_ids, key="wc_other",
                                   format_func=lambda i: f"#{i} {by_id[i].name}")]
        what = f"run #{chosen.id}'s model → run #{other.id}'s model"
        try:
            d = diff_runs(chosen, other, class_names=list(spec.categories))
            deltas, changed = d["per_class"], d["changed"]
        except ValueError as e:
            st.warning(str(e))
            deltas, changed = [], None
    if changed is not None and deltas:
        st.markdown(f"**{what}**: {forgetting_sentence(deltas, changed)}")
        c1, c2 = st.columns(2)
        c1.plotly_chart(charts.class_delta_bars(deltas), width="stretch", key="wc_bars")
        if changed:
            c2.plotly_chart(charts.confusion_change(changed), width="stretch", key="wc_heat")
        for group in RR.flipped_photos(changed):
            st.markdown(group["title"])
            cols = st.columns(6)
            for i, (file, caption) in enumerate(group["photos"]):
                cols[i % 6].image(file, width=96, caption=caption)

    if len(ids) >= 2:
        st.subheader("Two runs side by side")
        c1, c2 = st.columns(2)
        a_id = c1.selectbox("Run A", ids, index=1, key="cmp_a", format_func=lambda i: f"#{i} {by_id[i].name}")
        b_id = c2.selectbox("Run B", ids, index=0, key="cmp_b", format_func=lambda i: f"#{i} {by_id[i].name}")
        rows, together = RR.side_by_side(by_id[a_id], by_id[b_id])
        st.table(pd.DataFrame(rows).set_index("measure"))
        if not together:
            st.caption("Latencies marked *different runs* were timed at different times, so the machine's load "
                       "may differ; compare each run's own speed-up against its original (the table above) "
                       "instead.")

# ---------------------------------------------------------------- export
st.subheader("Export the current compressed model")
comp = current()
if comp is None:
    st.info("Prune, distil or quantize the model first (or use a run's model above); it can then be "
            "exported here.")
    st.stop()
st.markdown(f"**Current compressed model:** {comp.label}"
            + (f" (run #{comp.run_id})" if comp.run_id is not None else ""))
formats = st.multiselect("Formats", list(EXPORT_FORMATS), default=["onnx"], key="exp_formats",
                         help="Each file is loaded back in the runtime that will run it and compared "
                              "with the model on real images.\n\n"
                              + "\n\n".join(f"**{f.name}**: {f.description}" for f in EXPORT_FORMATS.values()))
if st.button("Export", type="primary", key="exp_go", disabled=not formats):
    out = Path(tempfile.mkdtemp(prefix="compression-lab-export-"))
    recipe = replace(on_sidebar_settings(comp.recipe, 10), export=ExportRef(formats=tuple(formats), out_dir=str(out)))
    # a run from the current point: nothing is redone; the model is measured and each file checked
    result = run_pipeline(recipe, "Export", start=comp, make_current=False)
    if result is not None:
        st.session_state.export_result = {
            "key": repr(comp.recipe), "label": comp.label, "done": result.exports, "failed": result.export_errors,
            "card": Path(result.artifacts["model_card"]).read_text(), "run_id": result.run_id}

res = st.session_state.get("export_result")
if res and res["key"] == repr(comp.recipe) and res["label"] == comp.label:
    for fmt, msg in res["failed"].items():
        st.error(f"{fmt}: {msg}")
    if res["done"]:
        st.table(pd.DataFrame(export_table(res["done"])).set_index("format"))
        cols = st.columns(len(res["done"]) + 1)
        for col, (fmt, e) in zip(cols, res["done"].items()):
            col.download_button(f"Download {fmt}", data=Path(e["path"]).read_bytes(),
                                file_name=Path(e["path"]).name, key=f"exp_dl_{fmt}")
        if res["card"]:
            cols[-1].download_button("Download the model card (.md)", data=res["card"],
                                     file_name=f"{spec.name}-model-card.md", key="exp_dl_card")
