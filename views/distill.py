"""Distill page: train the pruned model back (knowledge distillation or fine-tuning).

Widgets -> RecoverConfig -> compress.distill.recover in a background job (live curves,
ETA, cancel) -> original / pruned / recovered measured on the same images. The
recovered model becomes the session's current compressed model.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict

import pandas as pd
import streamlit as st

from compress import charts
from compress import data as D
from compress import distill as K
from compress.errors import CompressError
from compress.measure import profile_model, profiles_table
from compress.progress import ProgressEvent
from compress.zoo import ZOO
from views import jobs
from views.common import (artifact_bytes, current_compressed, current_device, data_settings,
                          eval_sets_for, history, recipe_of, require_model, set_compressed)

loaded = require_model()
spec = loaded.spec
key = st.session_state.get("model_key", spec.name)
st.title("Distill")
st.caption("Pruning removes channels and costs accuracy. A few epochs of training win most of it "
           "back. **Knowledge distillation** trains the pruned model to copy the original's "
           "answers, including how sure it is of each class. **Fine-tuning** trains it on the "
           "labels again.")

JOB = "distill_job"
job = st.session_state.get(JOB)
if job is not None and job.key != key:
    job = None                                   # a job for another model: not shown here

# ---------------------------------------------------------------- a finished job
if job is not None and job.status == "done" and not job.consumed:
    r = job.result
    set_compressed(r["model"], r["label"], r["steps"], run_id=r["run_id"])
    job.consumed = True
    st.rerun()                                   # so the sidebar names the new compressed model

comp = current_compressed()
running = job is not None and job.running
# Streamlit forgets a widget's value after a run that did not draw it; the controls are hidden
# while training, so keep their values by writing them back as plain session values.
for k in ("kd_method", "kd_teacher", "kd_T", "kd_alpha", "kd_unfreeze", "kd_epochs", "kd_lr", "kd_batch",
          "kd_train_path", "kd_limit"):
    if k in st.session_state:
        st.session_state[k] = st.session_state[k]
if not running:
    if comp is None or comp["quantized"]:
        st.info("Distillation recovers a **pruned** model. Prune one on the Prune page first"
                + (" (the current compressed model is quantized: recover before quantizing)."
                   if comp and comp["quantized"] else "."))
        st.stop()
    if any(s["step"] == "prune_unstructured" for s in comp["steps"]):
        st.warning("The current compressed model has zeroed weights (unstructured pruning). "
                   "Training would fill them in again: recover after channel pruning, then "
                   "zero weights.")
        st.stop()

sets, sets_err = eval_sets_for(spec)
if sets_err:
    st.error(sets_err)
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
    return K.measure_step_seconds(_student, spec.input_size, batch, torch.device(device_name), teacher=t)


@st.cache_data(show_spinner=False, max_entries=8)
def _read_seconds(path: str, n: int) -> float:
    """Seconds to read and prepare ``n`` training photos (part of every step)."""
    images = _training_images(path)
    ds = D.ImageListDataset(images.subset(list(range(min(n, len(images))))), spec.preprocess.transform())
    t0 = time.perf_counter()
    for i in range(len(ds)):
        _ = ds[i]
    return (time.perf_counter() - t0) / max(len(ds), 1)


def _fmt_duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else (f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h")


result_box = st.container()       # the last run's result, drawn above the controls

# ---------------------------------------------------------------- controls
if not running:
    if job is not None and job.status == "done":
        st.subheader("Recover further")
    st.markdown(f"**Student:** {comp['label']}")
    left, right = st.columns(2)
    with left:
        method = st.radio("Recover by", list(K.RECOVERY_METHODS), key="kd_method", horizontal=True,
                          format_func={"distill": "knowledge distillation", "finetune": "fine-tuning"}.get,
                          help="\n\n".join(f"**{k}**: {v}" for k, v in K.RECOVERY_METHODS.items()))
        if method == "distill":
            teachers = ["original"]
            for name, s in ZOO.items():
                if name == spec.name:
                    continue
                try:
                    K.check_teacher(s, spec)
                    teachers.append(name)
                except CompressError:
                    pass
            teacher = st.selectbox("Teacher", teachers, key="kd_teacher",
                                   format_func=lambda n: f"the original {spec.name} (unpruned)"
                                   if n == "original" else n,
                                   help="The model whose answers the student learns to copy. A bigger "
                                        "model can teach more, if its weights are here.")
            temperature = st.slider("Temperature T", 1.0, 10.0, 4.0, 0.5, key="kd_T",
                                    help="How much to soften the teacher's answers before copying them.")
            alpha = st.slider("Weight on the teacher α", 0.0, 1.0, 0.9, 0.05, key="kd_alpha",
                              help="1 = learn only from the teacher (no labels needed); 0 = only "
                                   "from the labels.")
            st.caption(f"In plain words: with T = {temperature:g} the student learns not only the "
                       "teacher's top class but how close the others came (a cat that looks a bit "
                       f"like a dog). {100 * alpha:.0f}% of the lesson comes from the teacher, "
                       f"{100 * (1 - alpha):.0f}% from the labels.")
        else:
            teacher, temperature, alpha = None, 4.0, 0.0
        unfreeze = st.radio("Train", list(K.UNFREEZE), key="kd_unfreeze", horizontal=True,
                            format_func=K.UNFREEZE.get, index=1,
                            help="Training only what pruning changed is faster per step and keeps "
                                 "the rest of the original's weights exactly.")
    with right:
        epochs = st.number_input("Epochs", 1, 200, 3, key="kd_epochs")
        lr = st.select_slider("Learning rate", [1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1], 0.01,
                              key="kd_lr", format_func=lambda v: f"{v:g}",
                              help="SGD with momentum and a cosine schedule. 0.01 suits every "
                                   "layer; the tutorial's selective fine-tuning uses 1e-4.")
        batch = st.select_slider("Batch size", [8, 16, 32, 64, 128, 256], 64, key="kd_batch",
                                 help="Images per step. Smaller needs less memory.")
        path = st.text_input("Training photos", value=data_settings()[0], key="kd_train_path",
                             help="A CIFAR-10 tarball or folder (its train split), a labelled folder "
                                  "(labels.csv or one sub-folder per class), or a plain folder of "
                                  "photos without labels for label-free distillation (α = 1).").strip()
        limit = st.number_input("Use at most N training photos (0 = all)", 0, 10_000_000, 2000, step=500,
                                key="kd_limit", help="A fixed random subset (by the sidebar's seed).")

    images, estimate = None, None
    if not path:
        st.info("Give a folder of training photos to start.")
    else:
        try:
            images = _training_images(path)
        except CompressError as e:
            st.error(str(e))
    if images is not None:
        n_train = len(images) if not limit else min(limit, len(images))
        if images.labels is None:
            if method == "finetune":
                st.error("These photos have no labels: fine-tuning needs labels. Choose knowledge "
                         "distillation; it runs label-free (α = 1) on them.")
                images = None
            elif alpha < 1.0:
                st.info("These photos have no labels: training runs label-free (α = 1).")
                alpha = 1.0
    if images is not None:
        try:
            step_s = _step_seconds(key, comp["label"], batch, teacher or "", str(device), comp["model"])
            read_s = _read_seconds(path, 16) * batch
            steps = math.ceil(n_train / batch)
            estimate = epochs * steps * (step_s + read_s)
            where = "on the GPU" if device.type == "cuda" else "on this machine's CPU"
            st.info(f"**Estimated time {where}: about {_fmt_duration(estimate)}** for {epochs} "
                    f"epoch(s) of {steps} steps over {n_train:,} photos. Estimate: one training step at "
                    f"batch {batch} took {step_s:.2f} s here just now, plus {read_s:.2f} s to read its "
                    "photos. Validation after each epoch and measuring the three models afterwards "
                    "add to it.")
        except CompressError as e:
            st.error(str(e))
            images = None

    if sets is None and not sets_err:
        st.caption("Choose labelled images in the sidebar to follow validation accuracy per epoch and "
                   "to measure accuracy before and after.")

    if st.button("Start", type="primary", key="kd_start", disabled=images is None):
        rcfg = K.RecoverConfig(method=method, epochs=int(epochs), lr=float(lr), batch_size=int(batch),
                               unfreeze=unfreeze, temperature=float(temperature), alpha=float(alpha),
                               teacher=teacher or "original", seed=data_settings()[2])
        try:
            K.validate_recover(rcfg)
            teacher_model = None if rcfg.method != "distill" or rcfg.teacher == "original" \
                else _teacher(rcfg.teacher, key, spec)
            loader = D.train_loader(path, spec.preprocess.transform(), limit=limit or None,
                                    seed=rcfg.seed, batch_size=rcfg.batch_size)
        except CompressError as e:
            st.error(str(e))
            st.stop()
        pruned, original, student_label, prior_steps = comp["model"], loaded.model, comp["label"], comp["steps"]
        evaluation = sets.evaluation if sets else None
        runs = 20
        runs_history = history()
        recipe = recipe_of(prior_steps, recover=asdict(rcfg))

        def work(on_progress, cancel):
            t0 = time.perf_counter()
            recovered, res = K.recover(pruned, original, rcfg, loader, device, teacher=teacher_model,
                                       val_batches=evaluation, on_progress=on_progress, cancel=cancel)
            seconds = time.perf_counter() - t0
            profiles = {}
            for i, (name, m) in enumerate((("original", original), ("pruned, before recovery", pruned),
                                           ("recovered", recovered))):
                def relay(ev, i=i, name=name):
                    on_progress(ProgressEvent("measure", (i + ev.fraction) / 3, f"measuring {name}: {ev.message}"))
                profiles[name] = profile_model(m, spec.name, spec.input_size, device, runs=runs, warmup=3,
                                               eval_batches=evaluation, weights=loaded.weights_note,
                                               on_progress=relay, cancel=cancel)
            what = "distilled" if rcfg.method == "distill" else "fine-tuned"
            steps = prior_steps + [{"step": rcfg.method, "config": asdict(rcfg),
                                    "report": {"history": [asdict(h) for h in res.history]}}]
            run_id = None
            if runs_history is not None:          # recorded like every run, for the Compare page
                run_id = runs_history.start(recipe.to_dict(), name=recipe.describe(), source="app",
                                            device=str(device), versions=K.software_versions())
                runs_history.finish(run_id, profiles["original"].to_json(), profiles["recovered"].to_json(),
                                    steps, {})
            return {"key": key, "run_id": run_id, "model": recovered, "history": res.history, "profiles": profiles,
                    "config": rcfg, "seconds": seconds, "n_train": len(loader.dataset),
                    "label": f"{student_label}, {what} {rcfg.epochs} epoch(s)",
                    "steps": prior_steps + [{"step": rcfg.method, "config": asdict(rcfg)}]}
        st.session_state[JOB] = jobs.start("distill", work, key=key)
        st.rerun()


# ---------------------------------------------------------------- while it trains
@st.fragment(run_every=1.0)
def live():
    job = st.session_state.get(JOB)
    if job is None:
        return
    if not job.running:
        st.rerun()                               # redraw the whole page with the result
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
    st.caption(f"Running for {_fmt_duration(time.time() - job.started)}. You can leave this page; the "
               "training goes on and its result appears here.")
    if st.button("Cancel", key="kd_cancel"):
        job.cancel.set()
        st.warning("Stopping after the current step…")
    st.plotly_chart(charts.training_curves(job.events), key="kd_live_chart")


if running:
    st.subheader("Training")
    live()
    st.stop()

# ---------------------------------------------------------------- the result
with result_box:
    if job is not None and job.status in ("failed", "cancelled"):
        if job.status == "failed":
            st.error(job.error)
        else:
            st.warning(f"Training was {job.error}. The current compressed model is unchanged.")
        if job.events:
            st.plotly_chart(charts.training_curves(job.events), key="kd_stopped_chart")
    elif job is not None and job.status == "done":
        r = job.result
        cfg = r["config"]
        prof = r["profiles"]
        st.success(f"Recovered in {_fmt_duration(r['seconds'])} on {r['n_train']:,} training photos. It is now "
                   "the current compressed model.")
        orig, before, after = (prof[k].accuracy for k in ("original", "pruned, before recovery", "recovered"))
        if orig and before and after:
            lost = orig.top1 - before.top1
            won = after.top1 - before.top1
            st.markdown(f"Pruning cost **{lost:.1f} points** of top-1; {cfg.epochs} epoch(s) of "
                        f"{'distillation' if cfg.method == 'distill' else 'fine-tuning'} won back "
                        f"**{won:.1f}**: {after.top1:.2f}% against the original's {orig.top1:.2f}% "
                        f"(n = {after.n} images; 95% intervals in the table).")
        st.subheader("Original, pruned and recovered, measured now on the same images")
        st.table(pd.DataFrame(profiles_table(prof)).set_index("measure"))
        st.plotly_chart(charts.training_curves(job.events, orig.top1 if orig else None), key="kd_done_chart")
        hist = pd.DataFrame([asdict(h) for h in r["history"]]).rename(columns={
            "epoch": "epoch", "train_loss": "training loss", "train_acc": "train top-1 %",
            "val_acc": "validation top-1 %", "seconds": "seconds", "samples_per_s": "photos/s", "lr": "last lr"})
        st.table(hist.round(3).astype(object).where(hist.notna(), "–").set_index("epoch"))
        st.caption("Settings: " + ", ".join(f"{k} {v}" for k, v in asdict(cfg).items()))
        st.download_button("Download the recovered model (.pt, loads with weights_only=True)",
                           data=artifact_bytes(r["model"], loaded), file_name=f"{spec.name}-recovered.pt",
                           key="kd_download")
