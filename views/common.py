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


def set_compressed(model, label: str, steps: list, quantized: bool = False) -> None:
    """Make ``model`` the current compressed model that every page uses. ``quantized``
    models (INT8, ONNX Runtime, half precision) are final: they are not pruned further."""
    st.session_state.compressed = {"key": st.session_state.get("model_key"), "model": model,
                                   "label": label, "steps": steps, "quantized": quantized}


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
