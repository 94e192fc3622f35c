"""Reading model files safely, and a run's model saved and loaded back by kind.

The layer above the zoo: the zoo says which file holds an entry's weights, this package
reads it. Two modules:

- ``safe``: ``torch.load(weights_only=True)`` with a plain message for every bad file; a
  file that would run code when read is refused with ``UntrustedPickle`` unless the user
  trusts it; state_dicts unwrapped, fitted to an architecture, resized after pruning.
- ``kinds``: the registry of artifact kinds (:data:`ARTIFACT_KINDS`: the project
  checkpoint, ONNX, ExecuTorch, torch.export, TorchScript), each with its suffix, how to
  recognise, save and load it; :func:`load_checkpoint` loads any of them.
"""
from __future__ import annotations

import os
from typing import Optional

from compress.checkpoint.kinds import (ARTIFACT_FORMAT, ARTIFACT_KINDS, ONNX_META_KEY, ONNX_ZOO_KEY,
                                       ArtifactKind, LoadRequest, carried, kind_of, load, load_checkpoint,
                                       module_kind, save, save_artifact, to_torchscript)
from compress.checkpoint.safe import (CLASSIFIER_KEYS, LEGACY_MAGIC, guess_architecture, infer_num_classes,
                                      load_state_into, pickled_classes, read_state_dict, reshape_to_state_dict,
                                      safe_torch_load, unwrap_state_dict)
from compress.zoo import LoadedModel, build_architecture, get_spec, weights_path

__all__ = ["ARTIFACT_FORMAT", "ARTIFACT_KINDS", "CLASSIFIER_KEYS", "LEGACY_MAGIC", "ONNX_META_KEY",
           "ONNX_ZOO_KEY", "ArtifactKind", "LoadRequest", "carried", "guess_architecture", "infer_num_classes",
           "kind_of", "load", "load_checkpoint", "load_model", "load_state_into", "module_kind",
           "pickled_classes", "read_state_dict", "reshape_to_state_dict", "safe_torch_load", "save",
           "save_artifact", "to_torchscript", "unwrap_state_dict"]


def load_model(name: str, weights: Optional[str | os.PathLike] = None, pretrained: bool = True,
               download: bool = True) -> LoadedModel:
    """Build a zoo model with its trained weights (or untrained when ``pretrained=False``)."""
    spec = get_spec(name)
    model = build_architecture(spec.arch, spec.num_classes)
    if not pretrained:
        return LoadedModel(model.eval(), spec, "random initialisation", trained=False)
    path = weights_path(spec, weights, download=download)
    state = read_state_dict(path)
    load_state_into(model, state, spec.arch, spec.num_classes, source=str(path))
    return LoadedModel(model.eval(), spec, str(path), trained=True)
