"""``run``: the flag form of a recipe, a recipe file, a start from an earlier run."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compress import pipeline
from compress.checkpoint import save_artifact
from compress.distill import RecoverConfig
from compress.errors import CompressError
from compress.history import History
from compress.paths import atomic_write
from compress.prune import StructuredConfig, UnstructuredConfig
from compress.quantize import MODES, QuantConfig
from compress.recipe import STEP_SECTIONS, DataRef, ExportRef, MeasureRef, ModelRef, Recipe, validate
from compress.report import speed_phrase
from compress.runtimes import ONNX_RUNTIME
from compress.zoo import LoadedModel
from compress.cli.common import _default_data, _fmt_bytes, _names


def _recipe_from_flags(a: argparse.Namespace, allow_no_prune: bool = False):
    """The flag form of ``run`` as a Recipe (the same thing a recipe file holds)."""
    if sum(bool(x) for x in (a.finetune_epochs, a.distill_epochs, a.recover_minutes)) > 1:
        raise CompressError("Choose one recovery: --finetune-epochs, --distill-epochs or --recover-minutes, "
                            "not two.")
    if (a.finetune_epochs or a.distill_epochs or a.recover_minutes) and not a.train_data:
        raise CompressError("Recovery trains on photos: give --train-data (a CIFAR-10 tarball uses "
                            "its train split; a folder without labels works with --distill-alpha 1).")
    if a.quantize in MODES and MODES[a.quantize].calibrates and not a.data:
        raise CompressError(f"--quantize {a.quantize} calibrates on real images: give --data.")
    if a.quantize in MODES and MODES[a.quantize].trains and not a.train_data:
        raise CompressError(f"--quantize {a.quantize} fine-tunes on labelled photos: give --train-data "
                            "(a CIFAR-10 tarball uses its train split).")
    prune = None
    if a.prune_ratio is not None or a.prune_layers:
        protected = None if a.protect is None else (() if a.protect == "none" else _names(a.protect))
        ratio = 0.5 if a.prune_ratio is None else a.prune_ratio
        prune = StructuredConfig(
            ratio=ratio if a.prune_target == "ratio" else None, criterion=a.prune_criterion,
            scope=a.prune_scope, only_layers=_names(a.prune_layers), protected=protected,
            round_to=a.round_to, target=a.prune_target, target_reduction=ratio, seed=a.seed,
            bn_images=a.bn_images)
    recover = None
    if a.finetune_epochs or a.distill_epochs or a.recover_minutes:
        recover = RecoverConfig(method="finetune" if a.finetune_epochs else "distill",
                                epochs=a.distill_epochs or a.finetune_epochs or 1, minutes=a.recover_minutes,
                                lr=a.lr, batch_size=a.recover_batch, unfreeze=a.unfreeze,
                                temperature=a.distill_T, alpha=a.distill_alpha,
                                teacher=a.teacher or "original", seed=a.seed,
                                attention=a.distill_attention, warmup_epochs=a.warmup_epochs, holdout=a.holdout)
        if prune is None and not allow_no_prune:
            raise CompressError("Recovery trains a pruned model: add --prune-ratio or --prune-layers.")
    unstructured = None
    if a.unstructured_amount:
        unstructured = UnstructuredConfig(amount=a.unstructured_amount, method=a.unstructured_method,
                                          scope=a.unstructured_scope, seed=a.seed)
    quant = None
    if a.quantize != "none":
        quant = QuantConfig(mode=a.quantize, backend=a.qbackend, calibration=a.calib, observer=a.observer,
                            equalize=a.equalize, bias_correction=a.bias_correction,
                            keep_float=_names(a.keep_float), keep_worst=a.keep_worst,
                            keep_rank=a.keep_rank, weight_bits=0 if a.weight_bits == "auto" else int(a.weight_bits),
                            qat_epochs=a.qat_epochs, qat_lr=a.qat_lr)
    return Recipe(
        model=ModelRef(name=a.model or ("" if a.checkpoint else "resnet18_cifar10"),
                       weights=a.weights, checkpoint=a.checkpoint, arch=a.arch, num_classes=a.num_classes or None,
                       trust_pickle=a.trust_pickle),
        data=DataRef(path=a.data, limit=a.limit, seed=a.seed, train_path=a.train_data, train_limit=a.train_limit),
        measure=MeasureRef(device=a.device, batch=a.batch, runs=a.runs, warmup=a.warmup, threads=a.threads),
        prune=prune, prune_steps=a.prune_steps, recover=recover, unstructured=unstructured, quantize=quant,
        export=ExportRef(formats=_names(a.export), out_dir=a.out))


def _cmd_run(a: argparse.Namespace) -> int:
    """Run a recipe (a file, or built from the flags) through the pipeline; print the
    Result as JSON or a short table. Every run is recorded in the history."""
    from dataclasses import replace
    start = None
    _check_outputs(a)
    history = None if a.no_history else History(a.history)
    if a.recipe:
        recipe = Recipe.load(a.recipe)
        if recipe.export.formats and recipe.export.out_dir and not a.out:
            _check_export_folder("export.out_dir", recipe.export.out_dir)
        if not recipe.data.path and not recipe.model.checkpoint:
            a.data = None
            _default_data(a, recipe.model.name)
            if a.data:
                recipe = replace(recipe, data=replace(recipe.data, path=a.data))
        if a.export or a.out:
            recipe = replace(recipe, export=ExportRef(
                formats=_names(a.export) or recipe.export.formats, out_dir=a.out or recipe.export.out_dir))
    else:
        if a.from_run is None:
            _default_data(a, a.model or ("" if a.checkpoint else "resnet18_cifar10"))
        elif a.data and a.data.lower() == "none":
            a.data = None
        recipe = _recipe_from_flags(a, allow_no_prune=a.from_run is not None)
    if a.from_run is not None:
        start, recipe = _start_from(a, recipe, history)
    validate(recipe)
    if a.save and recipe.quantize is not None and MODES[recipe.quantize.mode].engine != ONNX_RUNTIME:
        raise CompressError("--save writes float checkpoints and ONNX Runtime models; a "
                            f"--quantize {recipe.quantize.mode} model is measured but not saved "
                            "(use --export torchscript, or --quantize ort-int8 for an ONNX file).")

    def log(ev):
        if not a.json:
            print(f"[{ev.stage}] {ev.message}", file=sys.stderr, flush=True)

    result = pipeline.run(recipe, on_progress=log, history=history, source="cli", start=start)
    saved = _save(a, recipe, result) if a.save else {}
    for w in result.warnings:                  # e.g. a history or a --save that could not be written
        print(f"warning: {w}", file=sys.stderr, flush=True)
    out = result.to_json()
    out["artifacts"].update(saved)
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    before, after = result.before, result.after
    for label, key, fmt in [("params", "params", lambda v: f"{v / 1e6:.2f} M"),
                            ("size (file)", "size_bytes", _fmt_bytes),
                            ("size (gzip)", "size_gzip_bytes", _fmt_bytes),
                            ("MACs", "macs", lambda v: "-" if v is None else f"{v / 1e9:.3f} G")]:
        print(f"{label:<20} {fmt(before[key]):>12} -> {fmt(after[key]):>12}")
    lb, la = before["latency_ms"], after["latency_ms"]
    print(f"{'latency median':<20} {lb['median']:>9.2f} ms -> {la['median']:>9.2f} ms "
          f"(batch {la['batch']}, {la['device']}, {la['threads']} threads)")
    speed = speed_phrase(before, after) if after is not before else None
    if speed:
        print(f"{'speed':<20} {speed}")
    if before["accuracy"]:
        ab, aa = before["accuracy"], after["accuracy"]
        print(f"{'top-1':<20} {ab['top1']:>11.2f}% -> {aa['top1']:>11.2f}% (n={aa['n']})")
    for fmt, path in result.artifacts.items():
        print(f"{fmt:<20} {path}")
    if result.run_id is not None and not result.warnings:
        print(f"recorded as run {result.run_id} in {history.path}")
    return 0


def _save(a: argparse.Namespace, recipe: Recipe, result) -> dict:
    """Write ``--save`` whole or not at all; {artifact kind: path}. A failure after the work
    (no space, a read-only folder) is a warning on the result, which is printed as usual."""
    try:
        if recipe.quantize is None:
            loaded = result.loaded
            meta = {"steps": [{k: v for k, v in s.items() if k != "report"} for s in result.steps]}
            save_artifact(LoadedModel(result.model, loaded.spec, loaded.weights_note, loaded.trained),
                          Path(a.save).expanduser(), meta=meta)
            return {"checkpoint": str(a.save)}
        with atomic_write(Path(a.save).expanduser()) as f:
            f.write(result.model.onnx)
        return {"onnx": str(a.save)}
    except OSError as e:
        kept = result.artifacts.get("model")
        result.warnings.append(f"--save {a.save} could not be written ({e.strerror or e}); nothing was left "
                               "there. " + (f"The model is kept as run {result.run_id}'s: {kept}." if kept else
                                            "The figures below are kept; run again to save the model."))
        return {}


# The files a run will write are checked before anything is loaded or measured: a message
# now, not a traceback after the whole run.

def _check_outputs(a: argparse.Namespace) -> None:
    """``--save`` names a file (not a folder) in a folder that exists; ``--out`` can be a folder."""
    if a.save:
        p = Path(a.save).expanduser()
        if p.is_dir():
            raise CompressError(f"--save {a.save} is a folder; give a file name, e.g. {p / 'model.pt'}.")
        if not p.parent.is_dir():
            what = "is a file, not a folder" if p.parent.exists() else "does not exist"
            raise CompressError(f"--save {a.save}: the folder {p.parent} {what}; create it or choose another.")
    if a.out:
        _check_export_folder("--out", a.out)


def _check_export_folder(flag: str, folder: str) -> None:
    """The export folder is a folder, or can be made (nothing on its path is a file)."""
    out = Path(folder).expanduser()
    for q in (out, *out.parents):              # the nearest part of the path that exists
        if q.exists():
            if not q.is_dir():
                raise CompressError(f"{flag} {folder}: {q} is a file; the exported files go in a folder. "
                                    "Give a folder path.")
            return


def _start_from(a: argparse.Namespace, flags_recipe, history):
    """(Point, recipe) for ``run --from-run N``: run N's recipe, with the steps the flags
    give set on top (each drops the steps after it), measured on the flags' data if given."""
    from dataclasses import replace
    h = history or History(a.history)
    run = h.get(a.from_run)
    if run is None:
        raise CompressError(f"There is no run {a.from_run} in {h.path}.")
    start = pipeline.point_of_run(run)
    recipe = start.recipe
    for section in STEP_SECTIONS:
        cfg = getattr(flags_recipe, section)
        if cfg is not None:
            recipe = recipe.with_step(section, cfg)
    if a.data:
        recipe = replace(recipe, data=flags_recipe.data)
    return start, replace(recipe, measure=flags_recipe.measure, export=flags_recipe.export, name="")
