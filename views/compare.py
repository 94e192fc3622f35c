"""Compare page: every recorded run, the accuracy/latency/size trade-off, a plain summary,
two runs side by side, and the export of the current compressed model.

Runs come from the history (pages and CLI alike). Each run's ratios are measured within
that run (its "before" is the original model, measured in the same run).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import streamlit as st

from compress import charts
from compress.errors import CompressError
from compress.measure import Profile
from compress.report import (compare_profiles, diff_runs, forgetting_sentence, per_class_deltas, speed_entry,
                             speed_ratio, summary)
from views.common import (base_recipe, current, history, model_ref, require_model, run_pipeline,
                          set_current)

loaded = require_model()
spec = loaded.spec
st.title("Compare")
st.caption("Every run you made (on these pages or with `python -m compress run`) is recorded with its "
           "model. Each run measured the original model and the compressed one in the same session, so "
           "its ratios are fair; comparing latency *across* runs mixes measurement times.")

with st.expander("Presets: one click, no settings"):
    from compress.data import has_train_split
    from compress.recipe import presets
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
this_model = asdict(model_ref())
mine = [r for r in every if all_models or r.recipe.get("model") == this_model]
runs = [r for r in mine if r.status == "done" and r.after and r.before]
unfinished = [r for r in mine if r.status != "done"]



def _faster(r):
    ratio, _, _ = speed_ratio(r.before, r.after)
    return None if ratio is None else round(ratio, 2)


def _timing(r) -> str:
    """How the run's speed-up was timed, and whether the machine was busy then."""
    ratio, noisy, _ = speed_ratio(r.before, r.after)
    if ratio is None:
        return ""
    total = speed_entry(r.after, "total")
    how = f"in turn, 95% ×{total['ci95'][0]:.2f}–×{total['ci95'][1]:.2f}" if total else "separate loops"
    return ("⚠ busy machine: unreliable; " if noisy else "") + how


if not runs:
    st.info("No runs recorded yet for this model. Prune, distil or quantize it, or run "
            "`python -m compress run`, and the runs appear here.")
else:
    rows = []
    for r in runs:
        a = r.after
        acc, acc0 = a.get("accuracy"), r.before.get("accuracy")
        rows.append({
            "run": r.id, "name": r.name, "from": r.source,
            "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)),
            "runtime": a.get("runtime", ""), "size (MB)": round(a["size_bytes"] / 1e6, 3),
            "× smaller": round(r.before["size_bytes"] / a["size_bytes"], 2),
            "latency median (ms)": round(a["latency_ms"]["median"], 3) if a.get("latency_ms") else None,
            "× faster (same run)": _faster(r),
            "speed timing": _timing(r),
            "top-1 %": acc["top1"] if acc else None,
            "95% CI": f"{acc['ci95'][0]:.1f}–{acc['ci95'][1]:.1f}" if acc else "",
            "n": acc["n"] if acc else None,
            "Δ top-1 (points)": round(acc["top1"] - acc0["top1"], 2) if acc and acc0 else None,
        })
    table = pd.DataFrame(rows).set_index("run")
    st.subheader("All runs")
    st.dataframe(table, key="cmp_table", width="stretch")
if unfinished:
    with st.expander(f"{len(unfinished)} run(s) that did not finish"):
        st.dataframe(pd.DataFrame([{
            "run": r.id, "name": r.name, "status": r.status, "from": r.source,
            "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)),
            "error": r.error or ("its process ended before it finished" if r.status == "interrupted" else "")}
            for r in unfinished]).set_index("run"), width="stretch", key="cmp_unfinished")
if runs:

    measured = [r for r in runs if r.after.get("accuracy") and _faster(r)]
    if measured:
        st.subheader("Accuracy against speed")
        newest = measured[0]
        names = ["original"] + [f"#{r.id}" + (" ⚠" if speed_ratio(r.before, r.after)[1] else "") for r in measured]
        # each run's time relative to its own original, timed in the same run: the only
        # speed figure that compares across runs measured at different times
        fig = charts.pareto(
            names, [1.0] + [1 / _faster(r) for r in measured],
            [newest.before["accuracy"]["top1"]] + [r.after["accuracy"]["top1"] for r in measured],
            [newest.before["size_bytes"]] + [r.after["size_bytes"] for r in measured],
            [f"original (accuracy as measured in run #{newest.id})"] + [r.name for r in measured],
            x_title="time per image ÷ the original's, measured in the same run", x_unit="× the original's time")
        st.plotly_chart(fig, key="cmp_pareto", width="stretch")
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
        from compress.pipeline import point_of_run
        try:
            set_current(point_of_run(chosen))
            st.success(f"The current compressed model is now run #{chosen.id}'s: {current().label}.")
        except CompressError as e:
            st.error(str(e))
    if model_file and Path(model_file).is_file():
        b[1].download_button("Download its model file", data=Path(model_file).read_bytes(),
                             file_name=f"{spec.name}-run{chosen.id}{''.join(Path(model_file).suffixes)}",
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
        for kind, title in (("broken", "Was right, now wrong"), ("fixed", "Was wrong, now right")):
            shown = [c for c in changed if c["change"] == kind and Path(c["file"]).is_file()][:12]
            if not shown:
                continue
            st.markdown(f"**{title}** ({sum(c['change'] == kind for c in changed)} photos"
                        + (", the first 12" if len(shown) == 12 else "") + ")")
            cols = st.columns(6)
            for i, c in enumerate(shown):
                cols[i % 6].image(c["file"], width=96, caption=(
                    f"{c['label']}: {c['before']['class']} {100 * c['before']['prob']:.0f}% → "
                    f"{c['after']['class']} {100 * c['after']['prob']:.0f}%"))

    if len(ids) >= 2:
        st.subheader("Two runs side by side")
        c1, c2 = st.columns(2)
        a_id = c1.selectbox("Run A", ids, index=1, key="cmp_a", format_func=lambda i: f"#{i} {by_id[i].name}")
        b_id = c2.selectbox("Run B", ids, index=0, key="cmp_b", format_func=lambda i: f"#{i} {by_id[i].name}")
        la, lb = (by_id[i].after.get("latency_ms") or {} for i in (a_id, b_id))
        together = a_id == b_id or (la.get("loop") and la.get("loop") == lb.get("loop"))   # one timing loop
        rows = compare_profiles(Profile.from_json(by_id[a_id].after), Profile.from_json(by_id[b_id].after),
                                same_run=bool(together), baseline=False)
        side = pd.DataFrame(rows).rename(columns={"before": f"A: #{a_id}", "after": f"B: #{b_id}",
                                                  "change": "B / A"}).set_index("measure")
        st.table(side)
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
formats = st.multiselect("Formats", ["onnx", "torchscript", "executorch", "checkpoint", "tensorrt"],
                         default=["onnx"], key="exp_formats",
                         help="Each file is loaded back in the runtime that will run it and compared "
                              "with the model on real images.")
if st.button("Export", type="primary", key="exp_go", disabled=not formats):
    from compress.recipe import ExportRef
    from views.common import on_sidebar_settings
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
        st.table(pd.DataFrame([{
            "format": e["format"], "file": Path(e["path"]).name, "bytes": f"{e['bytes']:,}", "runtime": e["runtime"],
            "max abs diff": "–" if e["max_abs_diff"] is None else f"{e['max_abs_diff']:.2e}",
            "same top-1": "–" if e["agreement_top1"] is None else f"{e['agreement_top1']:.1f}% of {e['n']}",
            "note": e["note"]} for e in res["done"].values()]).set_index("format"))
        cols = st.columns(len(res["done"]) + 1)
        for col, (fmt, e) in zip(cols, res["done"].items()):
            col.download_button(f"Download {fmt}", data=Path(e["path"]).read_bytes(),
                                file_name=Path(e["path"]).name, key=f"exp_dl_{fmt}")
        if res["card"]:
            cols[-1].download_button("Download the model card (.md)", data=res["card"],
                                     file_name=f"{spec.name}-model-card.md", key="exp_dl_card")
