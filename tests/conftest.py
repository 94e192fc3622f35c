"""Shared fixtures. Real data comes from ../shared/data (developer checkouts and CI);
tests that need it skip with a reason when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("COMPRESSION_LAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
IMAGENET_VAL = SHARED / "imagenet-val"
CIFAR_TAR = SHARED / "cifar10-jpeg.tar.gz"


@pytest.fixture(scope="session", autouse=True)
def private_history(tmp_path_factory):
    """Runs the tests record (CLI, pages) go to a throwaway history, not the user's."""
    path = tmp_path_factory.mktemp("history") / "history.sqlite"
    os.environ["COMPRESSION_LAB_HISTORY"] = str(path)
    yield path


@pytest.fixture(scope="session")
def imagenet_val() -> Path:
    if not (IMAGENET_VAL / "labels.csv").is_file():
        pytest.skip(f"real ImageNet validation sample not found at {IMAGENET_VAL}")
    return IMAGENET_VAL


@pytest.fixture(scope="session")
def cifar_tar() -> Path:
    if not CIFAR_TAR.is_file():
        pytest.skip(f"CIFAR-10 tarball not found at {CIFAR_TAR}")
    return CIFAR_TAR


@pytest.fixture(scope="session")
def chelsea_png(tmp_path_factory) -> Path:
    """scikit-image's real photo of a cat, as a PNG file."""
    from PIL import Image
    from skimage import data
    p = tmp_path_factory.mktemp("photos") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(p)
    return p


@pytest.fixture(scope="session")
def lite0():
    from compress.checkpoint import load_model
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def cifar_asset() -> Path:
    """The shipped, trained resnet18_cifar10 checkpoint (produced by train-baseline)."""
    from compress.zoo import cifar10_asset_path
    p = cifar10_asset_path()
    if not p.is_file():
        pytest.skip(f"{p} has not been trained yet (python -m compress train-baseline, see README)")
    return p
