"""What every page shares: the sidebar's choices, cached heavy objects, error display.

Pages stay thin: read the current choices from here, call into ``compress``, render.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import streamlit as st

from compress.errors import CompressError
from compress.zoo import LoadedModel

UPLOAD = "upload"


@dataclass(frozen=True)
class ModelChoice:
    """Everything needed to (re)load the original model; hashable for caching."""
    name: str                           # zoo entry or UPLOAD
    file_sha1: Optional[str] = None     # uploaded checkpoint / weights
    file_path: Optional[str] = None
    arch: Optional[str] = None
    num_classes: Optional[int] = None
    like: Optional[str] = None
    trust_pickle: bool = False

    @property
    def key(self) -> str:
        return f"{self.name}|{self.file_sha1}|{self.arch}|{self.num_classes}|{self.like}|{self.trust_pickle}"


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
def _load(choice: ModelChoice) -> LoadedModel:
    from compress.zoo import load_checkpoint, load_model
    if choice.name == UPLOAD:
        return load_checkpoint(choice.file_path, arch=choice.arch, num_classes=choice.num_classes,
                               trust_pickle=choice.trust_pickle, like=choice.like)
    return load_model(choice.name, weights=choice.file_path)


def load_choice(choice: ModelChoice) -> tuple[Optional[LoadedModel], Optional[str]]:
    """(model, None) or (None, plain-language error). Never raises for user errors."""
    try:
        return _load(choice), None
    except CompressError as e:
        return None, str(e)


def current_model() -> Optional[LoadedModel]:
    return st.session_state.get("original")


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
    from compress.device import resolve_device
    try:
        return resolve_device(st.session_state.get("device", "auto"))
    except CompressError as e:
        st.error(str(e))
        return None


def data_settings() -> tuple[str, int, int]:
    """(dataset path, limit, seed) from the sidebar."""
    return (st.session_state.get("data_path", "").strip(), int(st.session_state.get("data_limit", 500)),
            int(st.session_state.get("data_seed", 0)))


def default_data_path() -> str:
    return os.environ.get("COMPRESSION_LAB_DATA", "")


@st.cache_resource(show_spinner="Reading the evaluation images…", max_entries=4)
def _eval_sets(path: str, limit: int, seed: int, n_scoring: int, spec_key: str, _spec):
    from compress.data import eval_sets
    return eval_sets(path, _spec.preprocess.transform(), _spec.num_classes, _spec.name,
                     limit=limit, seed=seed, n_scoring=n_scoring)


def eval_sets_for(spec, n_scoring: int = 64):
    """(EvalSets or None, error or None) for the sidebar's dataset; (None, None) when the
    user has not chosen one. ``n_scoring`` images (calibration, data criteria) are kept
    apart from the evaluation images. Cached: pages measure on the same tensors."""
    path, limit, seed = data_settings()
    if not path:
        return None, None
    try:
        return _eval_sets(path, limit, seed, n_scoring,
                          f"{spec.name}|{spec.preprocess}|{spec.num_classes}", spec), None
    except CompressError as e:
        return None, str(e)


def set_compressed(model, label: str, steps: list, quantized: bool = False, exportable=None,
                   run_id: Optional[int] = None) -> None:
    """Make ``model`` the current compressed model that every page uses. ``quantized``
    models (INT8, ONNX Runtime, half precision) are final: they are not pruned further.
    ``exportable`` is what the exporters take when it differs from ``model`` (a
    QuantizedModel, which carries its runtime and its ONNX file); ``run_id`` is its run
    in the history (for the model card)."""
    st.session_state.compressed = {"key": st.session_state.get("model_key"), "model": model,
                                   "label": label, "steps": steps, "quantized": quantized,
                                   "exportable": exportable if exportable is not None else model,
                                   "run_id": run_id}


def current_compressed():
    """The current compressed model's record (model, label, steps) for the loaded original,
    or None."""
    c = st.session_state.get("compressed")
    if c and c["key"] == st.session_state.get("model_key"):
        return c
    return None


def artifact_bytes(model, loaded: LoadedModel) -> bytes:
    """``model`` in the project's checkpoint format (loads back with weights_only=True)."""
    import io
    from compress.zoo import save_artifact
    buf = io.BytesIO()
    save_artifact(LoadedModel(model, loaded.spec, loaded.weights_note, loaded.trained), buf)
    return buf.getvalue()


def history():
    """The run history (``COMPRESSION_LAB_HISTORY`` or the default file), or None after
    showing why it cannot be used; the page keeps working without it."""
    from compress.history import History
    try:
        return History()
    except CompressError as e:
        st.warning(f"Runs are not being recorded: {e}")
        return None


def page_recipe(**steps):
    """A Recipe for the sidebar's model, images and device with the given steps."""
    from compress.recipe import DataRef, MeasureRef, ModelRef, Recipe
    choice = st.session_state.get("model_choice")
    loaded = current_model()
    if choice is not None and choice.name == UPLOAD:
        model = ModelRef(name=choice.like or "", checkpoint=choice.file_path, arch=choice.arch,
                         num_classes=choice.num_classes, trust_pickle=choice.trust_pickle)
    else:
        model = ModelRef(name=loaded.spec.name, weights=choice.file_path if choice else None)
    path, limit, seed = data_settings()
    measure = MeasureRef(device=st.session_state.get("device", "auto"),
                         runs=int(steps.pop("runs", 30)), warmup=int(steps.pop("warmup", 5)))
    return Recipe(model=model, data=DataRef(path=path or None, limit=limit, seed=seed), measure=measure, **steps)


STEP_FIELDS = {"prune_structured": "prune", "distill": "recover", "finetune": "recover",
               "prune_unstructured": "unstructured", "quantize": "quantize"}


def recipe_of(steps: list, **extra):
    """The recipe that reproduces a session model made of ``steps`` (as set_compressed
    records them), plus ``extra`` steps, for the sidebar's model and images."""
    from compress.recipe import Recipe
    d = page_recipe().to_dict()
    for s in steps:
        d[STEP_FIELDS[s["step"]]] = s["config"]
    for k, v in extra.items():
        d[k] = v
    return Recipe.from_dict(d, check=False)


def record(recipe, before, after, steps: list, device: str, artifacts: Optional[dict] = None) -> Optional[int]:
    """Record a run a page measured itself (profiles as Profile objects) in the history."""
    from compress.distill import software_versions
    h = history()
    if h is None:
        return None
    rid = h.start(recipe.to_dict(), name=recipe.name or recipe.describe(), source="app", device=device,
                  versions=software_versions())
    h.finish(rid, before.to_json(), after.to_json(), steps, artifacts or {})
    return rid


def run_recipe(recipe, sets, label: str):
    """Run ``recipe`` through the pipeline on the session's model and images, with a
    progress bar, recorded in the history. Returns the Result, or None after showing the
    error."""
    from compress import pipeline
    bar = st.progress(0.0, text=f"{label}: starting")
    try:
        return pipeline.run(recipe, history=history(), source="app", loaded=current_model(), sets=sets,
                            on_progress=lambda ev: bar.progress(ev.fraction, text=f"{ev.stage}: {ev.message}"))
    except CompressError as e:
        st.error(str(e))
        return None
    finally:
        bar.empty()
