"""Running a recipe (run) and several quantize variants against one baseline
(run_variants), timed in one interleaved loop, exported and recorded."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from compress.errors import CompressError
from compress.export import FORMATS, export
from compress.paths import atomic_write, cache_dir
from compress.progress import Cancel, OnProgress, emit
from compress.quantize import MODES
from compress.quantize import validate as validate_quant
from compress.recipe import Recipe, validate
from compress.report import chance_warnings, changed_images, model_card
from compress.pipeline.points import PipelineError, Point, Result, Variants, done_sections
from compress.pipeline.steps import (_check, _check_training_images, _context, _Context, _float_steps, _quantize,
                                     open_sets)
from compress.pipeline.store import _Record

# ------------------------------------------------------------------ run one recipe


def run(recipe: Recipe, on_progress: Optional[OnProgress] = None, cancel: Optional[Cancel] = None,
        history=None, source: str = "", loaded=None, sets=None, start: Optional[Point] = None) -> Result:
    """Run ``recipe`` and return its Result. With ``history`` (a History) the run is
    recorded as running, then done with its figures and model file, or failed with its
    error. ``loaded``/``sets`` let a caller that already holds the model and images pass
    them; ``start`` skips the steps a Point has already done (its model is measured in
    this run too, as ``start_profile``).

    An exception (a CompressError, Ctrl-C's KeyboardInterrupt, …) leaves with ``run_id`` set
    on it: the history row it was recorded as (failed, or cancelled), or None, so that the
    caller can name the row in its one-line message."""
    validate(recipe)
    done = done_sections(start, recipe)
    warnings: list[str] = []
    record = _Record(history, warnings)
    ctx = _context(recipe, loaded, sets, on_progress, cancel)
    run_id = record.start(recipe, source, str(ctx.device), ctx.versions)
    try:
        result = _run(ctx, recipe, start if done else None, done)
        warnings.extend(result.warnings)                       # e.g. a format that could not be exported
        result.run_id, result.warnings = run_id, warnings     # one list: finishing may add to it
        record.finish(result)
    except BaseException as e:
        e.run_id = run_id if record.fail(run_id, e) else None
        raise
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
    result.warnings.extend(_data_notes(ctx.sets) + ctx.warnings + chance_warnings(before, after, ctx.spec.num_classes))
    if result.data is not None and after is not before:
        result.changed = changed_images(result.data, before, after, ctx.spec.categories)
    if recipe.export.formats:
        _export(result, ctx)
    result.seconds = time.perf_counter() - t_all
    return result


def _data_notes(sets) -> list[str]:
    """What the evaluation images' folder scan noted (e.g. class folders left out for holding
    no images). EvalSets has no field of its own for it: the scoring pool is an ImageList
    cut from the same scan, and carries the scan's notes."""
    return list(getattr(getattr(sets, "pool", None), "notes", ()))


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
    warnings.extend(_data_notes(ctx.sets) + ctx.warnings)
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
    if qc.mode not in MODES or ctx.device.type in MODES[qc.mode].devices:
        return ctx.device
    return torch.device("cpu")


# ------------------------------------------------------------------ export


def _export(result: Result, ctx: _Context) -> None:
    spec, sets = ctx.spec, ctx.sets
    out = Path(result.recipe.export.out_dir) if result.recipe.export.out_dir else \
        cache_dir() / "exports" / time.strftime("%Y%m%d-%H%M%S")
    base = f"{spec.name}-compressed"
    batches = list(sets.evaluation)[:2] if sets else [(torch.randn(4, *spec.input_size), torch.zeros(4))]
    meta = {"steps": [{k: v for k, v in s.items() if k != "report"} for s in result.steps]}
    t0 = time.perf_counter()
    for i, fmt in enumerate(result.recipe.export.formats):
        emit(ctx.on_progress, "export", i / len(result.recipe.export.formats), f"writing {fmt}")
        path = out / f"{base}{FORMATS[fmt].suffix}"
        try:
            e = export(result.model, fmt, path, spec.input_size, batches, loaded=ctx.loaded, meta=meta)
        except (CompressError, OSError) as err:   # one format that cannot take the model, or a full
            if isinstance(err, OSError):          # disk, does not stop the rest nor lose the result
                path.unlink(missing_ok=True)      # no half-written file
                err = f"{path} could not be written ({err.strerror or err}); nothing was left there."
            result.export_errors[fmt] = str(err)
            result.warnings.append(f"{fmt}: {err}")
            continue
        result.exports[fmt] = e.to_json()
        result.artifacts[fmt] = e.path
    card = out / f"{base}.md"
    try:
        with atomic_write(card) as f:
            f.write(model_card(result).encode())
        result.artifacts["model_card"] = str(card)
    except OSError as err:
        result.warnings.append(f"The model card {card} could not be written ({err.strerror or err}).")
    result.steps.append({"step": "export", "config": {"formats": list(result.recipe.export.formats),
                                                      "out_dir": str(out)},
                         "seconds": round(time.perf_counter() - t0, 3), "report": result.exports})
