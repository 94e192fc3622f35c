"""Explore page: one accuracy budget starts the autopilot (compress.auto) in the background;
the models it measured form a ladder, from the most accurate to the smallest and fastest,
and one slider moves along it instantly (every figure is already measured). A photo is
classified by the selected model next to the original.

The ladder persists in the run history: searching again with the same settings reuses
every run already measured, so a second visit takes seconds.
"""
from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from compress import auto, demo
from compress.errors import CompressError
from compress.images import classify_side_by_side, read_image
from compress.pipeline import point_of_run
from compress.report import ladder as L
from compress.report import photo as photo_report
from compress.zoo import no_data_hint, sample_data_path
from views.common import base_recipe, current_model, history, model_key, require_model
from views.jobs import follow_job, start_job, workspace

loaded = require_model()
spec = loaded.spec
key = model_key()
ws = workspace()
st.title("Explore the trade-off")
st.caption("Say how much accuracy the model may lose. The autopilot tries channel pruning and 8-bit "
           "quantization, measures every candidate on your images, and lines up the best ones from "
           "the most accurate to the smallest and fastest. Then slide along them.")

base = base_recipe()
if not base.data.path:
    st.info(no_data_hint(spec))
    st.stop()


def _demo():
    st.session_state["ex_demo_go"] = True


sample = sample_data_path(spec)
shipped = demo.variants(spec.name)
if sample is not None and shipped and Path(base.data.path).resolve() == sample.resolve():
    st.button("Quick demo on the bundled sample (about half a minute, offline)", key="ex_demo", on_click=_demo,
              help=demo.button_help(shipped))
last = auto.remembered(history(), base)
if "ex_drop" not in st.session_state:
    # a new visit opens with the last search's settings for this model and these images, so the
    # ladder it measured appears at once (read from the history below)
    if last is not None:
        st.session_state.update({"ex_drop": last.max_drop, "ex_runtime": last.runtime, "ex_objective": last.objective})
    if last is not None and not last.demo:            # the demo has no search settings of its own
        st.session_state.update({"ex_minutes": int(last.budget_minutes), "ex_ratios": list(last.ratios),
                                 "ex_screen": last.screen_images})
c = st.columns([2, 1, 1, 1])
drop = c[0].slider("How many points of top-1 may it lose?", 0.0, 5.0, 1.0, 0.25, key="ex_drop")
runtime = c[1].radio("Runs in", list(auto.RUNTIMES), key="ex_runtime",
                     format_func=auto.runtime_name)
objective = c[2].radio("Aim for", list(auto.OBJECTIVES), key="ex_objective",
                       format_func={"latency": "speed", "size": "size"}.get)
minutes = c[3].number_input("Time budget (min)", 1, 600, 30, key="ex_minutes")
with st.expander("Search settings"):
    ratios = st.multiselect("Channel ratios to try (BatchNorm re-estimated after each prune)",
                            [0.1, 0.2, 0.35, 0.5, 0.65, 0.8], default=[0.2, 0.35, 0.5, 0.65], key="ex_ratios")
    screen = st.number_input("Screen each candidate on this many images first", 20, 5000, 300, key="ex_screen")
cfg = auto.AutoConfig(max_drop=float(drop), objective=objective, runtime=runtime, budget_minutes=float(minutes),
                      screen_images=int(screen), ratios=tuple(sorted(ratios)))

job = ws.job if ws.job is not None and ws.job.name == "explore" and ws.job.key == key else None
running = job is not None and job.running
demo_go = st.session_state.pop("ex_demo_go", False)
if not running and (st.button("Find the models", type="primary", key="ex_go") or demo_go):
    original, runs_history = current_model(), history()

    def work(on_progress, cancel):
        if demo_go:
            return demo.run(base, runtime=runtime, max_drop=float(drop), objective=objective, history=runs_history,
                            on_progress=on_progress, cancel=cancel, loaded=original)
        return auto.search(base, cfg, history=runs_history, on_progress=on_progress, cancel=cancel, loaded=original)
    start_job(ws, "explore", work, key=key)


def _search_progress(job) -> None:
    last = job.last
    st.progress(last.fraction if last else 0.0, text=last.message if last else "starting…")
    st.caption(f"Searching for {time.time() - job.started:.0f} s. Every measured candidate is a run in "
               "Compare; you can leave this page and come back.")


if running:
    follow_job(ws, _search_progress, "ex_cancel")
    st.stop()
if job is not None and job.status != "done":
    (st.error if job.status == "failed" else st.warning)(job.error or job.status)
    st.caption("Runs measured so far stay in the history: pressing the button again goes on from them.")
    st.stop()
if job is None:
    # a second visit: the ladder of an earlier search with these settings, from the history, at once
    try:
        res = (demo.run(base, runtime=last.runtime, max_drop=last.max_drop, objective=last.objective,
                        history=history(), measure=False)
               if last is not None and last.demo and shipped else auto.search(base, cfg, history=history(), measure=False))
    except CompressError as e:
        st.error(str(e))
        st.stop()
    if not res.frontier:
        st.caption(f"The search measures up to {len(auto.candidates(base, cfg))} candidates on your images (the "
                   "sidebar's data and limit) within the time budget. Runs already in the history with the same "
                   "settings are reused, so searching again is quick.")
        st.stop()
    st.info(L.history_note(res.candidates, demo=res.config.demo))
else:
    res: auto.AutoResult = job.result
ladder = list(res.frontier)            # most accurate first
if not ladder:
    st.warning("No candidate was measured on all the images within the time budget. Give it more time.")
    st.stop()
if res.chosen is None:
    st.warning(f"None of the measured models stays within {res.config.max_drop:g} points; the ladder shows "
               "what was measured.")
names = L.rung_names(ladder, res.config.max_drop)
ids = [p["run_id"] for p in ladder]
start = 1 + ids.index(res.chosen["run_id"]) if res.chosen is not None and res.chosen["run_id"] in ids else len(ids)
pick = st.select_slider("From the most accurate to the smallest and fastest", names, value=names[start],
                        key="ex_rung")
i = names.index(pick)
st.caption(L.choice_caption(res.chosen is not None and i == start and i > 0, res.config.demo, res.config.max_drop))
b = ladder[0]["before"]
a = b if i == 0 else ladder[i - 1]["after"]
for col, m in zip(st.columns(3), L.rung_metrics(b, a, is_original=not i)):
    col.metric(m["label"], m["value"], m["delta"], help=m["help"], delta_color=m["delta_color"])
notes = L.rung_notes(b, a, ladder[i - 1] if i else None, res.config.max_drop)
st.caption(notes["runs_in"])
if notes["warning"]:
    st.warning(notes["warning"])
if notes["against"]:
    st.caption(notes["against"])
if res.config.demo:
    with st.expander("How the shipped compressed models were made"):
        st.markdown("\n".join(f"- {line}" for line in demo.made_notes(shipped)))
with st.expander(f"All {len(res.candidates)} candidates and why each lost"):
    st.dataframe(L.candidate_rows(res.candidates), hide_index=True, width="stretch")


@st.cache_resource(max_entries=8, show_spinner="Loading the model from its run…")
def _model_of(run_id: int, path: str):
    return point_of_run(history().get(run_id)).module


photo = st.file_uploader("Classify a photo with this model and the original", type=["jpg", "jpeg", "png", "webp",
                                                                                    "bmp"], key="ex_photo")
if photo is not None and i:
    try:
        image = read_image(photo.getvalue(), photo.name or "photo")
        model = _model_of(ladder[i - 1]["run_id"], str(history().path))
        side = classify_side_by_side(photo_report.run_and_original(loaded.model, pick, model), image,
                                     spec.preprocess.transform(), spec.categories, runs=5, warmup=1)
    except CompressError as e:
        st.error(str(e))
    else:
        cols = st.columns(2)
        cols[0].image(image, width=240)
        answers = [photo_report.answer(p) for p in side.predictions]
        cols[1].markdown(f"Original: {answers[0]}  \nThis model: {answers[1]}")
