"""The registry of the files a run's model is kept in (:data:`ARTIFACT_KINDS`): each kind
has its suffix, how to recognise a file of it, how to save a model as it and how to load
one back. Quantize modes name the kind their model is saved as; a user's own file is
loaded through the same registry (:func:`load_checkpoint`)."""
from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from compress.checkpoint.safe import (check_file, first_line, guess_architecture, infer_num_classes,
                                      load_state_into, reshape_to_state_dict, safe_torch_load, unreadable,
                                      unwrap_state_dict)
from compress.errors import ArchitectureMismatch, CheckpointError, UntrustedPickle
from compress.paths import atomic_write
from compress.runtimes import ExecuTorchModel, InductorModel, OrtModel, export_onnx
from compress.zoo import ARCHITECTURES, ZOO, LoadedModel, ModelSpec, build_architecture, get_spec

ARTIFACT_FORMAT = "compression-lab/checkpoint-v1"
ONNX_ZOO_KEY = "compression_lab.zoo_entry"     # ONNX metadata: the zoo entry a model belongs to
ONNX_META_KEY = "compression_lab.meta"


def save_artifact(loaded: LoadedModel, path, meta: Optional[dict] = None, half: bool = False):
    """The project's own checkpoint: architecture name, class count, zoo entry and weights.

    Only tensors and plain data, so it loads back with ``weights_only=True``. Channel-pruned
    models round-trip too: loading resizes the layers to the saved shapes. ``path`` may be a
    file object (e.g. BytesIO for a download button); a path is written whole or not at all
    (:func:`compress.paths.atomic_write`: OSError when it cannot be, and no partial file).
    ``half``: floating-point tensors are stored as float16 (half the bytes; loading turns
    them back into the model's float32).
    """
    if hasattr(path, "write"):
        path.write(artifact_bytes(loaded, meta, half))
        return path
    with atomic_write(path) as f:
        f.write(artifact_bytes(loaded, meta, half))
    return Path(path)


def artifact_bytes(loaded: LoadedModel, meta: Optional[dict] = None, half: bool = False) -> bytes:
    """The project checkpoint of ``loaded`` as bytes (see :func:`save_artifact`). Serialised
    in memory, then written by the caller: torch.save turns a failed write (no space) into a
    RuntimeError about stream positions, where Python's own write raises the OSError."""
    state = loaded.model.state_dict()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    blob = {"format": ARTIFACT_FORMAT, "arch": loaded.spec.arch, "zoo_entry": loaded.spec.name,
            "num_classes": loaded.spec.num_classes, "meta_json": json.dumps(meta or {}),
            "state_dict": state}
    buf = io.BytesIO()
    torch.save(blob, buf)
    return buf.getvalue()


# ---------------------------------------------------------------- loading each kind back

@dataclass(frozen=True)
class LoadRequest:
    """What the user said about a file: its architecture, class count and the zoo entry
    whose preprocessing and class names it uses (None: inferred), and consent to unpickle."""
    arch: Optional[str] = None
    num_classes: Optional[int] = None
    like: Optional[str] = None
    trust_pickle: bool = False

    def spec(self) -> ModelSpec:
        return _spec_for(self.like, self.arch, self.num_classes)


def _load_pytorch(p: Path, req: LoadRequest) -> LoadedModel:
    """A torch.save file: the project checkpoint, a state_dict for a known architecture, or
    (only with the user's trust) a full pickled nn.Module."""
    try:
        obj = safe_torch_load(p)
    except UntrustedPickle:
        if not req.trust_pickle:
            raise
        try:
            obj = torch.load(p, map_location="cpu", weights_only=False)  # user consented
        except Exception as err:  # noqa: BLE001 - the file's own code or a damaged file
            raise CheckpointError(f"{p.name} could not be unpickled even with trust: {first_line(err)}") from None
        if not isinstance(obj, nn.Module):
            raise CheckpointError(f"{p.name} unpickled to a {type(obj).__name__}, not a model.")
        return LoadedModel(obj.eval(), req.spec(), str(p))
    if isinstance(obj, dict) and obj.get("format") == ARTIFACT_FORMAT:
        return _load_artifact(obj, p)
    state = unwrap_state_dict(obj)
    if state is None:
        raise CheckpointError(f"{p.name} holds a {type(obj).__name__}, not model weights.")
    arch = req.arch if req.arch is not None else guess_architecture(state)
    if arch is None:
        raise ArchitectureMismatch(
            f"{p.name} fits none of the known architectures ({', '.join(ARCHITECTURES)}). "
            "Choose the architecture it was trained with.")
    num_classes = req.num_classes if req.num_classes is not None else (infer_num_classes(state) or 1000)
    model = build_architecture(arch, num_classes)
    load_state_into(model, state, arch, num_classes, source=str(p))
    return LoadedModel(model.eval(), _spec_for(req.like, arch, num_classes), str(p))


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


def _load_torchscript(p: Path, req: LoadRequest) -> LoadedModel:
    try:
        model = torch.jit.load(str(p), map_location="cpu")
    except Exception as e:
        raise CheckpointError(f"{p.name} looks like TorchScript but does not load: {e}") from None
    return LoadedModel(model.eval(), req.spec(), str(p))


def _load_onnx(p: Path, req: LoadRequest) -> LoadedModel:
    """An ONNX file (e.g. a run's ONNX Runtime INT8 model), run in ONNX Runtime. Its zoo
    entry comes from ``like``, else from the file's metadata, else from its class count."""
    import onnx
    try:
        proto = onnx.load(str(p), load_external_data=False)
        dims = proto.graph.output[0].type.tensor_type.shape.dim
        n = dims[-1].dim_value if dims and dims[-1].dim_value > 0 else None
        meta = {m.key: m.value for m in proto.metadata_props}
        model = OrtModel(p.read_bytes())
    except Exception as e:  # noqa: BLE001 - any decoder failure is "not readable"
        raise CheckpointError(f"{p.name} is not a readable ONNX model ({first_line(e)}).") from None
    like = req.like or (meta.get(ONNX_ZOO_KEY) if meta.get(ONNX_ZOO_KEY) in ZOO else None)
    num_classes = req.num_classes
    if like and ZOO[like].num_classes == (num_classes or n or ZOO[like].num_classes):
        spec = ZOO[like]
    else:
        spec = _spec_for(like, None, num_classes or n)
    return LoadedModel(model.eval(), spec, str(p))


def _load_pte(p: Path, req: LoadRequest) -> LoadedModel:
    """An ExecuTorch program, run by the ExecuTorch runtime."""
    try:
        model = ExecuTorchModel(p.read_bytes())
    except Exception as e:  # noqa: BLE001 - any decoder failure is "not readable"
        raise CheckpointError(f"{p.name} is not a readable ExecuTorch program ({first_line(e)}).") from None
    return LoadedModel(model.eval(), req.spec(), str(p))


def _load_pt2(p: Path, req: LoadRequest) -> LoadedModel:
    """A torch.export program (e.g. a run's PT2E INT8 model, compiled by TorchInductor on
    first use). Opened only if every tensor file inside it loads with ``weights_only=True``:
    ``torch.export.load`` would otherwise fall back to full unpickling."""
    try:
        with zipfile.ZipFile(p) as z:
            for name in z.namelist():
                if name.endswith(".pt"):
                    torch.load(io.BytesIO(z.read(name)), map_location="cpu", weights_only=True)
        from torchao.quantization.pt2e import allow_exported_model_train_eval
        graph = torch.export.load(str(p)).module()
        allow_exported_model_train_eval(graph)
        model = InductorModel(graph)
    except Exception as e:  # noqa: BLE001 - any decoder failure is "not readable"
        raise CheckpointError(f"{p.name} is not a readable torch.export program ({first_line(e)}).") from None
    return LoadedModel(model.eval(), req.spec(), str(p))


def _is_torchscript(p: Path) -> bool:
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


# ---------------------------------------------------------------- saving each kind

def _module_of(model) -> nn.Module:
    """The nn.Module behind a model or a QuantizedModel."""
    return model if isinstance(model, nn.Module) else model.model


def _save_pytorch(model, spec: ModelSpec, meta: dict) -> bytes:
    return artifact_bytes(LoadedModel(_module_of(model), spec, "run"), meta=meta)


def _save_onnx(model, spec: ModelSpec, meta: dict) -> bytes:
    """The model's own ONNX file (ONNX Runtime modes) or an export of it, with the zoo entry
    and the run's metadata inside, so it loads back with its classes and preprocessing."""
    import onnx
    data = getattr(model, "onnx", None) or export_onnx(_module_of(model), spec.input_size)
    proto = onnx.load_from_string(data)
    for k, v in ((ONNX_ZOO_KEY, spec.name), (ONNX_META_KEY, json.dumps(meta))):
        prop = proto.metadata_props.add()
        prop.key, prop.value = k, v
    return proto.SerializeToString()


def to_torchscript(module: nn.Module, input_size) -> torch.jit.ScriptModule:
    """``module`` as TorchScript: itself when it is already, else traced on one zero image
    (the tracer's own exception is raised: callers name the operator it cannot take)."""
    if isinstance(module, torch.jit.ScriptModule):
        return module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(module.cpu().eval(), torch.zeros(1, *input_size), check_trace=False)


def _save_torchscript(model, spec: ModelSpec, meta: dict) -> bytes:
    try:
        script = to_torchscript(_module_of(model), spec.input_size)
    except Exception as e:  # noqa: BLE001 - any tracer failure becomes a plain message
        raise CheckpointError(f"TorchScript cannot take this model: {first_line(e)}") from None
    buf = io.BytesIO()
    torch.jit.save(script, buf)
    return buf.getvalue()


def _save_carried(attr: str, what: str) -> Callable:
    """A saver that writes the program a model already carries (``model.<attr>``)."""
    def save_it(model, spec: ModelSpec, meta: dict) -> bytes:
        data = getattr(model, attr, None)
        if data is None:
            raise CheckpointError(f"This model carries no {what}; quantize it with a mode that makes one.")
        return data
    return save_it


# ---------------------------------------------------------------- the registry of kinds

@dataclass(frozen=True)
class ArtifactKind:
    """One kind of file a run's model is kept in."""
    name: str
    description: str
    suffix: str                          # the file name's ending (model + suffix)
    matches: Callable[[Path], bool]      # is this file of this kind (by name or content)
    save: Callable[..., bytes]           # (model, spec, meta) -> the file's bytes
    load: Callable[[Path, LoadRequest], LoadedModel]
    carries: Optional[str] = None        # the QuantizedModel field that holds the file's bytes

    @property
    def file_name(self) -> str:
        return f"model{self.suffix}"


def _by_suffix(suffix: str) -> Callable[[Path], bool]:
    return lambda p: p.name.lower().endswith(suffix)


ARTIFACT_KINDS: dict[str, ArtifactKind] = {k.name: k for k in (       # recognised in this order
    ArtifactKind("onnx", "ONNX model, run by ONNX Runtime (the zoo entry in its metadata)", ".onnx",
                 _by_suffix(".onnx"), _save_onnx, _load_onnx, carries="onnx"),
    ArtifactKind("pte", "ExecuTorch program (XNNPACK), run by the ExecuTorch runtime", ".pte",
                 _by_suffix(".pte"), _save_carried("pte", "ExecuTorch program"), _load_pte, carries="pte"),
    ArtifactKind("pt2", "torch.export program, compiled by TorchInductor where it runs", ".pt2",
                 _by_suffix(".pt2"), _save_carried("pt2", "torch.export program"), _load_pt2, carries="pt2"),
    ArtifactKind("torchscript", "TorchScript module (PyTorch INT8 and half-precision models)", ".ts.pt",
                 _is_torchscript, _save_torchscript, _load_torchscript),
    ArtifactKind("pytorch", "the project checkpoint (checkpoint-v1: architecture, classes, weights), "
                 "or a state_dict", ".pt", lambda p: True, _save_pytorch, _load_pytorch),
)}


def kind_of(path: str | os.PathLike) -> str:
    """The kind of a model file: by its suffix, or by its content for TorchScript; anything
    else is read as a torch.save file."""
    p = Path(path)
    return next(k.name for k in ARTIFACT_KINDS.values() if k.matches(p))


def module_kind(module: nn.Module) -> str:
    """The kind a float model is kept as: TorchScript stays TorchScript, else the project checkpoint."""
    return "torchscript" if isinstance(module, torch.jit.ScriptModule) else "pytorch"


def save(kind: str, model, spec: ModelSpec, folder: str | os.PathLike, meta: Optional[dict] = None) -> Path:
    """Write ``model`` (an nn.Module or a QuantizedModel) as ``kind`` into ``folder``
    (``model`` + the kind's suffix); it loads back with :func:`load_checkpoint`. The file is
    written whole or not at all: OSError when it cannot be (no space, read-only), and an
    earlier file of that name is left as it was."""
    if kind not in ARTIFACT_KINDS:
        raise CheckpointError(f"Unknown model file kind {kind!r}: use {', '.join(ARTIFACT_KINDS)}.")
    entry = ARTIFACT_KINDS[kind]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = entry.save(model, spec, meta or {})
    path = folder / entry.file_name
    with atomic_write(path) as f:
        f.write(data)
    return path


def load_checkpoint(path: str | os.PathLike, arch: Optional[str] = None,
                    num_classes: Optional[int] = None, trust_pickle: bool = False,
                    like: Optional[str] = None) -> LoadedModel:
    """Load a model file of any kind in :data:`ARTIFACT_KINDS`: a run's saved model, a
    state_dict for a known architecture, a TorchScript file, an ONNX model, a program, or
    (only with ``trust_pickle``) a full pickled nn.Module.

    ``like`` names a zoo entry whose preprocessing and class names the model uses
    (default: the entry of that architecture, or resnet18_cifar10 for 10 classes).
    """
    p = Path(path)
    check_file(p)
    if p.stat().st_size == 0:
        raise unreadable(p)
    return ARTIFACT_KINDS[kind_of(p)].load(p, LoadRequest(arch, num_classes, like, trust_pickle))


load = load_checkpoint


def carried(kind: str, data: bytes) -> dict[str, Any]:
    """The QuantizedModel field a file of ``kind`` fills with its bytes (empty for kinds
    whose model is a module)."""
    attr = ARTIFACT_KINDS[kind].carries
    return {attr: data} if attr else {}
