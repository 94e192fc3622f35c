"""Compression Lab: entry point. Navigation, sidebar (model, data, device), session state."""
from __future__ import annotations

import streamlit as st

from compress.device import available_devices
from compress.recipe import ModelRef
from compress.zoo import ARCHITECTURES, ZOO, cifar10_asset_path, no_data_hint, sample_data_path
from views.common import (SIDEBAR_KEYS, UPLOAD, current, default_data_path, load_model_ref, save_upload,
                          show_crash)
from views.jobs import workspace

st.set_page_config(page_title="Compression Lab", page_icon=":material/compress:", layout="wide")


def _default_model() -> str:
    return "resnet18_cifar10" if cifar10_asset_path().is_file() else "efficientnet_lite0"


def restore_settings() -> None:
    """Sidebar values: after a reload, the workspace's; otherwise the defaults. Set in
    session_state before the widgets exist, so no widget is given a second default."""
    ws = workspace()
    defaults = {"model_name": _default_model(), "data_path": default_data_path(), "data_limit": 500,
                "data_seed": 0, "device": "auto"}
    for k in SIDEBAR_KEYS:
        if k not in st.session_state:
            st.session_state[k] = ws.settings.get(k, defaults[k])


def remember_settings() -> None:
    workspace().settings = {k: st.session_state.get(k) for k in SIDEBAR_KEYS}


def sidebar():
    """Draw the sidebar; returns the empty slot that will name the current compressed model."""
    st.sidebar.title("Compression Lab")
    st.sidebar.header("Model")
    names = list(ZOO) + [UPLOAD]
    name = st.sidebar.selectbox(
        "Model", names, key="model_name",
        format_func=lambda n: "Upload a checkpoint…" if n == UPLOAD else n,
        help="The network to compress. Zoo entries come with trained weights.")
    ref = ModelRef(name)
    if name == UPLOAD:
        up = st.sidebar.file_uploader("Checkpoint (.pt, .pth, TorchScript, .onnx)",
                                      type=["pt", "pth", "ts", "bin", "onnx"], key="ckpt_upload")
        arch = st.sidebar.selectbox("Architecture", ["auto-detect"] + list(ARCHITECTURES), key="ckpt_arch")
        n = st.sidebar.number_input("Number of classes (0 = read from the file)", 0, 100000, 0,
                                    key="ckpt_classes")
        like = st.sidebar.selectbox("Preprocessing and class names like", list(ZOO), key="ckpt_like",
                                    help="Your model sees images prepared the way this zoo model does.")
        trust = st.sidebar.checkbox("I trust this file (allow a full pickled model; runs its code)",
                                    key="ckpt_trust")
        if up is None:
            st.session_state.original = None
            st.session_state.model_ref = None
            st.session_state.model_error = "Upload a checkpoint in the sidebar to continue."
            return None
        _, path = save_upload(up)
        ref = ModelRef(name=like, checkpoint=path, arch=None if arch == "auto-detect" else arch,
                       num_classes=n or None, trust_pickle=trust)
    else:
        spec = ZOO[name]
        st.sidebar.caption(spec.description)
        if spec.weights_file:
            wup = st.sidebar.file_uploader(f"Weights file ({spec.weights_file}), if offline",
                                           type=["pth", "pt"], key=f"weights_{name}")
            if wup is not None:
                _, path = save_upload(wup)
                ref = ModelRef(name, weights=path)
    loaded, error = load_model_ref(ref)
    st.session_state.model_ref = ref
    st.session_state.original = loaded
    st.session_state.model_error = error
    if error:
        st.sidebar.error(error)
    elif not loaded.trained:
        st.sidebar.warning(loaded.weights_note)
    current_slot = st.sidebar.empty()        # filled after the page ran: it names the model as of this click

    st.sidebar.header("Data")
    st.sidebar.text_input("Labelled images (folder or CIFAR-10 .tar.gz)", key="data_path",
                          help="images/ + labels.csv, one sub-folder per class, a CIFAR-10 "
                               "tarball/folder, or torchvision:cifar10 to download it (online). Used for accuracy.")
    if not st.session_state.get("data_path", "").strip() and loaded is not None:
        sample = sample_data_path(loaded.spec)
        st.sidebar.caption(f"Empty: accuracy is measured on {loaded.spec.sample_note}." if sample is not None
                           else f"Empty: accuracy is not measured. {no_data_hint(loaded.spec)}")
    st.sidebar.number_input("Evaluate on at most N images", 10, 100000, step=50, key="data_limit",
                            help="A fixed random subset (by seed), so runs compare on the same images. "
                                 "Calibration photos come from a separate pool, never from these.")
    st.sidebar.number_input("Subset seed", 0, 10000, key="data_seed")

    st.sidebar.header("Device")
    st.sidebar.selectbox("Run on", ["auto", "cpu", "cuda"], key="device",
                         help=f"Available here: {', '.join(available_devices())}. "
                              "'auto' picks the GPU when there is one.")
    return current_slot


def show_current(slot) -> None:
    """Name the session's current compressed model in the sidebar, after the page ran."""
    if slot is None:
        return
    p = current()
    job = workspace().job
    with slot.container():
        if p is not None:
            st.caption(f"Current compressed model: **{p.label}**"
                       + (f" (run #{p.run_id})" if p.run_id is not None else ""))
        if job is not None and job.running:
            st.caption(f"{'An' if job.name[:1] in 'aeiou' else 'A'} {job.name} job is running in the background.")


# The page files live in views/, not pages/: with a pages/ folder next to app.py, Streamlit
# 1.67 serves a fresh server's first request for /prune by running pages/prune.py alone
# (the legacy multipage mode), without this file's sidebar, until someone opens /.
pages = [
    st.Page("views/model.py", title="Model", icon=":material/analytics:", default=True),
    st.Page("views/prune.py", title="Prune", icon=":material/content_cut:"),
    st.Page("views/distill.py", title="Distill", icon=":material/school:"),
    st.Page("views/quantize.py", title="Quantize", icon=":material/memory:"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("views/classify.py", title="Classify", icon=":material/image_search:"),
    st.Page("views/explore.py", title="Explore", icon=":material/tune:"),
]
# st.navigation must come before the sidebar's widgets: widgets created before it are
# re-identified on every rerun and a change to them is silently dropped (measured on
# streamlit 1.67 in a real browser).
navigation = st.navigation(pages)
restore_settings()
slot = sidebar()
remember_settings()
show_current(slot)             # as the page starts (what a page that stops early leaves)
try:
    navigation.run()
except Exception as e:  # noqa: BLE001 - whatever slipped past the page: one line, and the session goes on
    show_crash(f"showing the {navigation.title} page", e)
show_current(slot)             # as the page left it: the current model after this click
