"""One run's shared parts: the loaded model, its images and device (the context), the
cheap checks before slow work, and the float and quantize steps."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional, Sequence

import torch
from torch import nn

from compress import data as D
from compress import prune as P
from compress import recovery
from compress.checkpoint import load_checkpoint, load_model
from compress.device import resolve_device
from compress.distill import load_teacher, recover
from compress.errors import CompressError, DataError
from compress.measure import evaluate, profile_model
from compress.timing import time_interleaved
from compress.progress import Cancel, OnProgress, emit
from compress.quantize import MODES, QuantConfig, profile_quantized, quantize
from compress.quantize import validate as validate_quant
from compress.recipe import Recipe
from compress.train import measure_step_seconds, software_versions

# ------------------------------------------------------------------ one run's shared parts


def load(recipe: Recipe):
    """The recipe's original model (LoadedModel)."""
    return load_ref(recipe.model)


def load_ref(m):
    """The one model loader: a ModelRef's model (zoo entry, or checkpoint file) as a LoadedModel."""
    if m.checkpoint:
        return load_checkpoint(m.checkpoint, arch=m.arch, num_classes=m.num_classes or None, like=m.name or None,
                               trust_pickle=m.trust_pickle)
    return load_model(m.name, weights=m.weights)


def open_sets(recipe: Recipe, spec):
    """The evaluation images and the disjoint scoring pool for ``recipe.data``, or None."""
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
    device = resolve_device(recipe.measure.device)
    loaded = loaded or load(recipe)
    return _Context(recipe, loaded, device, sets, on_progress, cancel, software_versions())


def _check(ctx: _Context, recipe: Recipe, model, done: tuple = ()) -> Any:
    """Cheap checks of the steps still to run, so a bad setting fails before any slow
    measurement; returns the teacher model (or None)."""
    if recipe.prune is not None and "prune" not in done:
        P.check_removes_something(model, recipe.prune, ctx.spec.input_size)
    teacher = None
    r = recipe.recover
    if r is not None and "recover" not in done and r.zoo_teacher is not None:
        teacher = load_teacher(r.zoo_teacher, ctx.spec)
    if recipe.quantize is not None and "quantize" not in done:
        validate_quant(model, recipe.quantize, ctx.device)
    _check_training_images(recipe, done, ctx.spec)
    return teacher


def _model_classes(spec) -> dict:
    """What a loader needs to map class folders to ``spec``'s classes by name."""
    return {"num_classes": spec.num_classes, "model_name": spec.name, "categories": spec.categories}


def _check_training_images(recipe: Recipe, done: tuple = (), spec=None) -> None:
    """The training photos exist, and have labels when the step still to run needs them."""
    r, q = recipe.recover, recipe.quantize
    needs = []                                       # (what, needs labels)
    if r is not None and "recover" not in done:
        needs.append((r.method_entry.noun, r.method_entry.needs_labels(r)))
    if q is not None and q.mode in MODES and MODES[q.mode].trains and "quantize" not in done:
        needs.append(("QAT", True))
    if not needs:
        return
    path = recipe.data.train_path
    if not path:
        raise DataError(f"{needs[0][0]} trains on photos: give training photos (data.train_path).")
    images = D.open_training(path)
    if spec is not None:                        # class folders that are not the model's classes
        D.for_model(images, **_model_classes(spec))
    if r is not None and "recover" not in done:  # enough photos for the held-out slice; labels α needs
        n = len(images) if recipe.data.train_limit is None else min(recipe.data.train_limit, len(images))
        recovery.check_photos(r, n, images.labelled)
    for what, labels in needs:
        if labels and not images.labelled:
            hint = (" Use distillation with α = 1 (label-free) instead." if what != "QAT" else
                    " Give one sub-folder per class, a labels.csv, or a CIFAR-10 tarball.")
            raise DataError(f"{what} trains on labelled photos, and {path} holds {len(images)} photos "
                            f"without labels.{hint}")


def _float_steps(ctx: _Context, recipe: Recipe, model, done: tuple, teacher, steps: list, raw: dict):
    """Run the float sections of ``recipe`` not in ``done`` on ``model``; returns the model."""
    sets = ctx.sets

    def step(name: str, config, t0: float, report, obj=None) -> None:
        raw[name] = obj if obj is not None else report
        steps.append({"step": name, "config": asdict(config) if config is not None else None,
                      "seconds": round(time.perf_counter() - t0, 3), "report": report})

    between = recipe.recover is not None and "recover" not in done and recipe.prune_steps > 1 \
        and recipe.prune is not None and "prune" not in done
    if recipe.prune is not None and "prune" not in done:
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
        t0 = time.perf_counter()
        plan, train, held = _planned(ctx, recipe, model, teacher)
        model, res = recover(model, ctx.loaded.model, plan.config, train, ctx.device, teacher=teacher,
                             val_batches=sets.evaluation if sets else None,
                             on_progress=ctx.stage("recover"), cancel=ctx.cancel,
                             input_size=ctx.spec.input_size, holdout_batches=held)
        step(recipe.recover.method, plan.config, t0,
             {"history": [asdict(h) for h in res.history], "train_images": len(train.dataset),
              "plan": plan.to_json(), "start_score": res.start_score, "best_epoch": res.best_epoch}, res)
    if recipe.unstructured is not None and "unstructured" not in done:
        t0 = time.perf_counter()
        model, sp = P.prune_unstructured(model, recipe.unstructured)
        step("prune_unstructured", recipe.unstructured, t0,
             {"global_sparsity": sp.global_sparsity,
              "layers": [{"layer": n, "zeros": z, "total": t} for n, z, t in sp.layers],
              "note": "weights zeroed in place: dense bytes and dense latency do not change; "
                      "compare size_gzip_bytes"}, sp)
    return model


def _planned(ctx: _Context, recipe: Recipe, model: nn.Module, teacher):
    """The recipe's recovery with every setting decided (compress.recovery.plan: from the
    number of training photos, their labels and the budget; a minutes budget is turned into
    epochs from a training step timed here), its training batches and its held-out photos."""
    r, d = recipe.recover, recipe.data
    classes = _model_classes(ctx.spec)
    n, labelled, images = D.count_training(d.train_path, limit=d.train_limit, **classes)
    step_s = read_s = None
    if r.minutes is not None:
        batch = recovery.plan(replace(r, minutes=None, epochs=1), n, labelled).config.batch_size
        emit(ctx.on_progress, "recover", 0.0, f"timing one training step at batch {batch}")
        step_s = measure_step_seconds(model, ctx.spec.input_size, batch, ctx.device,
                                      teacher=(teacher if teacher is not None else ctx.loaded.model)
                                      if r.method_entry.uses_teacher else None)
        read_s = recovery.seconds_to_read(images, ctx.spec.preprocess.transform())
    plan = recovery.plan(r, n, labelled, step_seconds=step_s, read_seconds=read_s or 0.0)
    train, held = D.train_split(d.train_path, ctx.spec.preprocess.transform(), limit=d.train_limit, seed=d.seed,
                                batch_size=plan.config.batch_size, holdout=plan.holdout, images=images, **classes)
    return plan, train, held


def _recover_between(ctx: _Context, recipe: Recipe, teacher, histories: list):
    """The ``recover`` callback of iterative pruning: the recipe's recovery (its epochs each
    time) after every pruning step, on the pruned model in place; each epoch's figures go
    to ``histories`` with the step they followed."""
    sets = ctx.sets
    planned: list = []

    def after_step(work: nn.Module, k: int) -> None:
        if not planned:
            planned.extend(_planned(ctx, recipe, work, teacher))
        plan, train, held = planned
        new, res = recover(work, ctx.loaded.model, plan.config, train, ctx.device, teacher=teacher,
                           val_batches=sets.evaluation if sets else None,
                           on_progress=ctx.stage(f"recover after prune step {k}"), cancel=ctx.cancel,
                           input_size=ctx.spec.input_size, holdout_batches=held)
        work.load_state_dict(new.state_dict())
        histories.extend({**asdict(h), "prune_step": k, "train_images": len(train.dataset)} for h in res.history)
    return after_step


def _quantize(ctx: _Context, recipe: Recipe, model, steps: list, raw: dict, device=None):
    qc, d, sets = recipe.quantize, recipe.data, ctx.sets
    t0 = time.perf_counter()
    train = (D.train_loader(d.train_path, ctx.spec.preprocess.transform(), limit=d.train_limit, seed=d.seed,
                            **_model_classes(ctx.spec))
             if MODES[qc.mode].trains else None)
    q = quantize(model, qc, ctx.spec.input_size, sets.scoring_batches(qc.calibration) if sets else None,
                 device or ctx.device, on_progress=ctx.stage(f"quantize {qc.mode}"), train_batches=train,
                 cancel=ctx.cancel)
    n_cal = min(qc.calibration, sets.pool_size) if sets and MODES[qc.mode].calibrates else 0
    raw["quantize"] = q
    steps.append({"step": "quantize", "config": asdict(qc), "seconds": round(time.perf_counter() - t0, 3),
                  "report": {"runtime": q.runtime, "size_bytes": q.size_bytes, "notes": q.notes,
                             "calibration_images": n_cal}})
    return q


