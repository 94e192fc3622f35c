"""Compression Lab: entry point. Navigation, sidebar (model, data, device), session state."""
from __future__ import annotations

import streamlit as st

from compress.device import available_devices
from compress.zoo import ARCHITECTURES, ZOO, cifar10_asset_path
from views.common import (UPLOAD, ModelChoice, current_compressed, default_data_path, load_choice,
                          save_upload)

st.set_page_config(page_title="Compression Lab", page_icon=":material/compress:", layout="wide")


def _default_model() -> str:
    return "resnet18_cifar10" if cifar10_asset_path().is_file() else "efficientnet_lite0"


def sidebar() -> None:
    st.sidebar.title("Compression Lab")
    st.sidebar.header("Model")
    names = list(ZOO) + [UPLOAD]
    name = st.sidebar.selectbox(
        "Model", names, index=names.index(_default_model()), key="model_name",
        format_func=lambda n: "Upload a checkpoint…" if n == UPLOAD else n,
        help="The network to compress. Zoo entries come with trained weights.")
    choice = ModelChoice(name)
    if name == UPLOAD:
        up = st.sidebar.file_uploader("Checkpoint (.pt, .pth, TorchScript)", type=["pt", "pth", "ts", "bin"],
                                      key="ckpt_upload")
        arch = st.sidebar.selectbox("Architecture", ["auto-detect"] + list(ARCHITECTURES), key="ckpt_arch")
        n = st.sidebar.number_input("Number of classes (0 = read from the file)", 0, 100000, 0,
                                    key="ckpt_classes")
        like = st.sidebar.selectbox("Preprocessing and class names like", list(ZOO), key="ckpt_like",
                                    help="Your model sees images prepared the way this zoo model does.")
        trust = st.sidebar.checkbox("I trust this file (allow a full pickled model; runs its code)",
                                    key="ckpt_trust")
        if up is None:
            st.session_state.original = None
            st.session_state.model_error = "Upload a checkpoint in the sidebar to continue."
            return
        sha1, path = save_upload(up)
        choice = ModelChoice(UPLOAD, sha1, path, None if arch == "auto-detect" else arch,
                             n or None, like, trust)
    else:
        spec = ZOO[name]
        st.sidebar.caption(spec.description)
        if spec.weights_file:
            wup = st.sidebar.file_uploader(f"Weights file ({spec.weights_file}), if offline",
                                           type=["pth", "pt"], key=f"weights_{name}")
            if wup is not None:
                sha1, path = save_upload(wup)
                choice = ModelChoice(name, sha1, path)
    loaded, error = load_choice(choice)
    st.session_state.model_choice = choice
    st.session_state.original = loaded
    st.session_state.model_error = error
    st.session_state.model_key = choice.key
    if error:
        st.sidebar.error(error)
    elif not loaded.trained:
        st.sidebar.warning(loaded.weights_note)
    compressed = current_compressed()
    if compressed is not None:
        st.sidebar.caption(f"Current compressed model: {compressed['label']}")

    st.sidebar.header("Data")
    st.sidebar.text_input("Labelled images (folder or CIFAR-10 .tar.gz)", value=default_data_path(),
                          key="data_path",
                          help="images/ + labels.csv, one sub-folder per class, a CIFAR-10 "
                               "tarball/folder, or torchvision:cifar10 to download it (online). Used for accuracy.")
    st.sidebar.number_input("Evaluate on at most N images", 10, 100000, 500, step=50, key="data_limit",
                            help="A fixed random subset (by seed), so runs compare on the same images.")
    st.sidebar.number_input("Subset seed", 0, 10000, 0, key="data_seed")

    st.sidebar.header("Device")
    st.sidebar.selectbox("Run on", ["auto", "cpu", "cuda"], key="device",
                         help=f"Available here: {', '.join(available_devices())}. "
                              "'auto' picks the GPU when there is one.")


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
]
# st.navigation must come before the sidebar's widgets: widgets created before it are
# re-identified on every rerun and a change to them is silently dropped (measured on
# streamlit 1.67 in a real browser).
navigation = st.navigation(pages)
sidebar()
navigation.run()
