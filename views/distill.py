"""Distill page: train the pruned model back (knowledge distillation or fine-tuning).

Widgets -> a RecoverConfig -> the current recipe's ``recover`` section -> ``pipeline.run``
in a background job of the session's Workspace (live curves, ETA, cancel; it survives a
reload). The pipeline measures the original, the pruned model it starts from and the
recovered one on the same images, records the run with its model, and the job makes the
recovered model the session's current one.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace

import pandas as pd
import streamlit as st

from compress import charts
from compress import data as D
from compress import distill as K
from compress.errors import CompressError
from compress.measure import Profile
from compress.progress import ProgressEvent
from compress.report import profiles_table
from compress.train import measure_step_seconds
from views.common import (artifact_bytes, current, current_device, current_model, data_settings, eval_sets_for,
                          history, model_key, on_sidebar_settings, require_model)
from views.jobs import follow_job, start_job, workspace

loaded = require_model()
spec = loaded.spec
key = model_key()
ws = workspace()
st.title("Distill")
st.caption("Pruning removes channels and costs accuracy. A few epochs of training win most of it "
           "back. **Knowledge distillation** trains the pruned model to copy the original's "
           "answers, including how sure it is of each class. **Fine-tuning** trains it on the "
           "labels again.")

job = ws.job if ws.job is not None and ws.job.name == "distill" and ws.job.key == key else None
comp = current()
running = job is not None and job.running
# Streamlit forgets a widget's value after a run that did not draw it; the controls are hidden
# while training, so keep their values by writing them back as plain session values.
# Their defaults are set here, once, and the widgets take no default of their own (a widget
# given both warns in the server log).
KD_DEFAULTS = {"kd_method": "distill", "kd_teacher": "original", "kd_T": 4.0, "kd_alpha": 0.9,
               "kd_unfreeze": list(K.UNFREEZE)[1], "kd_epochs": 3, "kd_lr": 0.01, "kd_batch": 64,
               # the sidebar's own path, not the bundled sample (it has no training split)
               "kd_train_path": st.session_state.get("data_path", "").strip(), "kd_limit": 2000,
               "kd_attention": 0.0, "kd_warmup": 0.0}
for k, default in KD_DEFAULTS.items():
    st.session_state[k] = st.session_state.get(k, default)
# A quantized pruned model is recovered through the float model it was made from (kept in the
# history); the page then offers to quantize the recovered model again with the same settings.
if comp is not None and comp.quantized and comp.recipe.prune is not None and comp.recipe.recover is None \
        and comp.recipe.unstructured is None and not running:
    from compress.pipeline import float_origin
    try:
        quantized, comp = comp, float_origin(comp, history())
        st.session_state["kd_requantize"] = (key, quantized.recipe.quantize, quantized.label)
        st.info(f"The current compressed model ({quantized.label}) is quantized, and training needs the "
                f"float model. This page trains the float pruned model it was made from (run #{comp.run_id}); "
                "afterwards one click quantizes the recovered model again with the same settings.")
    except CompressError as e:
        st.info(f"Distillation recovers a pruned float model. {e}")
        st.stop()
student_ok = comp is not None and comp.recipe.prune is not None and not comp.quantized \
    and comp.recipe.unstructured is None and comp.recipe.recover is None
if not running and not (job is not None and job.status == "done"):
    if comp is None or comp.recipe.prune is None or comp.quantized:
        st.info("Distillation recovers a **pruned** model. Prune one on the Prune page first"
                + (" (the current compressed model is quantized, and the float model it came from is "
                   "not available)." if comp is not None and comp.quantized else "."))
        st.stop()
    if comp.recipe.unstructured is not None:
        st.warning("The current compressed model has zeroed weights (unstructured pruning). "
                   "Training would fill them in again: recover after channel pruning, then "
                   "zero weights.")
        st.stop()
    if comp.recipe.recover is not None:
        st.info(f"The current compressed model ({comp.label}) is already recovered"
                + (f" (run #{comp.run_id})" if comp.run_id is not None else "") + ". A recipe holds one "
                "recovery: to train longer, prune again and choose more epochs. Quantize or export it next.")
        st.stop()

device = current_device()
if device is None:
    st.stop()


@st.cache_resource(show_spinner="Loading the teacher…", max_entries=2)
def _teacher(name: str, spec_key: str, _spec):
    return K.load_teacher(name, _spec)


@st.cache_resource(show_spinner=False, max_entries=4)
def _training_images(path: str):
    return D.open_training(path)


@st.cache_data(show_spinner="Timing one training step…", max_entries=16)
def _step_seconds(model_key: str, label: str, batch: int, teacher: str, device_name: str, _student) -> float:
    import torch
    t = None
    if teacher == "original":
        t = loaded.model
    elif teacher:
        t = _teacher(teacher, key, spec)
    return measure_step_seconds(_student, spec.input_size, batch, torch.device(device_name), teacher=t)


@st.cache_data(show_spinner=False, max_entries=8)
def _read_seconds(path: str) -> float:
    return K.seconds_to_read(_training_images(path), spec.preprocess.transform())


def _fmt_duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else (f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h")


def _events_for_page(on_progress):
    """The pipeline names stages "recover: train", "original: latency", …; the live view
    wants "train"/"epoch" for the curves and "measure" for everything else."""
    def relay(ev: ProgressEvent):
        head, _, tail = ev.stage.partition(": ")
        if head == "recover" and tail in ("train", "epoch"):
            on_progress(ProgressEvent(tail, ev.fraction, ev.message, ev.metrics))
        else:
            on_progress(ProgressEvent("measure", ev.fraction, f"{head}: {ev.message}", ev.metrics))
    return relay


result_box = st.container()       # the last run's result, drawn above the controls

# ---------------------------------------------------------------- controls
if not running and student_ok:
    st.markdown(f"**Student:** {comp.label}")
    left, right = st.columns(2)
    with left:
        method = st.radio("Recover by", list(K.RECOVERY_METHODS), key="kd_method", horizontal=True,
                          format_func={"distill": "knowledge distillation", "finetune": "fine-tuning"}.get,
                          help="\n\n".join(f"**{k}**: {v}" for k, v in K.RECOVERY_METHODS.items()))
        if method == "distill":
            teachers = K.compatible_teachers(spec)
            if st.session_state.get("kd_teacher") not in teachers:     # chosen for another model
                st.session_state["kd_teacher"] = "original"
            teacher = st.selectbox("Teacher", teachers, key="kd_teacher",
                                   format_func=lambda n: f"the original {spec.name} (unpruned)"
                                   if n == "original" else n,
                                   help="The model whose answers the student learns to copy. A bigger "
                                        "model can teach more, if its weights are here.")
            temperature = st.slider("Temperature T", 1.0, 10.0, step=0.5, key="kd_T",
                                    help="How much to soften the teacher's answers before copying them.")
            alpha = st.slider("Weight on the teacher α", 0.0, 1.0, step=0.05, key="kd_alpha",
                              help="1 = learn only from the teacher (no labels needed); 0 = only "
                                   "from the labels.")
            st.caption(f"In plain words: with T = {temperature:g} the student learns not only the "
                       "teacher's top class but how close the others came (a cat that looks a bit "
                       f"like a dog). {100 * alpha:.0f}% of the lesson comes from the teacher, "
                       f"{100 * (1 - alpha):.0f}% from the labels.")
            attention = 0.0
            if teacher == "original":
                attention = st.select_slider(
                    "Attention transfer", [0.0, 10.0, 50.0, 200.0, 1000.0], key="kd_attention",
                    format_func=lambda v: "off" if v == 0 else f"weight {v:g}",
                    help="Also copy where in the image each stage of the original looks (its "
                         "spatial attention maps; Zagoruyko & Komodakis 2017). Measured on "
                         "resnet18_cifar10 in docs/distillation.md.")
        else:
            teacher, temperature, alpha, attention = None, 4.0, 0.0, 0.0
        unfreeze = st.radio("Train", list(K.UNFREEZE), key="kd_unfreeze", horizontal=True,
                            format_func=K.UNFREEZE.get,
                            help="Training only what pruning changed is faster per step and keeps "
                                 "the rest of the original's weights exactly.")
    with right:
        epochs = st.number_input("Epochs", 1, 200, key="kd_epochs")
        lr = st.select_slider("Learning rate", [1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.05, 0.1],
                              key="kd_lr", format_func=lambda v: f"{v:g}",
                              help="SGD with momentum and a cosine schedule. 0.01 suits every "
                                   "layer; the tutorial's selective fine-tuning uses 1e-4.")
        warmup = st.number_input("Warm-up epochs", 0.0, 200.0, step=0.25, key="kd_warmup",
                                 help="The learning rate rises linearly from 0 over these epochs, then "
                                      "follows the cosine schedule to 0. Helps with a high rate. "
                                      "At most the number of epochs.")
        batch = st.select_slider("Batch size", [8, 16, 32, 64, 128, 256], key="kd_batch",
                                 help="Images per step. Smaller needs less memory.")
        path = st.text_input("Training photos", key="kd_train_path",
                             help="A CIFAR-10 tarball or folder (its train split), a labelled folder "
                                  "(labels.csv or one sub-folder per class), or a plain folder of "
                                  "photos without labels for label-free distillation (α = 1).").strip()
        limit = st.number_input("Use at most N training photos (0 = all)", 0, 10_000_000, step=500,
                                key="kd_limit", help="A fixed random subset (by the sidebar's seed).")

    images = None
    if not path:
        st.info("Give a folder of training photos to start.")
    else:
        try:
            images = _training_images(path)
        except CompressError as e:
            st.error(str(e))
    if images is not None and images.labels is None:
        if method == "finetune":
            st.error("These photos have no labels: fine-tuning needs labels. Choose knowledge "
                     "distillation; it runs label-free (α = 1) on them.")
            images = None
        elif alpha < 1.0:
            st.info("These photos have no labels: training runs label-free (α = 1).")
            alpha = 1.0
    rcfg = K.RecoverConfig(method=method, epochs=int(epochs), lr=float(lr), batch_size=int(batch),
                           unfreeze=unfreeze, temperature=float(temperature), alpha=float(alpha),
                           teacher=teacher or "original", seed=data_settings()[2],
                           attention=float(attention), warmup_epochs=min(float(warmup), float(epochs)))
    if images is not None:
        try:
            n_train = len(images) if not limit else min(limit, len(images))
            step_s = _step_seconds(key, comp.label, int(batch), teacher or "", str(device), comp.model)
            est = K.estimate_seconds(rcfg, n_train, step_s, _read_seconds(path))
            where = "on the GPU" if device.type == "cuda" else "on this machine's CPU"
            st.info(f"**Estimated time {where}: about {_fmt_duration(est.seconds)}** for {rcfg.epochs} "
                    f"epoch(s) of {est.steps_per_epoch} steps over {n_train:,} photos. Estimate: one training "
                    f"step at batch {rcfg.batch_size} took {est.step_seconds:.2f} s here just now, plus "
                    f"{est.read_seconds:.2f} s to read its photos. Validation after each epoch and measuring "
                    "the three models afterwards add to it.")
        except CompressError as e:
            st.error(str(e))
            images = None

    sets, sets_err = eval_sets_for(spec)
    if sets_err:
        st.error(sets_err)
    elif sets is None:
        st.caption("Choose labelled images in the sidebar to follow validation accuracy per epoch and "
                   "to measure accuracy before and after.")

    if st.button("Start", type="primary", key="kd_start", disabled=images is None):
        from compress import pipeline
        recipe = on_sidebar_settings(comp.recipe, 20).with_step("recover", rcfg)
        recipe = replace(recipe, data=replace(recipe.data, train_path=path, train_limit=int(limit) or None))
        start, original, runs_history = comp, current_model(), history()

        def work(on_progress, cancel):
            return pipeline.run(recipe, on_progress=_events_for_page(on_progress), cancel=cancel,
                                history=runs_history, source="app", loaded=original, sets=sets, start=start)

        def done(result):            # in the job's thread: lands in the session even if nobody watches
            ws.current = result.point
        start_job(ws, "distill", work, key=key, on_done=done)


# ---------------------------------------------------------------- while it trains
def _training_progress(job) -> None:
    last = job.last
    train = [e for e in job.events if e.stage == "train" and "eta_s" in e.metrics]
    if last is None:
        st.progress(0.0, text="starting…")
    elif last.stage == "measure":
        st.progress(last.fraction, text=last.message)
    else:
        m = train[-1].metrics if train else {}
        extra = (f" · {m['samples_per_s']:.0f} photos/s · about {_fmt_duration(m['eta_s'])} left"
                 if m else "")
        st.progress(last.fraction, text=f"{last.message}{extra}")
    st.caption(f"Running for {_fmt_duration(time.time() - job.started)}. You can leave this page or reload "
               "the tab; the training goes on and its result appears here.")


if running:
    st.subheader("Training")
    follow_job(ws, _training_progress, "kd_cancel", "Stopping after the current step…",
               after=lambda job: st.plotly_chart(charts.training_curves(job.events), key="kd_live_chart"))
    st.stop()

# ---------------------------------------------------------------- the result
with result_box:
    if job is not None and job.status in ("failed", "cancelled"):
        if job.status == "failed":
            st.error(job.error)
        else:
            st.warning(f"Cancelled ({job.error}). The current compressed model is unchanged.")
        if job.events:
            st.plotly_chart(charts.training_curves(job.events), key="kd_stopped_chart")
    elif job is not None and job.status == "done":
        r = job.result
        cfg = r.recipe.recover
        for w in r.warnings:
            st.warning(w)
        step = next(s for s in r.steps if s["step"] == cfg.method)
        st.success(f"Recovered in {_fmt_duration(step['seconds'])} on {step['report']['train_images']:,} training "
                   f"photos and recorded as run #{r.run_id}. It is the current compressed model.")
        prof = {"original": Profile.from_json(r.before), "pruned, before recovery": Profile.from_json(r.start_profile),
                "recovered": Profile.from_json(r.after)}
        orig, before, after = (p.accuracy for p in prof.values())
        if orig and before and after:
            lost = orig.top1 - before.top1
            won = after.top1 - before.top1
            st.markdown(f"Pruning cost **{lost:.1f} points** of top-1; {cfg.epochs} epoch(s) of "
                        f"{'distillation' if cfg.method == 'distill' else 'fine-tuning'} won back "
                        f"**{won:.1f}**: {after.top1:.2f}% against the original's {orig.top1:.2f}% "
                        f"(n = {after.n} images; 95% intervals in the table).")
        st.subheader("Original, pruned and recovered, measured in the same run on the same images")
        st.table(pd.DataFrame(profiles_table(prof)).set_index("measure"))
        st.plotly_chart(charts.training_curves(job.events, orig.top1 if orig else None), key="kd_done_chart")
        hist = pd.DataFrame(step["report"]["history"]).rename(columns={
            "epoch": "epoch", "train_loss": "training loss", "train_acc": "train top-1 %",
            "val_acc": "validation top-1 %", "seconds": "seconds", "samples_per_s": "photos/s", "lr": "last lr"})
        st.table(hist.round(3).astype(object).where(hist.notna(), "–").set_index("epoch"))
        st.caption("Settings: " + ", ".join(f"{k} {v}" for k, v in asdict(cfg).items()))
        st.download_button("Download the recovered model (.pt, loads with weights_only=True)",
                           data=artifact_bytes(r.model, loaded), file_name=f"{spec.name}-recovered.pt",
                           key="kd_download")
        again = st.session_state.get("kd_requantize")
        if again is not None and again[0] == key and again[1] is not None:
            qcfg = again[1]
            st.markdown(f"This model was quantized before it was recovered ({again[2]}).")
            if st.button(f"Quantize it again ({qcfg.mode}, the same settings)", key="kd_requantize_btn"):
                from views.common import run_pipeline
                q = run_pipeline(on_sidebar_settings(r.recipe, 20).with_step("quantize", qcfg),
                                 "Quantizing the recovered model", start=r.point)
                if q is not None:
                    del st.session_state["kd_requantize"]
                    acc = q.after.get("accuracy") or {}
                    st.session_state["kd_requantized"] = (
                        key, f"Quantized again and recorded as run #{q.run_id}: {q.point.label}"
                        + (f", top-1 {acc['top1']:.2f}% (n = {acc['n']})" if acc else "")
                        + ". It is the current compressed model; Compare shows it next to the others.")
        done_msg = st.session_state.get("kd_requantized")
        if done_msg is not None and done_msg[0] == key:
            st.success(done_msg[1])
        if not student_ok:
            st.stop()
