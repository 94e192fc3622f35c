"""Compare page: every recorded run, the accuracy/latency/size trade-off, a plain summary,
two runs side by side, and the export of the current compressed model.

Runs come from the history (pages and CLI alike). Each run's ratios are measured within
that run (its "before" is the original model, measured in the same run).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import streamlit as st

from compress import charts
from compress.errors import CompressError
from compress.measure import Profile, compare_profiles
from compress.recipe import Recipe
from views.common import (STEP_FIELDS, current_compressed, data_settings, eval_sets_for, history, page_recipe,
                          recipe_of, require_model, run_recipe, set_compressed)

loaded = require_model()
spec = loaded.spec
st.title("Compare")
st.caption("Every run you made (on these pages or with `python -m compress run`) is recorded. "
           "Each run measured the original model and the compressed one in the same session, so "
           "its ratios are fair; comparing latency *across* runs mixes measurement times.")

with st.expander("Presets: one click, no settings"):
    from compress.recipe import DataRef, presets
    path, limit, seed = data_settings()
    for i, (name, (preset, reason)) in enumerate(presets(spec.name, DataRef(path=path or None, limit=limit,
                                                                              seed=seed)).items()):
        c1, c2 = st.columns([1, 3])
        go = c1.button(name, key=f"preset_{i}")
        c2.markdown(f"{reason}  \n`{preset.describe()}`, exports: {', '.join(preset.export.formats)}")
        if go:
            recipe = replace(preset, model=page_recipe().model, measure=page_recipe().measure)
            result = run_recipe(recipe, eval_sets_for(spec, n_scoring=128)[0], name)
            if result is not None:
                final = result.model          # a QuantizedModel carries its runtime's module
                set_compressed(getattr(final, "model", final), name,
                               [{"step": s["step"], "config": s["config"]} for s in result.steps
                                if s["step"] in STEP_FIELDS],
                               quantized=recipe.quantize is not None, exportable=result.model,
                               run_id=result.run_id)
                st.success(f"{name}: run #{result.run_id} recorded; files: "
                           + ", ".join(f"{k} → {v}" for k, v in result.artifacts.items()))

h = history()
runs = h.runs(status="done") if h else []
all_models = st.toggle("Show runs of every model", key="cmp_all")
runs = [r for r in runs if r.after and r.before and (all_models or r.recipe.get("model", {}).get("name") == spec.name)]


def summary(before: dict, after: dict) -> str:
    """One sentence a non-engineer can read."""
    parts = [f"{before['size_bytes'] / after['size_bytes']:.1f}× smaller"]
    lb, la = before.get("latency_ms"), after.get("latency_ms")
    if lb and la:
        speed = lb["median"] / la["median"]
        parts.append(f"{speed:.1f}× faster" if speed >= 1 else f"{1 / speed:.1f}× slower")
    ab, aa = before.get("accuracy"), after.get("accuracy")
    if ab and aa:
        d = aa["top1"] - ab["top1"]
        word = "less" if d < 0 else "more"
        parts.append(f"{abs(d):.1f} points {word} accurate on {aa['n']:,} validation images "
                     f"(95% interval {aa['ci95'][0]:.1f}–{aa['ci95'][1]:.1f}% against "
                     f"{ab['ci95'][0]:.1f}–{ab['ci95'][1]:.1f}% for the original)")
    else:
        parts.append("accuracy not measured (no labelled images were chosen)")
    return ", ".join(parts)


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
            "× faster": round(r.before["latency_ms"]["median"] / a["latency_ms"]["median"], 2)
            if a.get("latency_ms") and r.before.get("latency_ms") else None,
            "top-1 %": acc["top1"] if acc else None,
            "95% CI": f"{acc['ci95'][0]:.1f}–{acc['ci95'][1]:.1f}" if acc else "",
            "n": acc["n"] if acc else None,
            "Δ top-1 (points)": round(acc["top1"] - acc0["top1"], 2) if acc and acc0 else None,
        })
    table = pd.DataFrame(rows).set_index("run")
    st.subheader("All runs")
    st.dataframe(table, key="cmp_table", width="stretch")

    measured = [r for r in runs if r.after.get("accuracy") and r.after.get("latency_ms")]
    if measured:
        st.subheader("Accuracy against speed")
        newest = measured[0]
        base = newest.before
        names = ["original"] + [f"#{r.id}" for r in measured]
        fig = charts.pareto(
            names, [base["latency_ms"]["median"]] + [r.after["latency_ms"]["median"] for r in measured],
            [base["accuracy"]["top1"]] + [r.after["accuracy"]["top1"] for r in measured],
            [base["size_bytes"]] + [r.after["size_bytes"] for r in measured],
            [f"original, measured in run #{newest.id}"] + [r.name for r in measured])
        st.plotly_chart(fig, key="cmp_pareto", width="stretch")
        st.caption("Up and left is better; bubble area shows the file size. Red points are the Pareto "
                   "front: no other run is both faster and more accurate. Hover for each run's recipe.")

    st.subheader("In plain words")
    ids = [r.id for r in runs]
    by_id = {r.id: r for r in runs}
    pick = st.selectbox("Run", ids, key="cmp_pick", format_func=lambda i: f"#{i} {by_id[i].name}")
    chosen = by_id[pick]
    st.markdown(f"**#{chosen.id} {chosen.name}**: {summary(chosen.before, chosen.after)}.")
    with st.expander("Recipe (JSON)"):
        st.json(chosen.recipe)
    if st.button("Delete this run", key="cmp_delete"):
        h.delete(pick)
        st.rerun()

    if len(ids) >= 2:
        st.subheader("Two runs side by side")
        c1, c2 = st.columns(2)
        a_id = c1.selectbox("Run A", ids, index=1, key="cmp_a", format_func=lambda i: f"#{i} {by_id[i].name}")
        b_id = c2.selectbox("Run B", ids, index=0, key="cmp_b", format_func=lambda i: f"#{i} {by_id[i].name}")
        rows = compare_profiles(Profile.from_json(by_id[a_id].after), Profile.from_json(by_id[b_id].after))
        side = pd.DataFrame(rows).rename(columns={"before": f"A: #{a_id}", "after": f"B: #{b_id}",
                                                  "change": "B / A"}).set_index("measure")
        st.table(side)

# ---------------------------------------------------------------- export
st.subheader("Export the current compressed model")
comp = current_compressed()
if comp is None:
    st.info("Prune, distil or quantize the model first; the result can then be exported here.")
    st.stop()
st.markdown(f"**Current compressed model:** {comp['label']}")
formats = st.multiselect("Formats", ["onnx", "torchscript", "executorch", "checkpoint", "tensorrt"],
                         default=["onnx"], key="exp_formats",
                         help="Each file is loaded back in the runtime that will run it and compared "
                              "with the model on real images.")
if st.button("Export", type="primary", key="exp_go", disabled=not formats):
    from compress.export import SUFFIX, export, model_card
    sets, err = eval_sets_for(spec)
    if err:
        st.error(err)
    batches = list(sets.evaluation)[:2] if sets else None
    if batches is None:
        import torch
        batches = [(torch.randn(4, *spec.input_size), torch.zeros(4))]
        st.caption("No labelled images chosen: the files are checked on random inputs.")
    out = Path(tempfile.mkdtemp(prefix="compression-lab-export-"))
    done, failed = {}, {}
    with st.spinner("Exporting and checking each file…"):
        for fmt in formats:
            try:
                done[fmt] = export(comp["exportable"], fmt, out / f"{spec.name}-compressed{SUFFIX[fmt]}",
                                   spec.input_size, batches, loaded=loaded,
                                   meta={"steps": comp["steps"]}).to_json()
            except CompressError as e:
                failed[fmt] = str(e)
    run = h.get(comp.get("run_id")) if h and comp.get("run_id") else None
    if run is not None:
        card = model_card(SimpleNamespace(
            recipe=Recipe.from_dict(run.recipe, check=False), weights=run.after.get("weights", ""),
            device=run.device, data=None, before=run.before, after=run.after, exports=done,
            versions=run.versions or {}))
    else:
        card = model_card(SimpleNamespace(recipe=recipe_of(comp["steps"]), weights=loaded.weights_note,
                                          device="", data=None, before=None, after=None, exports=done,
                                          versions={}))
    st.session_state.export_result = {"key": comp["key"], "label": comp["label"], "done": done,
                                      "failed": failed, "card": card}

res = st.session_state.get("export_result")
if res and res["key"] == comp["key"] and res["label"] == comp["label"]:
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
        cols[-1].download_button("Download the model card (.md)", data=res["card"],
                                 file_name=f"{spec.name}-model-card.md", key="exp_dl_card")
