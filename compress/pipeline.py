"""The one pipeline: load, measure, prune → recover → zero weights → quantize → export,
measure again; a Result, recorded in the history with the model it produced.

Every run goes through here: the CLI (``python -m compress run``, flags or a recipe file),
every page of the dashboard, the presets and background jobs. This module is the only
writer of the history.

Two entry points:

- :func:`run` runs one recipe. ``start`` (a :class:`Point`: the recipe done so far, the
  model it produced and its run id) skips the steps already done, so "start from run N's
  model" re-does nothing; :func:`point_of_run` turns a history row back into a Point.
- :func:`run_variants` measures several quantize variants of one recipe against one
  baseline, in one run (the Quantize page's table); each variant is a run of its own.

A history that cannot be written never costs the result: the run goes on, the Result
carries a warning naming where the history was meant to go, and the model is returned.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from compress.errors import CompressError
from compress.progress import Cancel, OnProgress, emit
from compress.recipe import STEP_SECTIONS, Recipe

# ------------------------------------------------------------------ where a session stands


@dataclass
class Point:
    """A point along a recipe: the recipe done so far, the model it produced (an
    ``nn.Module``, or a ``QuantizedModel`` once quantized) and the run that recorded it.
    The dashboard keeps one as the session's truth; :func:`run` can start from one."""
    recipe: Recipe
    model: Any
    run_id: Optional[int] = None
    label: str = ""

    @property
    def quantized(self) -> bool:
        return self.recipe.quantize is not None

    @property
    def steps(self) -> list[str]:
        """The sections this point has done, in order."""
        return [s for s in STEP_SECTIONS if getattr(self.recipe, s) is not None]

    @property
    def module(self) -> nn.Module:
        """The runnable module (a QuantizedModel's inner model)."""
        return self.model if isinstance(self.model, nn.Module) else self.model.model


class PipelineError(CompressError):
    """A run that cannot start from the point it was given."""


def done_sections(start: Optional[Point], recipe: Recipe) -> tuple[str, ...]:
    """The sections of ``recipe`` that ``start`` has already done. ``start``'s steps must be
    a prefix of the recipe's (same model, same settings up to where it stopped)."""
    if start is None or not start.steps:
        return ()
    if start.recipe.model != recipe.model:
        raise PipelineError("The starting model belongs to another original model; start from "
                            "the original instead.")
    if start.quantized and any(getattr(recipe, s) != getattr(start.recipe, s) for s in STEP_SECTIONS):
        raise PipelineError("The starting model is quantized, and a quantized model is final: "
                            "prune, distil or zero weights before quantizing.")
    done = []
    for s in STEP_SECTIONS:
        mine, theirs = getattr(recipe, s), getattr(start.recipe, s)
        if theirs is None:
            continue
        if mine != theirs or (s == "prune" and recipe.prune_steps != start.recipe.prune_steps):
            raise PipelineError(f"The starting model has a {s} step that this recipe does not "
                                "repeat; start from the original model (or an earlier run) instead.")
        done.append(s)
    last = STEP_SECTIONS.index(done[-1])
    for s in STEP_SECTIONS[:last]:          # a step the start skipped cannot come before its last one
        if getattr(start.recipe, s) is None and getattr(recipe, s) is not None:
            raise PipelineError(f"This recipe has a {s} step before the starting model's "
                                f"{done[-1]} step; start from the original model instead.")
    return tuple(done)


# ------------------------------------------------------------------ results


@dataclass
class Result:
    recipe: Recipe
    weights: str
    device: str
    data: Optional[dict]
    before: dict                       # Profile.to_json() of the original
    after: dict                        # Profile.to_json() of the final model, in its runtime
    steps: list[dict] = field(default_factory=list)   # {step, config, seconds, report}
    exports: dict[str, dict] = field(default_factory=dict)   # format -> Exported.to_json()
    export_errors: dict[str, str] = field(default_factory=dict)   # format -> why it could not be written
    artifacts: dict[str, str] = field(default_factory=dict)  # "model", formats, "model_card" -> file
    versions: dict[str, str] = field(default_factory=dict)
    run_id: Optional[int] = None
    seconds: float = 0.0
    start_run: Optional[int] = None    # the run whose model this one started from
    start_profile: Optional[dict] = None   # that model, measured in this run
    warnings: list[str] = field(default_factory=list)
    changed: Optional[list] = None     # images whose top-1 changed from the original (report.changed_images)
    model: Any = None                  # the final model (nn.Module or QuantizedModel); not JSON
    float_model: Any = None            # the last float model (before quantization)
    reports: dict[str, Any] = field(default_factory=dict)   # step -> the engine's report object
    loaded: Any = None                 # the original LoadedModel (spec, weights note)

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "recipe": self.recipe.to_dict(), "model": self.recipe.model.name,
                "weights": self.weights, "device": self.device, "data": self.data, "before": self.before,
                "after": self.after, "start_run": self.start_run, "start_profile": self.start_profile,
                "steps": self.steps, "exports": self.exports, "export_errors": self.export_errors,
                "artifacts": self.artifacts,
                "versions": self.versions, "warnings": self.warnings, "seconds": round(self.seconds, 2),
                "changed": self.changed}

    @property
    def point(self) -> Point:
        """Where this run leaves a session: its recipe, model and run id."""
        from compress.report import point_label
        return Point(self.recipe, self.model, self.run_id, point_label(self.recipe))


@dataclass
class Variants:
    """Several variants measured against one baseline in one run."""
    before: dict                       # the original, measured once
    reference: dict                    # the float model the variants start from (== before without steps)
    results: list                      # a Result per variant, or {"config", "error"} for one that failed
    data: Optional[dict] = None
    warnings: list[str] = field(default_factory=list)
    baselines: list = field(default_factory=list)   # a Result (not recorded) per reference, or {"config", "error"}


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
        self._save_model(result)
        steps = result.steps + ([{"step": "start", "config": {"run": result.start_run}, "seconds": 0,
                                  "report": {"profile": result.start_profile}}] if result.start_run else [])
        self._safe("finished", self.history.finish, result.run_id, result.before, result.after, steps,
                   result.artifacts, result.data, result.changed)

    def fail(self, run_id: Optional[int], e: BaseException) -> None:
        if run_id is None or self.history is None:
            return
        from compress.progress import Cancelled
        status = "failed"
        if isinstance(e, Cancelled):
            status, msg = "cancelled", f"cancelled by the user ({e})" if str(e) else "cancelled by the user"
        elif isinstance(e, CompressError):
            msg = str(e)
        elif not isinstance(e, Exception):     # KeyboardInterrupt, or Streamlit stopping a page's script
            msg = "stopped before it finished (interrupted, or the page that ran it was reloaded or left)"
        else:
            msg = f"{type(e).__name__}: {e}"
        self._safe(f"marked {status}", self.history.fail, run_id, msg or type(e).__name__, status)

    def _save_model(self, result: Result) -> None:
        try:
            path = save_model(result.model, result.loaded, self.history.artifact_dir(result.run_id),
                              meta={"run_id": result.run_id, "recipe": result.recipe.to_dict()})
            result.artifacts["model"] = str(path)
        except (OSError, CompressError) as e:
            result.warnings.append(f"The model of run {result.run_id} could not be saved next to the "
                                   f"history ({e}); the result is kept in this session.")


def save_model(model, loaded, folder: Path, meta: Optional[dict] = None) -> Path:
    """Write a run's model so it loads back with ``load_checkpoint`` (weights_only=True):
    the project checkpoint for float models, the ONNX file for ONNX Runtime models, the
    ExecuTorch program for ExecuTorch models, the torch.export program for PT2E models,
    TorchScript for the other PyTorch INT8/half models."""
    import json
    from compress.zoo import ONNX_ZOO_KEY, LoadedModel, save_artifact
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, nn.Module) and not isinstance(model, torch.jit.ScriptModule):
        return save_artifact(LoadedModel(model, loaded.spec, loaded.weights_note, loaded.trained),
                             folder / "model.pt", meta=meta)
    for attr, name in (("pte", "model.pte"), ("pt2", "model.pt2")):
        if getattr(model, attr, None) is not None:
            (folder / name).write_bytes(getattr(model, attr))
            return folder / name
    onnx_bytes = getattr(model, "onnx", None)
    if onnx_bytes is not None:
        import onnx
        proto = onnx.load_from_string(onnx_bytes)
        for k, v in ((ONNX_ZOO_KEY, loaded.spec.name), ("compression_lab.meta", json.dumps(meta or {}))):
            p = proto.metadata_props.add()
            p.key, p.value = k, v
        path = folder / "model.onnx"
        path.write_bytes(proto.SerializeToString())
        return path
    module = model if isinstance(model, nn.Module) else model.model
    path = folder / "model.ts.pt"
    if isinstance(module, torch.jit.ScriptModule):
        torch.jit.save(module, str(path))
        return path
    from compress.export import export           # traces, saves and checks it loads back
    export(model, "torchscript", path, loaded.spec.input_size, [(torch.zeros(2, *loaded.spec.input_size), None)],
           loaded=loaded)
    return path


def point_of_run(run) -> Point:
    """The session Point a history row stands for: its recipe, its saved model (loaded
    back with weights_only=True), its id. A message when the row has no usable model."""
    from compress.zoo import load_checkpoint
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
        from compress.quantize import QuantizedModel, _gzip_len
        data = Path(path).read_bytes()
        after = run.after or {}
        model = QuantizedModel(lm.model, q.mode, after.get("runtime") or q.mode, len(data), _gzip_len(data),
                               torch.device("cpu"), notes=[f"loaded from run {run.id}"],
                               onnx=data if path.endswith(".onnx") else None,
                               pte=data if path.endswith(".pte") else None,
                               pt2=data if path.endswith(".pt2") else None)
    from compress.report import point_label
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


# ------------------------------------------------------------------ one run's shared parts


def load(recipe: Recipe):
    """The recipe's original model (LoadedModel)."""
    return load_ref(recipe.model)


def load_ref(m):
    """The one model loader: a ModelRef's model (zoo entry, or checkpoint file) as a LoadedModel."""
    from compress.zoo import load_checkpoint, load_model
    if m.checkpoint:
        return load_checkpoint(m.checkpoint, arch=m.arch, num_classes=m.num_classes or None, like=m.name or None,
                               trust_pickle=m.trust_pickle)
    return load_model(m.name, weights=m.weights)


def open_sets(recipe: Recipe, spec):
    """The evaluation images and the disjoint scoring pool for ``recipe.data``, or None."""
    from compress import data as D
    d = recipe.data
    if not d.path:
        return None
    return D.eval_sets(d.path, spec.preprocess.transform(), spec.num_classes, spec.name, categories=spec.categories,
                       limit=d.limit,
                       seed=d.seed)


@dataclass
class _Context:
    recipe: Recipe
    loaded: Any
    device: torch.device
    sets: Any
    on_progress: Optional[OnProgress]
    cancel: Optional[Cancel]
    versions: dict
    warnings: list = field(default_factory=list)

    @property
    def spec(self):
        return self.loaded.spec

    def stage(self, name: str):
        p = self.on_progress
        return None if p is None else (lambda ev: p(type(ev)(f"{name}: {ev.stage}", ev.fraction, ev.message,
                                                             ev.metrics)))

    def profile(self, model, name: str, latency: bool = True) -> dict:
        from compress.measure import profile_model
        ms, sets = self.recipe.measure, self.sets
        if not isinstance(model, nn.Module):          # a QuantizedModel: measured in its runtime
            return self.profile_quantized(model, None, name, latency=latency)
        return profile_model(model, self.spec.name, self.spec.input_size, self.device, batch=ms.batch,
                             runs=ms.runs, warmup=ms.warmup, threads=ms.threads,
                             eval_batches=sets.evaluation if sets else None,
                             eval_total=sets.n_eval if sets else None, weights=self.loaded.weights_note,
                             on_progress=self.stage(name), cancel=self.cancel, latency=latency,
                             eval_source=sets.source if sets else "", class_names=self.spec.categories).to_json()

    def profile_quantized(self, q, reference, name: str, latency: bool = True) -> dict:
        from compress.quantize import profile_quantized
        ms, sets = self.recipe.measure, self.sets
        return profile_quantized(q, reference, self.spec.name,
                                 self.spec.input_size, batch=ms.batch, runs=ms.runs, warmup=ms.warmup,
                                 threads=ms.threads, eval_batches=sets.evaluation if sets else None,
                                 weights=self.loaded.weights_note, on_progress=self.stage(name),
                                 latency=latency, eval_source=sets.source if sets else "",
                                 class_names=self.spec.categories).to_json()

    def time(self, models: Sequence[tuple[str, Any]]):
        """Time ``models`` ((name, nn.Module or QuantizedModel)) together, interleaved, each
        on its own device: the one way the pipeline times models it compares."""
        from compress.measure import time_interleaved
        ms = self.recipe.measure
        entries = [(n, m, self.device) if isinstance(m, nn.Module) else (n, m.model, m.device) for n, m in models]
        emit(self.on_progress, "measure", 0.95, f"timing {len(entries)} models in turn")
        return time_interleaved(entries, self.spec.input_size, batch=ms.batch, warmup=ms.warmup, runs=ms.runs,
                                threads=ms.threads, on_progress=self.stage("latency"), cancel=self.cancel)

    def runtime_twin(self, model, q) -> Any:
        """The FP32 twin of float ``model`` in the runtime that runs ``q`` (ONNX Runtime FP32
        for ort-int8, ExecuTorch FP32 for et-int8), so a speed-up can be split into runtime
        switch and compression; None when ``q``'s runtime is PyTorch's own, or when the twin
        cannot be built (a warning says so)."""
        from compress.quantize import MODES, QuantConfig, quantize
        twin = None if q is None or isinstance(q, nn.Module) else MODES[q.mode].float_twin
        if twin is None or not isinstance(model, nn.Module):
            return None
        try:
            return quantize(model, QuantConfig(mode=twin), self.spec.input_size, None, torch.device("cpu"))
        except CompressError as e:
            self.warnings.append(f"The speed-up could not be split into runtime and compression: {e}")
            return None

    def data_json(self) -> Optional[dict]:
        s = self.sets
        return None if s is None else {"source": s.source, "n_eval": s.n_eval, "scoring_pool": s.pool_size,
                                       "seed": self.recipe.data.seed, "files": list(s.files),
                                       "labels": list(s.labels)}


def _context(recipe: Recipe, loaded, sets, on_progress, cancel) -> _Context:
    from compress.device import resolve_device
    from compress.train import software_versions
    device = resolve_device(recipe.measure.device)
    loaded = loaded or load(recipe)
    return _Context(recipe, loaded, device, sets, on_progress, cancel, software_versions())


def _check(ctx: _Context, recipe: Recipe, model, done: tuple = ()) -> Any:
    """Cheap checks of the steps still to run, so a bad setting fails before any slow
    measurement; returns the teacher model (or None)."""
    from compress import prune as P
    if recipe.prune is not None and "prune" not in done:
        P.check_removes_something(model, recipe.prune, ctx.spec.input_size)
    teacher = None
    r = recipe.recover
    if r is not None and "recover" not in done and r.method == "distill" and r.teacher != "original":
        from compress.distill import load_teacher
        teacher = load_teacher(r.teacher, ctx.spec)
    if recipe.quantize is not None and "quantize" not in done:
        from compress.quantize import validate as validate_quant
        validate_quant(model, recipe.quantize, ctx.device)
    _check_training_images(recipe, done, ctx.spec)
    return teacher


def _model_classes(spec) -> dict:
    """What a loader needs to map class folders to ``spec``'s classes by name."""
    return {"num_classes": spec.num_classes, "model_name": spec.name, "categories": spec.categories}


def _check_training_images(recipe: Recipe, done: tuple = (), spec=None) -> None:
    """The training photos exist, and have labels when the step still to run needs them."""
    from compress import data as D
    from compress.errors import DataError
    r, q = recipe.recover, recipe.quantize
    needs = []                                       # (what, needs labels)
    if r is not None and "recover" not in done:
        needs.append((f"{'distillation' if r.method == 'distill' else 'fine-tuning'}",
                      r.method == "finetune" or r.alpha < 1.0))
    if q is not None and q.mode == "qat" and "quantize" not in done:
        needs.append(("QAT", True))
    if not needs:
        return
    path = recipe.data.train_path
    if not path:
        raise DataError(f"{needs[0][0]} trains on photos: give training photos (data.train_path).")
    images = D.open_training(path)
    if spec is not None:                        # class folders that are not the model's classes
        D.for_model(images, **_model_classes(spec))
    for what, labels in needs:
        if labels and not images.labelled:
            hint = (" Use distillation with α = 1 (label-free) instead." if what != "QAT" else
                    " Give one sub-folder per class, a labels.csv, or a CIFAR-10 tarball.")
            raise DataError(f"{what} trains on labelled photos, and {path} holds {len(images)} photos "
                            f"without labels.{hint}")


def _float_steps(ctx: _Context, recipe: Recipe, model, done: tuple, teacher, steps: list, raw: dict):
    """Run the float sections of ``recipe`` not in ``done`` on ``model``; returns the model."""
    from compress import data as D
    from compress import prune as P
    d, sets = recipe.data, ctx.sets

    def step(name: str, config, t0: float, report, obj=None) -> None:
        raw[name] = obj if obj is not None else report
        steps.append({"step": name, "config": asdict(config) if config is not None else None,
                      "seconds": round(time.perf_counter() - t0, 3), "report": report})

    between = recipe.recover is not None and "recover" not in done and recipe.prune_steps > 1 \
        and recipe.prune is not None and "prune" not in done
    if recipe.prune is not None and "prune" not in done:
        from compress.measure import evaluate
        t0 = time.perf_counter()
        cfg = recipe.prune
        histories: list = []
        recover_between = _recover_between(ctx, recipe, teacher, histories) if between else None
        model, reports = P.prune_iterative(model, cfg, ctx.spec.input_size, steps=recipe.prune_steps,
                                           batches=sets.scoring_batches(64) if sets else None,
                                           bn_batches=sets.scoring_batches(cfg.bn_images)
                                           if sets and cfg.bn_images else None,
                                           keep_as_pruned=sets is not None, recover=recover_between,
                                           on_progress=ctx.stage("prune"), cancel=ctx.cancel)
        last = reports[-1]
        if last.as_pruned is not None:              # what BatchNorm re-estimation gave, on the same images
            emit(ctx.on_progress, "prune", 1.0, "measuring the pruned model before BatchNorm re-estimation")
            acc = evaluate(last.as_pruned, sets.evaluation, ctx.device, cancel=ctx.cancel)
            acc.source = sets.source
            last.accuracy_as_pruned = {**asdict(acc), "ci95": list(acc.ci95)}
            last.as_pruned = None
        elif cfg.bn_images and sets is None:
            ctx.warnings.append("BatchNorm statistics were not re-estimated after pruning: no photos were "
                                "given, so the pruned model's accuracy (if measured) is the raw one.")
        step("prune_structured", cfg, t0, [r.summary() for r in reports], reports)
        if between:
            step(recipe.recover.method, recipe.recover, t0,
                 {"history": histories, "between_prune_steps": recipe.prune_steps,
                  "train_images": histories[-1]["train_images"] if histories else 0})
            done = tuple(done) + ("recover",)
    if recipe.recover is not None and "recover" not in done:
        from compress.distill import recover
        t0 = time.perf_counter()
        train = D.train_loader(d.train_path, ctx.spec.preprocess.transform(), limit=d.train_limit, seed=d.seed,
                               **_model_classes(ctx.spec),
                               batch_size=recipe.recover.batch_size)
        model, res = recover(model, ctx.loaded.model, recipe.recover, train, ctx.device, teacher=teacher,
                             val_batches=sets.evaluation if sets else None,
                             on_progress=ctx.stage("recover"), cancel=ctx.cancel,
                             input_size=ctx.spec.input_size)
        step(recipe.recover.method, recipe.recover, t0,
             {"history": [asdict(h) for h in res.history], "train_images": len(train.dataset)}, res)
    if recipe.unstructured is not None and "unstructured" not in done:
        t0 = time.perf_counter()
        model, sp = P.prune_unstructured(model, recipe.unstructured)
        step("prune_unstructured", recipe.unstructured, t0,
             {"global_sparsity": sp.global_sparsity,
              "layers": [{"layer": n, "zeros": z, "total": t} for n, z, t in sp.layers],
              "note": "weights zeroed in place: dense bytes and dense latency do not change; "
                      "compare size_gzip_bytes"}, sp)
    return model


def _recover_between(ctx: _Context, recipe: Recipe, teacher, histories: list):
    """The ``recover`` callback of iterative pruning: the recipe's recovery (its epochs each
    time) after every pruning step, on the pruned model in place; each epoch's figures go
    to ``histories`` with the step they followed."""
    from compress import data as D
    from compress.distill import recover
    d = recipe.data
    train = D.train_loader(d.train_path, ctx.spec.preprocess.transform(), limit=d.train_limit, seed=d.seed,
                           **_model_classes(ctx.spec), batch_size=recipe.recover.batch_size)
    sets = ctx.sets

    def after_step(work: nn.Module, k: int) -> None:
        new, res = recover(work, ctx.loaded.model, recipe.recover, train, ctx.device, teacher=teacher,
                           val_batches=sets.evaluation if sets else None,
                           on_progress=ctx.stage(f"recover after prune step {k}"), cancel=ctx.cancel,
                           input_size=ctx.spec.input_size)
        work.load_state_dict(new.state_dict())
        histories.extend({**asdict(h), "prune_step": k, "train_images": len(train.dataset)} for h in res.history)
    return after_step


def _quantize(ctx: _Context, recipe: Recipe, model, steps: list, raw: dict, device=None):
    from compress import data as D
    from compress.quantize import quantize
    qc, d, sets = recipe.quantize, recipe.data, ctx.sets
    t0 = time.perf_counter()
    train = (D.train_loader(d.train_path, ctx.spec.preprocess.transform(), limit=d.train_limit, seed=d.seed,
                            **_model_classes(ctx.spec))
             if qc.mode == "qat" else None)
    q = quantize(model, qc, ctx.spec.input_size, sets.scoring_batches(qc.calibration) if sets else None,
                 device or ctx.device, on_progress=ctx.stage(f"quantize {qc.mode}"), train_batches=train,
                 cancel=ctx.cancel)
    from compress.quantize import MODES
    n_cal = min(qc.calibration, sets.pool_size) if sets and MODES[qc.mode].calibrates else 0
    raw["quantize"] = q
    steps.append({"step": "quantize", "config": asdict(qc), "seconds": round(time.perf_counter() - t0, 3),
                  "report": {"runtime": q.runtime, "size_bytes": q.size_bytes, "notes": q.notes,
                             "calibration_images": n_cal}})
    return q


# ------------------------------------------------------------------ run one recipe


def run(recipe: Recipe, on_progress: Optional[OnProgress] = None, cancel: Optional[Cancel] = None,
        history=None, source: str = "", loaded=None, sets=None, start: Optional[Point] = None) -> Result:
    """Run ``recipe`` and return its Result. With ``history`` (a History) the run is
    recorded as running, then done with its figures and model file, or failed with its
    error. ``loaded``/``sets`` let a caller that already holds the model and images pass
    them; ``start`` skips the steps a Point has already done (its model is measured in
    this run too, as ``start_profile``)."""
    from compress.recipe import validate
    validate(recipe)
    done = done_sections(start, recipe)
    warnings: list[str] = []
    record = _Record(history, warnings)
    ctx = _context(recipe, loaded, sets, on_progress, cancel)
    run_id = record.start(recipe, source, str(ctx.device), ctx.versions)
    try:
        result = _run(ctx, recipe, start if done else None, done)
    except BaseException as e:
        record.fail(run_id, e)
        raise
    warnings.extend(result.warnings)                       # e.g. a format that could not be exported
    result.run_id, result.warnings = run_id, warnings     # one list: finishing may add to it
    record.finish(result)
    return result


def _run(ctx: _Context, recipe: Recipe, start: Optional[Point], done: tuple) -> Result:
    t_all = time.perf_counter()
    model = start.model if start is not None else ctx.loaded.model
    teacher = _check(ctx, recipe, start.module if start is not None else model, done)
    if ctx.sets is None and recipe.data.path:
        ctx.sets = open_sets(recipe, ctx.spec)

    emit(ctx.on_progress, "measure", 0.0, "measuring the original")
    before = ctx.profile(ctx.loaded.model, "original", latency=False)
    start_profile = None
    if start is not None:
        emit(ctx.on_progress, "measure", 0.0, "measuring the model this run starts from")
        start_profile = ctx.profile(start.model, "start", latency=False)
    steps: list[dict] = []
    raw: dict = {}
    float_model = model
    if "quantize" not in done:
        float_model = model = _float_steps(ctx, recipe, model, done, teacher, steps, raw)
        if recipe.quantize is not None:
            model = _quantize(ctx, recipe, model, steps, raw)
    emit(ctx.on_progress, "measure", 0.9, "measuring the compressed model")
    changed = start is not None or bool(steps)         # else the original is the result
    after = before
    if changed and isinstance(model, nn.Module):
        after = ctx.profile(model, "compressed", latency=False)
    elif changed:
        after = ctx.profile_quantized(model, float_model if isinstance(float_model, nn.Module) else None,
                                      "compressed", latency=False)
    _time_run(ctx, before, start, start_profile, model if changed else None, after)
    result = Result(recipe=recipe, weights=ctx.loaded.weights_note, device=str(ctx.device), data=ctx.data_json(),
                    before=before, after=after, steps=steps, model=model, float_model=float_model,
                    versions=ctx.versions, reports=raw, loaded=ctx.loaded,
                    start_run=start.run_id if start is not None else None, start_profile=start_profile)
    from compress.report import chance_warnings, changed_images
    result.warnings.extend(ctx.warnings + chance_warnings(before, after, ctx.spec.num_classes))
    if result.data is not None and after is not before:
        result.changed = changed_images(result.data, before, after, ctx.spec.categories)
    if recipe.export.formats:
        _export(result, ctx)
    result.seconds = time.perf_counter() - t_all
    return result


def _time_run(ctx: _Context, before: dict, start: Optional[Point], start_profile: Optional[dict],
              model, after: dict) -> None:
    """Time the original, the start model and the compressed ``model`` (None: nothing was
    done) in one interleaved loop, and write each one's latency and the compressed model's
    speed ratios (``after["speed"]``) into the profiles. A model that runs in ONNX Runtime
    in lower precision is timed beside its float twin in ONNX Runtime too, so the speed-up
    splits into what the runtime gave and what compression gave."""
    models = [("original", ctx.loaded.model)]
    if start is not None:
        models.append(("start", start.model))
    if model is not None:
        models.append(("compressed", model))
    twin = ctx.runtime_twin(ctx.loaded.model, model) if model is not None else None
    twin_name = f"original in {twin.runtime}" if twin is not None else ""
    if twin is not None:
        models.append((twin_name, twin))
    timing = ctx.time(models)
    timing.set_latency("original", before)
    if start_profile is not None:
        timing.set_latency("start", start_profile)
    if model is None:
        return
    timing.set_latency("compressed", after)
    speed = [timing.speedup("original", "compressed", "total")]
    if twin is not None:
        speed += [timing.speedup("original", twin_name, "runtime"),
                  timing.speedup(twin_name, "compressed", "compression")]
    if start is not None:
        speed.append(timing.speedup("start", "compressed", "from start"))
    after["speed"] = [s.to_json() for s in speed]


# ------------------------------------------------------------------ several variants, one baseline


def run_variants(recipe: Recipe, variants: Sequence, on_progress: Optional[OnProgress] = None,
                 cancel: Optional[Cancel] = None, history=None, source: str = "", loaded=None, sets=None,
                 start: Optional[Point] = None, references: Sequence = ()) -> Variants:
    """Measure each quantize variant (a ``QuantConfig``) of ``recipe`` against one baseline:
    the original and the float model they start from are measured once, every variant on
    the same images in the same run. Each variant is recorded as a run of its own (its
    ``before`` is that shared original); one that fails is reported and the rest go on.
    ``references`` (e.g. ONNX Runtime FP32, the fair float baseline for ONNX Runtime INT8)
    are measured the same way but not recorded: they are yardsticks, not results."""
    from compress.quantize import validate as validate_quant
    from compress.recipe import validate
    base = replace(recipe, quantize=None)
    validate(base)
    done = done_sections(start, base)
    warnings: list[str] = []
    record = _Record(history, warnings)
    ctx = _context(base, loaded, sets, on_progress, cancel)
    model = start.model if done else ctx.loaded.model
    teacher = _check(ctx, base, model if isinstance(model, nn.Module) else model.model, done)
    problems = []
    for qc in list(references) + list(variants):   # every check that needs no model run, first
        vr = replace(recipe, quantize=qc)
        try:
            validate(vr)
            validate_quant(model if isinstance(model, nn.Module) else model.model, qc, _variant_device(ctx, qc))
            _check_training_images(vr, done, ctx.spec)
        except CompressError as e:
            problems.append(f"{qc.mode}: {e}")
    if problems:
        raise PipelineError("Nothing was measured: " + ("\n\n" if len(problems) > 1 else "")
                            + "\n\n".join(problems))
    if ctx.sets is None and base.data.path:
        ctx.sets = open_sets(base, ctx.spec)
    emit(on_progress, "measure", 0.0, "measuring the original")
    before = ctx.profile(ctx.loaded.model, "original", latency=False)
    steps: list[dict] = []
    raw: dict = {}
    float_model = _float_steps(ctx, base, model, done, teacher, steps, raw)
    distinct = float_model is not ctx.loaded.model
    reference = ctx.profile(float_model, "float reference", latency=False) if distinct else before
    todo = [(qc, False) for qc in references] + [(qc, True) for qc in variants]
    made: list = []                      # (name, qc, recorded, run_id, q, steps, raw, after, seconds)
    outcome: dict = {}                   # index in todo -> {"config", "error"} for a variant that failed
    for i, (qc, recorded) in enumerate(todo):
        vr = replace(recipe, quantize=qc, name=recipe.name or "")
        emit(on_progress, "variant", i / max(len(todo), 1), f"{qc.mode}: quantizing and measuring")
        run_id = None
        try:
            dev = _variant_device(ctx, qc)
            validate_quant(float_model, qc, dev)
            if recorded:
                run_id = record.start(vr, source, str(dev), ctx.versions)
            t0 = time.perf_counter()
            vsteps, vraw = list(steps), dict(raw)
            q = _quantize(ctx, vr, float_model, vsteps, vraw, device=dev)
            after = ctx.profile_quantized(q, float_model, qc.mode, latency=False)
            name = qc.mode if all(m[0] != qc.mode for m in made) else f"{qc.mode} #{i + 1}"
            made.append((name, vr, recorded, run_id, q, vsteps, vraw, after, time.perf_counter() - t0, i))
        except CompressError as e:
            record.fail(run_id, e)
            outcome[i] = {"config": qc, "error": str(e)}
    results, baselines = _time_variants(ctx, record, before, reference, distinct, float_model, made, outcome,
                                        todo, start if done else None)
    warnings.extend(ctx.warnings)
    return Variants(before=before, reference=reference, results=results, data=ctx.data_json(),
                    warnings=warnings, baselines=baselines)


def _time_variants(ctx: _Context, record: _Record, before: dict, reference: dict, distinct: bool, float_model,
                   made: list, outcome: dict, todo: list, start: Optional[Point]) -> tuple[list, list]:
    """Time the original, the float reference and every variant in one interleaved loop,
    then finish each variant's Result (and its history record). Returns (results, baselines)
    in the order of ``todo``."""
    models = [("original", ctx.loaded.model)] + ([("float model", float_model)] if distinct else []) \
        + [(m[0], m[4]) for m in made]
    timing = ctx.time(models)
    timing.set_latency("original", before)
    if distinct:
        timing.set_latency("float model", reference)
    ref_name = "float model" if distinct else "original"
    from compress.quantize import MODES
    from compress.report import chance_warnings, changed_images
    for name, vr, recorded, run_id, q, vsteps, vraw, after, seconds, i in made:
        timing.set_latency(name, after)
        speed = [timing.speedup("original", name, "total")]
        if distinct:
            speed.append(timing.speedup("float model", name, "from start"))
        # the FP32 of the same runtime, when it was measured in this loop
        twin = next((m[0] for m in made if m[4].mode == MODES[q.mode].float_twin), None)
        if twin is not None:
            speed += [timing.speedup(ref_name, twin, "runtime"),
                      timing.speedup(twin, name, "compression")]
        after["speed"] = [s.to_json() for s in speed]
        for w in chance_warnings(before, after, ctx.spec.num_classes):
            w = w if w.startswith("The original") else f"{name}: {w}"
            if w not in ctx.warnings:
                ctx.warnings.append(w)
        res = Result(recipe=vr, weights=ctx.loaded.weights_note, device=str(q.device), data=ctx.data_json(),
                     before=before, after=after, steps=vsteps, model=q, float_model=float_model,
                     versions=ctx.versions, reports=vraw, loaded=ctx.loaded,
                     start_run=start.run_id if start is not None else None,
                     start_profile=reference if start is not None else None, run_id=run_id,
                     seconds=seconds, warnings=record.warnings)
        if res.data is not None:
            res.changed = changed_images(res.data, before, after, ctx.spec.categories)
        if recorded:
            record.finish(res)
        outcome[i] = res
    results = [outcome[i] for i, (_, recorded) in enumerate(todo) if recorded and i in outcome]
    baselines = [outcome[i] for i, (_, recorded) in enumerate(todo) if not recorded and i in outcome]
    return results, baselines


def _variant_device(ctx: _Context, qc) -> torch.device:
    """Each variant runs where its runtime runs: CPU-only modes on the CPU beside a GPU."""
    from compress.quantize import MODES
    if qc.mode not in MODES or ctx.device.type in MODES[qc.mode].devices:
        return ctx.device
    return torch.device("cpu")


# ------------------------------------------------------------------ export


def _export(result: Result, ctx: _Context) -> None:
    from compress.data import cache_dir
    from compress.export import SUFFIX, export
    from compress.report import model_card
    spec, sets = ctx.spec, ctx.sets
    out = Path(result.recipe.export.out_dir) if result.recipe.export.out_dir else \
        cache_dir() / "exports" / time.strftime("%Y%m%d-%H%M%S")
    base = f"{spec.name}-compressed"
    batches = list(sets.evaluation)[:2] if sets else [(torch.randn(4, *spec.input_size), torch.zeros(4))]
    meta = {"steps": [{k: v for k, v in s.items() if k != "report"} for s in result.steps]}
    t0 = time.perf_counter()
    for i, fmt in enumerate(result.recipe.export.formats):
        emit(ctx.on_progress, "export", i / len(result.recipe.export.formats), f"writing {fmt}")
        try:
            e = export(result.model, fmt, out / f"{base}{SUFFIX[fmt]}", spec.input_size, batches,
                       loaded=ctx.loaded, meta=meta)
        except CompressError as err:       # one format that cannot take the model does not stop the rest
            result.export_errors[fmt] = str(err)
            result.warnings.append(f"{fmt}: {err}")
            continue
        result.exports[fmt] = e.to_json()
        result.artifacts[fmt] = e.path
    card = out / f"{base}.md"
    card.write_text(model_card(result))
    result.artifacts["model_card"] = str(card)
    result.steps.append({"step": "export", "config": {"formats": list(result.recipe.export.formats),
                                                      "out_dir": str(out)},
                         "seconds": round(time.perf_counter() - t0, 3), "report": result.exports})
