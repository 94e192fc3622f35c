"""``run(recipe)``: load, measure, prune → recover → zero weights → quantize → export,
measure again; one Result, recorded in the history.

The CLI (``python -m compress run``, flags or a recipe file) and the pages call this one
function, so a run from either is the same run and lands in the same history.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from compress.errors import CompressError
from compress.progress import Cancel, OnProgress, emit
from compress.recipe import Recipe


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
    artifacts: dict[str, str] = field(default_factory=dict)  # format (and "model_card") -> file
    versions: dict[str, str] = field(default_factory=dict)
    run_id: Optional[int] = None
    seconds: float = 0.0
    model: Any = None                  # the final model (nn.Module or QuantizedModel); not JSON
    float_model: Any = None            # the last float model (before quantization)
    reports: dict[str, Any] = field(default_factory=dict)   # step -> the engine's report object
    loaded: Any = None                 # the original LoadedModel (spec, weights note)

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "recipe": self.recipe.to_dict(), "model": self.recipe.model.name,
                "weights": self.weights, "device": self.device, "data": self.data, "before": self.before,
                "after": self.after, "steps": self.steps, "exports": self.exports,
                "artifacts": self.artifacts, "versions": self.versions, "seconds": round(self.seconds, 2)}


def load(recipe: Recipe):
    """The recipe's original model (LoadedModel)."""
    from compress.zoo import load_checkpoint, load_model
    m = recipe.model
    if m.checkpoint:
        return load_checkpoint(m.checkpoint, arch=m.arch, num_classes=m.num_classes, like=m.name or None,
                               trust_pickle=m.trust_pickle)
    return load_model(m.name, weights=m.weights)


def run(recipe: Recipe, on_progress: Optional[OnProgress] = None, cancel: Optional[Cancel] = None,
        history=None, source: str = "", loaded=None, sets=None) -> Result:
    """Run ``recipe`` and return its Result. With ``history`` (a History), the run is
    recorded as running, then done with its figures, or failed with its error.
    ``loaded``/``sets`` let a caller that already holds the model and images pass them."""
    from compress.distill import software_versions
    from compress.device import resolve_device
    from compress.recipe import validate
    validate(recipe)
    versions = software_versions()
    run_id = None
    if history is not None:
        run_id = history.start(recipe.to_dict(), name=recipe.name or recipe.describe(), source=source,
                               device=recipe.measure.device, versions=versions)
    try:
        device = resolve_device(recipe.measure.device)
        result = _run(recipe, device, on_progress, cancel, loaded, sets, versions)
    except BaseException as e:
        if history is not None and run_id is not None:
            msg = str(e) if isinstance(e, CompressError) else f"{type(e).__name__}: {e}"
            history.fail(run_id, msg or type(e).__name__)
        raise
    result.run_id = run_id
    if history is not None:
        history.finish(run_id, result.before, result.after, result.steps, result.artifacts)
    return result


def _run(recipe: Recipe, device: torch.device, on_progress, cancel, loaded, sets, versions) -> Result:
    from compress import data as D
    from compress import prune as P
    from compress.measure import profile_model
    t_all = time.perf_counter()
    loaded = loaded or load(recipe)
    spec = loaded.spec
    d, ms = recipe.data, recipe.measure

    # Cheap checks first: a bad setting fails before any slow measurement.
    if recipe.prune is not None:
        P.validate(loaded.model, recipe.prune)
    teacher = None
    if recipe.recover is not None and recipe.recover.method == "distill" and recipe.recover.teacher != "original":
        from compress.distill import load_teacher
        teacher = load_teacher(recipe.recover.teacher, spec)
    if recipe.quantize is not None:
        from compress.quantize import validate as validate_quant
        validate_quant(loaded.model, recipe.quantize, device)
    if sets is None and d.path:
        q = recipe.quantize
        sets = D.eval_sets(d.path, spec.preprocess.transform(), spec.num_classes, spec.name,
                           limit=d.limit, seed=d.seed,
                           n_scoring=max(64, q.calibration if q is not None else 0))

    def stage(name):
        return None if on_progress is None else (
            lambda ev: on_progress(type(ev)(f"{name}: {ev.stage}", ev.fraction, ev.message, ev.metrics)))

    def profile(model, name):
        return profile_model(model, spec.name, spec.input_size, device, batch=ms.batch, runs=ms.runs,
                             warmup=ms.warmup, threads=ms.threads,
                             eval_batches=sets.evaluation if sets else None,
                             eval_total=sets.n_eval if sets else None, weights=loaded.weights_note,
                             on_progress=stage(name), cancel=cancel).to_json()

    emit(on_progress, "measure", 0.0, "measuring the original")
    before = profile(loaded.model, "original")
    model, steps, raw = loaded.model, [], {}

    def step(name: str, config, t0: float, report, obj=None) -> None:
        raw[name] = obj if obj is not None else report
        steps.append({"step": name, "config": asdict(config) if config is not None else None,
                      "seconds": round(time.perf_counter() - t0, 3), "report": report})

    if recipe.prune is not None:
        t0 = time.perf_counter()
        model, reports = P.prune_iterative(model, recipe.prune, spec.input_size, steps=recipe.prune_steps,
                                           batches=sets.scoring if sets else None,
                                           on_progress=stage("prune"), cancel=cancel)
        step("prune_structured", recipe.prune, t0, [r.summary() for r in reports], reports)
    if recipe.recover is not None:
        from compress.distill import recover
        t0 = time.perf_counter()
        train = D.train_loader(d.train_path, spec.preprocess.transform(), limit=d.train_limit, seed=d.seed,
                               batch_size=recipe.recover.batch_size)
        model, res = recover(model, loaded.model, recipe.recover, train, device, teacher=teacher,
                             on_progress=stage("recover"), cancel=cancel)
        step(recipe.recover.method, recipe.recover, t0,
             {"history": [asdict(h) for h in res.history], "train_images": len(train.dataset)})
    if recipe.unstructured is not None:
        t0 = time.perf_counter()
        model, sp = P.prune_unstructured(model, recipe.unstructured)
        raw["prune_unstructured"] = sp
        step("prune_unstructured", recipe.unstructured, t0,
             {"global_sparsity": sp.global_sparsity,
              "layers": [{"layer": n, "zeros": z, "total": t} for n, z, t in sp.layers],
              "note": "weights zeroed in place: dense bytes and dense latency do not change; "
                      "compare size_gzip_bytes"})
    float_model = model
    if recipe.quantize is not None:
        from compress.quantize import profile_quantized, quantize
        qc = recipe.quantize
        t0 = time.perf_counter()
        train = (D.train_loader(d.train_path, spec.preprocess.transform(), limit=d.train_limit, seed=d.seed)
                 if qc.mode == "qat" else None)
        q = quantize(model, qc, spec.input_size, sets.scoring if sets else None, device,
                     on_progress=stage("quantize"), train_batches=train, cancel=cancel)
        step("quantize", qc, t0, {"runtime": q.runtime, "size_bytes": q.size_bytes, "notes": q.notes})
        emit(on_progress, "measure", 0.9, "measuring the quantized model")
        after = profile_quantized(q, model, spec.name, spec.input_size, batch=ms.batch, runs=ms.runs,
                                  warmup=ms.warmup, threads=ms.threads,
                                  eval_batches=sets.evaluation if sets else None,
                                  weights=loaded.weights_note, on_progress=stage("compressed")).to_json()
        model = q
    else:
        after = profile(model, "compressed")

    result = Result(recipe=recipe, weights=loaded.weights_note, device=str(device),
                    data=None if sets is None else {"source": sets.source, "n_eval": sets.n_eval,
                                                    "n_scoring": sets.n_scoring, "seed": d.seed},
                    before=before, after=after, steps=steps, model=model, float_model=float_model,
                    versions=versions, reports=raw, loaded=loaded)
    if recipe.export.formats:
        _export(result, loaded, sets, spec, on_progress)
    result.seconds = time.perf_counter() - t_all
    return result


def _export(result: Result, loaded, sets, spec, on_progress) -> None:
    from compress.export import SUFFIX, export, model_card
    from compress.data import cache_dir
    out = Path(result.recipe.export.out_dir) if result.recipe.export.out_dir else \
        cache_dir() / "exports" / time.strftime("%Y%m%d-%H%M%S")
    base = f"{spec.name}-compressed"
    batches = list(sets.evaluation)[:2] if sets else [(torch.randn(4, *spec.input_size), torch.zeros(4))]
    meta = {"steps": [{k: v for k, v in s.items() if k != "report"} for s in result.steps]}
    t0 = time.perf_counter()
    for i, fmt in enumerate(result.recipe.export.formats):
        emit(on_progress, "export", i / len(result.recipe.export.formats), f"writing {fmt}")
        e = export(result.model, fmt, out / f"{base}{SUFFIX[fmt]}", spec.input_size, batches,
                   loaded=loaded, meta=meta)
        result.exports[fmt] = e.to_json()
        result.artifacts[fmt] = e.path
    card = out / f"{base}.md"
    card.write_text(model_card(result))
    result.artifacts["model_card"] = str(card)
    result.steps.append({"step": "export", "config": {"formats": list(result.recipe.export.formats),
                                                      "out_dir": str(out)},
                         "seconds": round(time.perf_counter() - t0, 3), "report": result.exports})
