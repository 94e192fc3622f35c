"""The history, kept safe: recording a run without ever losing its result; a run's model
saved by its artifact kind and turned back into a session Point."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from compress import checkpoint
from compress.checkpoint import carried, kind_of, load_checkpoint
from compress.errors import CompressError
from compress.progress import Cancelled
from compress.quantize import QuantizedModel, gzip_len
from compress.recipe import STEP_SECTIONS, Recipe
from compress.report import point_label
from compress.pipeline.points import PipelineError, Point, Result

# ------------------------------------------------------------------ the history, kept safe


class _Record:
    """Writes to the history for one pipeline call. A failure to write becomes a warning
    (and the history is not used again in this call); the work goes on."""

    def __init__(self, history, warnings: list[str]):
        self.history, self.warnings = history, warnings

    def _safe(self, what: str, fn, *args):
        if self.history is None:
            return None
        try:
            return fn(*args)
        except CompressError as e:
            self.warnings.append(f"The run was not {what} in the history: {e} The result is kept; to run "
                                 "without a history use --no-history (CLI) or COMPRESSION_LAB_HISTORY.")
            self.history = None
            return None

    def start(self, recipe: Recipe, source: str, device: str, versions: dict) -> Optional[int]:
        return self._safe("recorded", self.history.start if self.history else None, recipe.to_dict(),
                          recipe.name or recipe.describe(), source, device, versions)

    def finish(self, result: Result) -> None:
        if result.run_id is None or self.history is None:
            return
        note = self._save_model(result)
        steps = result.steps + ([{"step": "start", "config": {"run": result.start_run}, "seconds": 0,
                                  "report": {"profile": result.start_profile}}] if result.start_run else [])
        self._safe("finished", self.history.finish, result.run_id, result.before, result.after, steps,
                   result.artifacts, result.data, result.changed, note)

    def fail(self, run_id: Optional[int], e: BaseException) -> bool:
        """Mark run ``run_id`` as ended by ``e``: ``cancelled`` when its user stopped it (the
        cancel flag, or Ctrl-C), else ``failed`` with the message. Whether the row was written."""
        if run_id is None or self.history is None:
            return False
        status = "failed"
        if isinstance(e, KeyboardInterrupt):
            status, msg = "cancelled", "cancelled by the user (Ctrl-C)"
        elif isinstance(e, Cancelled):
            status, msg = "cancelled", f"cancelled by the user ({e})" if str(e) else "cancelled by the user"
        elif isinstance(e, CompressError):
            msg = str(e)
        elif not isinstance(e, Exception):     # e.g. Streamlit stopping a page's script
            msg = "stopped before it finished (the page that ran it was reloaded or left)"
        else:
            msg = f"{type(e).__name__}: {e}"
        self._safe(f"marked {status}", self.history.fail, run_id, msg or type(e).__name__, status)
        return self.history is not None

    def _save_model(self, result: Result) -> Optional[str]:
        """Keep the run's model next to the history (written whole or not at all). A failure
        (no space, a read-only folder) is a warning, and the note the row is finished with;
        the figures are kept either way."""
        try:
            path = save_model(result.model, result.loaded, self.history.artifact_dir(result.run_id),
                              meta={"run_id": result.run_id, "recipe": result.recipe.to_dict()})
            result.artifacts["model"] = str(path)
            return None
        except (OSError, CompressError) as e:
            why = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else str(e)
            note = f"The model of run {result.run_id} could not be saved next to the history ({why})."
            result.warnings.append(f"{note} The result is kept in this session.")
            return note


def save_model(model, loaded, folder: Path, meta: Optional[dict] = None) -> Path:
    """Write a run's model so it loads back with ``load_checkpoint`` (weights_only=True), as
    the artifact kind its quantize mode names (compress/checkpoint's ARTIFACT_KINDS): the
    project checkpoint for float models, the ONNX file for ONNX Runtime models, and so on."""
    kind = checkpoint.module_kind(model) if isinstance(model, nn.Module) else model.artifact
    return checkpoint.save(kind, model, loaded.spec, folder, meta=meta)


def point_of_run(run) -> Point:
    """The session Point a history row stands for: its recipe, its saved model (loaded
    back with weights_only=True), its id. A message when the row has no usable model."""
    recipe = Recipe.from_dict(run.recipe, check=False)
    path = (run.artifacts or {}).get("model")
    if run.status != "done" or not path:
        raise PipelineError(f"Run {run.id} has no saved model (status {run.status}); only finished "
                            "runs recorded by this version keep theirs.")
    if not Path(path).is_file():
        raise PipelineError(f"Run {run.id}'s model file {path} is gone.")
    lm = load_checkpoint(path, like=recipe.model.name or None)
    model: Any = lm.model
    q = recipe.quantize
    if q is not None:
        data = Path(path).read_bytes()
        after = run.after or {}
        model = QuantizedModel(lm.model, q.mode, after.get("runtime") or q.mode, len(data), gzip_len(data),
                               torch.device("cpu"), notes=[f"loaded from run {run.id}"],
                               **carried(kind_of(path), data))
    return Point(recipe, model, run.id, point_label(recipe))


def float_origin(point: Point, history) -> Point:
    """The float model a quantized ``point`` was made from, as a Point (from the history run
    the quantization started from), so it can be trained further and quantized again
    without pruning again. A message when that model was not kept: quantized in the same
    run as it was made, or its run deleted."""
    if not point.quantized:
        raise PipelineError("This model is not quantized: it is its own float model.")
    run = history.get(point.run_id) if (history is not None and point.run_id is not None) else None
    start_id = next((s.get("config", {}).get("run") for s in (run.steps or []) if s.get("step") == "start"),
                    None) if run is not None else None
    if start_id is None:
        raise PipelineError("The float model this quantized model came from was not kept: it was made and "
                            "quantized in one run. Prune it again (without quantizing), recover it, then "
                            "quantize.")
    start_run = history.get(start_id)
    if start_run is None:
        raise PipelineError(f"Run {start_id}, the float model this quantized model came from, has been "
                            "deleted from the history. Prune again.")
    origin = point_of_run(start_run)
    if origin.quantized or any(getattr(origin.recipe, s) != getattr(point.recipe, s) for s in STEP_SECTIONS
                               if s != "quantize"):
        raise PipelineError(f"Run {start_id} does not hold the float model this quantized model came from.")
    return origin


