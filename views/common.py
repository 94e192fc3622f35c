"""What every page shares: the sidebar's choices, the session's one truth, the pipeline
calls with their progress bars and messages, cached heavy objects.

The session's truth is a :class:`compress.pipeline.Point` (the recipe done so far, the
model it produced, the run that recorded it), kept in the Workspace (views/jobs.py) so a
reload keeps it. Pages stay thin: read the choices here, build a recipe section, call
:func:`run_pipeline` / :func:`run_variants` (the only way a page runs or records
anything), render.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Optional

import streamlit as st

from compress import pipeline
from compress.checkpoint import save_artifact
from compress.data import eval_sets
from compress.device import resolve_device
from compress.errors import CompressError
from compress.history import History
from compress.recipe import DataRef, MeasureRef, ModelRef, Recipe
from compress.zoo import LoadedModel, describe_data, sample_data_path
from views.jobs import workspace

UPLOAD = "upload"
SIDEBAR_KEYS = ("model_name", "data_path", "data_limit", "data_seed", "device")


def save_upload(uploaded) -> tuple[str, str]:
    """Write an uploaded file to a temp folder named by its hash, under the user's own file
    name (so messages name the file they chose); returns (sha1, path)."""
    data = uploaded.getvalue()
    sha1 = hashlib.sha1(data).hexdigest()
    name = Path(uploaded.name).name or "upload.bin"
    path = Path(tempfile.gettempdir()) / "compression-lab-uploads" / sha1 / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return sha1, str(path)


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def _load(ref: ModelRef) -> LoadedModel:
    return pipeline.load_ref(ref)


def load_model_ref(ref: ModelRef) -> tuple[Optional[LoadedModel], Optional[str]]:
    """(model, None) or (None, plain-language error). Never raises for user errors."""
    try:
        return _load(ref), None
    except CompressError as e:
        return None, str(e)


def current_model() -> Optional[LoadedModel]:
    return st.session_state.get("original")


def model_ref() -> Optional[ModelRef]:
    return st.session_state.get("model_ref")


def model_key() -> str:
    return repr(model_ref())


def settings_key() -> tuple:
    """The sidebar settings a measured result depends on besides the model: images, limit,
    seed, device."""
    return (*data_settings(), st.session_state.get("device", "auto"))


def _settings_text(key: tuple) -> str:
    path, limit, seed, device = key
    images = f"{describe_data(path)} (at most {limit} images, seed {seed})" if path else "no images"
    return f"{images}, device {device}"


def keep_result(name: str, value) -> None:
    """Keep a page's measured result, tagged with the model and the sidebar settings it was
    measured with (see :func:`shown_result`)."""
    st.session_state[name] = {"model": model_key(), "settings": settings_key(), "value": value}


def shown_result(name: str):
    """A result kept by :func:`keep_result`, to draw now: None when it belongs to another
    model (it disappears); with a warning that names both settings when the sidebar's images,
    limit, seed or device changed since (it is stale)."""
    kept = st.session_state.get(name)
    if not kept or kept.get("model") != model_key():
        return None
    if kept["settings"] != settings_key():
        st.warning(f"⚠ Stale: the results below were measured on {_settings_text(kept['settings'])}; the "
                   f"sidebar now says {_settings_text(settings_key())}. Measure again to update them.")
    return kept["value"]


def require_model() -> LoadedModel:
    """The original model, or stop the page with the reason shown."""
    loaded = current_model()
    if loaded is None:
        err = st.session_state.get("model_error")
        st.error(err or "No model is loaded. Pick one in the sidebar.")
        st.stop()
    if not loaded.trained:
        st.warning(loaded.weights_note)
    return loaded


def current_device():
    """The torch device chosen in the sidebar, or None after showing why it is unusable."""
    try:
        return resolve_device(st.session_state.get("device", "auto"))
    except CompressError as e:
        st.error(str(e))
        return None


def data_settings() -> tuple[str, int, int]:
    """(dataset path, limit, seed) from the sidebar. An empty path means the model's bundled
    evaluation sample when it has one (resnet18_cifar10), so accuracy is measured out of the
    box; "" when it has none."""
    path = st.session_state.get("data_path", "").strip()
    if not path:
        loaded = st.session_state.get("original")
        sample = sample_data_path(loaded.spec) if loaded is not None else None
        path = str(sample) if sample is not None else ""
    return path, int(st.session_state.get("data_limit", 500)), int(st.session_state.get("data_seed", 0))


def default_data_path() -> str:
    return os.environ.get("COMPRESSION_LAB_DATA", "")


@st.cache_resource(show_spinner="Reading the evaluation images…", max_entries=4)
def _eval_sets(path: str, limit: int, seed: int, spec_key: str, _spec):
    return eval_sets(path, _spec.preprocess.transform(), _spec.num_classes, _spec.name, limit=limit, seed=seed,
                     categories=_spec.categories)


def eval_sets_for(spec):
    """(EvalSets or None, error or None) for the sidebar's dataset; (None, None) when the
    user has not chosen one. One set per (model, data, limit, seed), cached, so every page
    measures on the same tensors; calibration photos come from its disjoint scoring pool."""
    path, limit, seed = data_settings()
    if not path:
        return None, None
    try:
        return _eval_sets(path, limit, seed, f"{spec.name}|{spec.preprocess}|{spec.num_classes}", spec), None
    except CompressError as e:
        return None, str(e)


# ---------------------------------------------------------------- the session's truth


def current():
    """The session's current Point (recipe so far, model, run id) for the loaded original,
    or None when nothing has been compressed yet."""
    p = workspace().current
    if p is not None and p.recipe.model == model_ref():
        return p
    return None


def set_current(point) -> None:
    workspace().current = point


def base_recipe(runs: Optional[int] = None) -> Recipe:
    """A recipe with no steps for the sidebar's model, images and device."""
    path, limit, seed = data_settings()
    measure = MeasureRef(device=st.session_state.get("device", "auto"), runs=int(runs or 30), warmup=5)
    return Recipe(model=model_ref(), data=DataRef(path=path or None, limit=limit, seed=seed), measure=measure)


def on_sidebar_settings(recipe: Recipe, runs: Optional[int] = None) -> Recipe:
    """``recipe`` (e.g. the current point's) measured on the sidebar's images and device now."""
    base = base_recipe(runs)
    return replace(recipe, data=replace(base.data, train_path=recipe.data.train_path,
                                        train_limit=recipe.data.train_limit),
                   measure=base.measure, export=base.export, name="")


def history():
    """The run history (``COMPRESSION_LAB_HISTORY`` or the default file), or None after
    showing why it cannot be used; the page keeps working without it."""
    try:
        return History()
    except CompressError as e:
        st.warning(f"Runs are not being recorded: {e} Results stay in this session.")
        return None


def show_crash(step: str, e: BaseException) -> None:
    """What a page shows for an error nobody foresaw: one plain line; the traceback goes to
    the server log (the page's own details stay hidden by config). The session goes on."""
    logging.getLogger("compression_lab").error("unexpected error while %s", step, exc_info=e)
    first = (str(e).strip().splitlines() or [""])[0][:200]
    st.error(f"Something went wrong while {step}: {type(e).__name__}{': ' + first if first else ''}. "
             "The details are in the server log; the session is still usable.")


def show_warnings(warnings: list[str]) -> None:
    for w in warnings:
        st.warning(w)


def _with_progress(label: str, call):
    """``call(sets, on_progress)`` on the session's images with a progress bar; its result,
    or None after showing the error (a user's mistake never reaches the screen as a traceback)."""
    sets, err = eval_sets_for(current_model().spec)
    if err:
        st.error(err)
        return None
    bar = st.progress(0.0, text=f"{label}: starting")
    try:
        out = call(sets, lambda ev: bar.progress(ev.fraction, text=f"{ev.stage}: {ev.message}"))
    except CompressError as e:
        st.error(str(e))
        return None
    except Exception as e:  # noqa: BLE001 - a bug, not a user's mistake: one line, details in the log
        show_crash(label.lower(), e)
        return None
    finally:
        bar.empty()
    show_warnings(out.warnings)
    return out


def run_pipeline(recipe: Recipe, label: str, start=None, make_current: bool = True):
    """Run ``recipe`` through the pipeline on the session's model and images, with a
    progress bar; the run is recorded (with its model) and, with ``make_current``, becomes
    the session's current model. Returns the Result, or None after showing the error."""
    result = _with_progress(label, lambda sets, progress: pipeline.run(
        recipe, history=history(), source="app", loaded=current_model(), sets=sets, start=start,
        on_progress=progress))
    if result is not None and make_current and result.point.steps:
        set_current(result.point)
    return result


def run_variants(recipe: Recipe, variants: list, label: str, start=None, references: list = ()):
    """Measure quantize ``variants`` of ``recipe`` against one baseline through the
    pipeline (each recorded as a run; ``references`` measured too, not recorded). Returns
    the Variants, or None after the error."""
    return _with_progress(label, lambda sets, progress: pipeline.run_variants(
        recipe, variants, history=history(), source="app", loaded=current_model(), sets=sets, start=start,
        on_progress=progress, references=references))


def artifact_bytes(model, loaded: LoadedModel) -> bytes:
    """``model`` in the project's checkpoint format (loads back with weights_only=True)."""
    buf = io.BytesIO()
    save_artifact(LoadedModel(model, loaded.spec, loaded.weights_note, loaded.trained), buf)
    return buf.getvalue()
