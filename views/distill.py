"""Distill page: train the pruned model back (knowledge distillation or fine-tuning).

Widgets -> a RecoverConfig -> the current recipe's ``recover`` section -> ``pipeline.run``
in a background job of the session's Workspace (live curves, ETA, cancel; it survives a
reload). The pipeline measures the original, the pruned model it starts from and the
recovered one on the same images, records the run with its model, and the job makes the
recovered model the session's current one.
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st
import torch

from compress import charts, pipeline
from compress import data as D
from compress import distill as K
from compress import recovery as RV
from compress.errors import CompressError
from compress.report import profiles_table
from compress.report import recovery as RR
from views.common import (artifact_bytes, current, current_device, current_model, data_settings, eval_sets_for,
                          history, model_key, on_sidebar_settings, require_model, run_pipeline)
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

JOB = "distill"                    # the name of this page's background job
job = ws.job if ws.job is not None and ws.job.name == JOB and ws.job.key == key else None
comp = current()
running = job is not None and job.running
# Streamlit forgets a widget's value after a run that did not draw it; the controls are hidden
# while training, so keep their values by writing them back as plain session values.
# Their defaults are set here, once, and the widgets take no default of their own (a widget
# given both warns in the server log).
# The manual settings start at the recovery recipe's own (compress/recovery.py: the best
# measured recipe on 50,000 photos); with fewer photos the recommended toggle scales them.
KD_DEFAULTS = {"kd_method": "distill", "kd_teacher": K.ORIGINAL, "kd_T": RV.TEMPERATURE, "kd_alpha": RV.ALPHA,
               "kd_unfreeze": list(K.UNFREEZE)[1], "kd_epochs": 3, "kd_lr": RV.BEST_LR, "kd_batch": RV.BEST_BATCH,
               # the sidebar's own path, not the bundled sample (it has no training split)
               "kd_train_path": st.session_state.get("data_path", "").strip(), "kd_limit": 2000,
               "kd_attention": RV.ATTENTION, "kd_warmup": RV.BEST_WARMUP, "kd_auto": True}
for k, default in KD_DEFAULTS.items():
    st.session_state[k] = st.session_state.get(k, default)
# A quantized pruned model is recovered through the float model it was made from (kept in the
# history); the page then offers to quantize the recovered model again with the same settings.
if comp is not None and RR.through_float_origin(comp) and not running:
    try:
        quantized, comp = comp, pipeline.float_origin(comp, history())
        st.session_state["kd_requantize"] = (key, quantized.recipe.quantize, quantized.label)
        st.info(RR.float_origin_note(quantized, comp))
    except CompressError as e:
        st.info(RR.no_float_origin(str(e)))
        st.stop()
student_ok = RR.recoverable(comp)
if not running and not (job is not None and job.status == "done"):
    blocked = RR.not_recoverable(comp)
    if blocked is not None:
        (st.warning if blocked[0] == "warning" else st.info)(blocked[1])
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
    t = None
    if teacher == K.ORIGINAL:
        t = loaded.model
    elif teacher:
        t = _teacher(teacher, key, spec)
    return RR.step_seconds(_student, spec.input_size, batch, torch.device(device_name), teacher=t)


@st.cache_data(show_spinner=False, max_entries=8)
def _read_seconds(path: str) -> float:
    return RV.seconds_to_read(_training_images(path), spec.preprocess.transform())


result_box = st.container()       # the last run's result, drawn above the controls

# ---------------------------------------------------------------- controls
if not running and student_ok:
    st.markdown(f"**Student:** {comp.label}")
    auto = st.toggle("Choose the training settings from the photos (recommended)", key="kd_auto",
                     help="Batch size, learning rate and warm-up, T, α and attention transfer are set from "
                          "how many training photos there are and whether they have labels, by the same "
                          "recipe the presets and the autopilot use; a slice of the photos is held out "
                          "to keep the best epoch. Turn off to set each one yourself.")
    left, right = st.columns(2)
    with left:
        method = st.radio("Recover by", list(K.RECOVERY_METHODS), key="kd_method", horizontal=True,
                          format_func=lambda m: K.RECOVERY_METHODS[m].label,
                          help="\n\n".join(f"**{k}**: {v.description}" for k, v in K.RECOVERY_METHODS.items()))
        if K.RECOVERY_METHODS[method].uses_teacher:
            teachers = K.compatible_teachers(spec)
            if st.session_state.get("kd_teacher") not in teachers:     # chosen for another model
                st.session_state["kd_teacher"] = K.ORIGINAL
            teacher = st.selectbox("Teacher", teachers, key="kd_teacher",
                                   format_func=lambda n: f"the original {spec.name} (unpruned)"
                                   if n == K.ORIGINAL else n,
                                   help="The model whose answers the student learns to copy. A bigger "
                                        "model can teach more, if its weights are here.")
            temperature = alpha = attention = None
        if K.RECOVERY_METHODS[method].uses_teacher and not auto:
            temperature = st.slider("Temperature T", 1.0, 10.0, step=0.5, key="kd_T",
                                    help="How much to soften the teacher's answers before copying them.")
            alpha = st.slider("Weight on the teacher α", 0.0, 1.0, step=0.05, key="kd_alpha",
                              help="1 = learn only from the teacher (no labels needed); 0 = only "
                                   "from the labels.")
            st.caption(RR.kd_sentence(temperature, alpha))
            attention = 0.0
            if teacher == K.ORIGINAL:
                attention = st.select_slider(
                    "Attention transfer", [0.0, 10.0, 50.0, 200.0, 1000.0], key="kd_attention",
                    format_func=lambda v: "off" if v == 0 else f"weight {v:g}",
                    help="Also copy where in the image each stage of the original looks (its "
                         "spatial attention maps; Zagoruyko & Komodakis 2017). Measured on "
                         "resnet18_cifar10 in docs/distillation.md.")
        elif not K.RECOVERY_METHODS[method].uses_teacher:
            teacher, temperature, alpha, attention = None, None, None, None
        unfreeze = st.radio("Train", list(K.UNFREEZE), key="kd_unfreeze", horizontal=True,
                            format_func=K.UNFREEZE.get,
                            help="Training only what pruning changed is faster per step and keeps "
                                 "the rest of the original's weights exactly.")
    with right:
        epochs = st.number_input("Epochs", 1, 200, key="kd_epochs")
        lr = warmup = batch = None
        if not auto:
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
    if images is not None:
        ruled, no_labels, label_free = RR.label_rule(method, alpha if alpha is not None else 0.5,
                                                     images.labels is not None)
        alpha = ruled if alpha is not None else None
        if no_labels:
            st.error(no_labels)
            images = None
        elif label_free:
            st.info(label_free)
    chosen = {} if auto else dict(lr=float(lr), batch_size=int(batch), warmup_epochs=min(float(warmup), float(epochs)),
                                  **({} if temperature is None else dict(temperature=float(temperature),
                                                                         alpha=float(alpha), attention=float(attention))))
    rcfg = K.RecoverConfig(method=method, epochs=int(epochs), unfreeze=unfreeze, teacher=teacher or K.ORIGINAL,
                           seed=data_settings()[2], **chosen)
    if images is not None:
        try:
            n_train = len(images) if not limit else min(limit, len(images))
            plan = RV.plan(rcfg, n_train, images.labels is not None)
            if auto:
                st.caption(RR.plan_sentence(plan))
            step_s = _step_seconds(key, comp.label, plan.config.batch_size, teacher or "", str(device), comp.model)
            st.info(RR.estimate_sentence(plan.config, plan.n_train, step_s, _read_seconds(path), device))
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
        recipe = on_sidebar_settings(comp.recipe, 20).with_step("recover", rcfg)
        recipe = replace(recipe, data=replace(recipe.data, train_path=path, train_limit=int(limit) or None))
        start, original, runs_history = comp, current_model(), history()

        def work(on_progress, cancel):
            return pipeline.run(recipe, on_progress=RR.training_events(on_progress), cancel=cancel,
                                history=runs_history, source="app", loaded=original, sets=sets, start=start)

        def done(result):            # in the job's thread: lands in the session even if nobody watches
            ws.current = result.point
        start_job(ws, JOB, work, key=key, on_done=done)


# ---------------------------------------------------------------- while it trains
def _training_progress(job) -> None:
    fraction, text, caption = RR.training_progress(job.events, job.started)
    st.progress(fraction, text=text)
    st.caption(caption)


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
        st.success(RR.recovered_sentence(r))
        prof = RR.recovery_profiles(r)
        won_back = RR.won_back_sentence(prof, cfg)
        if won_back:
            st.markdown(won_back)
        st.subheader("Original, pruned and recovered, measured in the same run on the same images")
        st.table(pd.DataFrame(profiles_table(prof)).set_index("measure"))
        orig = prof["original"].accuracy
        st.plotly_chart(charts.training_curves(job.events, orig.top1 if orig else None), key="kd_done_chart")
        st.table(pd.DataFrame(RR.epoch_table(RR.recovery_step(r)["report"]["history"])).set_index("epoch"))
        st.caption(RR.settings_sentence(cfg))
        st.download_button("Download the recovered model (.pt, loads with weights_only=True)",
                           data=artifact_bytes(r.model, loaded), file_name=f"{spec.name}-recovered.pt",
                           key="kd_download")
        again = st.session_state.get("kd_requantize")
        if again is not None and again[0] == key and again[1] is not None:
            qcfg = again[1]
            st.markdown(f"This model was quantized before it was recovered ({again[2]}).")
            if st.button(f"Quantize it again ({qcfg.mode}, the same settings)", key="kd_requantize_btn"):
                q = run_pipeline(on_sidebar_settings(r.recipe, 20).with_step("quantize", qcfg),
                                 "Quantizing the recovered model", start=r.point)
                if q is not None:
                    del st.session_state["kd_requantize"]
                    st.session_state["kd_requantized"] = (key, RR.requantized_sentence(q))
        done_msg = st.session_state.get("kd_requantized")
        if done_msg is not None and done_msg[0] == key:
            st.success(done_msg[1])
        if not student_ok:
            st.stop()
