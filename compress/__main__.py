"""Command line: ``python -m compress {profile,run,auto,predict,diff,history,models,train-baseline}``.

Errors a user can cause print one plain line to stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compress.errors import CompressError


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error form: one line on stderr, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _num(name: str):
    """An argparse type for a number checked against compress/limits.py's range for ``name``."""
    from compress.limits import BOUNDS, BadNumber, check
    lo, hi, _ = BOUNDS[name]
    whole = isinstance(lo, int) and isinstance(hi, int)

    def parse(text: str):
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if whole else 'a number'}, "
                                             f"got {text!r}") from None
        try:
            return check(name, value, "value")
        except BadNumber as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("value: ").rstrip(".")) from None
    parse.__name__ = name.replace("_", " ")
    return parse


def _cmd_train_baseline(a: argparse.Namespace) -> int:
    from compress import distributed
    from compress.train import train_baseline_cifar10
    if a.model != "resnet18_cifar10":
        raise CompressError(f"train-baseline knows only resnet18_cifar10, not {a.model!r}.")

    def log(ev):
        if ev.stage == "epoch" or ev.stage == "data" or (ev.stage == "train" and a.verbose):
            print(f"[{ev.stage}] {ev.message}", flush=True)
    side = train_baseline_cifar10(a.data, Path(a.out), a.epochs, batch_size=a.batch, lr=a.lr,
                                  seed=a.seed, device=a.device,
                                  workdir=Path(a.workdir) if a.workdir else None,
                                  resume=a.resume, on_progress=log, train_limit=a.train_limit)
    if side:                                   # rank 0 (or a single process)
        print(json.dumps(side["test_accuracy"]))
    distributed.shutdown()
    return 0


def _fmt_bytes(n) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def _load(a: argparse.Namespace):
    from compress.pipeline import load_ref
    from compress.recipe import ModelRef
    return load_ref(ModelRef(name=a.model or ("" if a.checkpoint else "resnet18_cifar10"), weights=a.weights,
                             checkpoint=a.checkpoint, arch=a.arch, num_classes=a.num_classes or None,
                             trust_pickle=a.trust_pickle))


def _default_data(a: argparse.Namespace, model_name: str) -> None:
    """No --data: a model with a bundled evaluation sample (resnet18_cifar10) is measured
    on it, all of it unless --limit says otherwise; ``--data none`` measures no accuracy."""
    from compress.zoo import ZOO, describe_data, sample_data_path
    if a.data and a.data.lower() == "none":
        a.data = None
        return
    spec = ZOO.get(model_name)
    sample = sample_data_path(spec) if spec is not None and not a.data else None
    if sample is not None:
        a.data = str(sample)
        if not getattr(a, "json", False):
            print(f"no --data: accuracy on {describe_data(a.data)}", file=sys.stderr, flush=True)


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (text or "").split(",") if n.strip())


def _recipe_from_flags(a: argparse.Namespace, allow_no_prune: bool = False):
    """The flag form of ``run`` as a Recipe (the same thing a recipe file holds)."""
    from compress.distill import RecoverConfig
    from compress.prune import StructuredConfig, UnstructuredConfig
    from compress.quantize import QuantConfig
    from compress.recipe import DataRef, ExportRef, MeasureRef, ModelRef, Recipe
    if a.finetune_epochs and a.distill_epochs:
        raise CompressError("Choose one recovery: --finetune-epochs or --distill-epochs, not both.")
    if (a.finetune_epochs or a.distill_epochs) and not a.train_data:
        raise CompressError("Recovery trains on photos: give --train-data (a CIFAR-10 tarball uses "
                            "its train split; a folder without labels works with --distill-alpha 1).")
    from compress.quantize import MODES
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
    if a.finetune_epochs or a.distill_epochs:
        recover = RecoverConfig(method="distill" if a.distill_epochs else "finetune",
                                epochs=a.distill_epochs or a.finetune_epochs, lr=a.lr, unfreeze=a.unfreeze,
                                temperature=a.distill_T, alpha=a.distill_alpha,
                                teacher=a.teacher or "original", seed=a.seed,
                                attention=a.distill_attention, warmup_epochs=a.warmup_epochs)
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
    from compress import pipeline
    from compress.history import History
    from compress.recipe import ExportRef, Recipe, validate
    start = None
    history = None if a.no_history else History(a.history)
    if a.recipe:
        recipe = Recipe.load(a.recipe)
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
    from compress.quantize import MODES
    from compress.runtimes import ONNX_RUNTIME
    if a.save and recipe.quantize is not None and MODES[recipe.quantize.mode].engine != ONNX_RUNTIME:
        raise CompressError("--save writes float checkpoints and ONNX Runtime models; a "
                            f"--quantize {recipe.quantize.mode} model is measured but not saved "
                            "(use --export torchscript, or --quantize ort-int8 for an ONNX file).")

    def log(ev):
        if not a.json:
            print(f"[{ev.stage}] {ev.message}", file=sys.stderr, flush=True)

    result = pipeline.run(recipe, on_progress=log, history=history, source="cli", start=start)
    for w in result.warnings:                  # e.g. a history that could not be written
        print(f"warning: {w}", file=sys.stderr, flush=True)
    out = result.to_json()
    if a.save:
        if recipe.quantize is None:
            from compress.checkpoint import save_artifact
            from compress.zoo import LoadedModel
            loaded = result.loaded
            meta = {"steps": [{k: v for k, v in s.items() if k != "report"} for s in result.steps]}
            save_artifact(LoadedModel(result.model, loaded.spec, loaded.weights_note, loaded.trained),
                          a.save, meta=meta)
            out["artifacts"]["checkpoint"] = str(a.save)
        else:
            Path(a.save).write_bytes(result.model.onnx)
            out["artifacts"]["onnx"] = str(a.save)
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
    from compress.report import speed_phrase
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


def _start_from(a: argparse.Namespace, flags_recipe, history):
    """(Point, recipe) for ``run --from-run N``: run N's recipe, with the steps the flags
    give set on top (each drops the steps after it), measured on the flags' data if given."""
    from dataclasses import replace
    from compress import pipeline
    from compress.history import History
    from compress.recipe import STEP_SECTIONS
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


def _cmd_diff(a: argparse.Namespace) -> int:
    """What changed between two runs' compressed models on the same images: per-class
    top-1 deltas (B against A) and the images whose top-1 changed."""
    from compress.history import History
    from compress.report import diff_runs, forgetting_sentence
    from compress.zoo import ZOO
    h = History(a.history)
    runs = []
    for rid in (a.run_a, a.run_b):
        r = h.get(rid)
        if r is None:
            raise CompressError(f"There is no run {rid} in {h.path} (python -m compress history lists them).")
        if r.status != "done" or not r.after:
            raise CompressError(f"Run {rid} is {r.status}: only finished runs have results to compare.")
        runs.append(r)
    spec = ZOO.get((runs[0].recipe.get("model") or {}).get("name", ""))
    try:
        out = diff_runs(*runs, class_names=list(spec.categories) if spec else None)
    except ValueError as e:
        raise CompressError(str(e)) from None
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"run {out['a']} -> run {out['b']} on {out['n']} images ({out['source']})")
    print(forgetting_sentence(out["per_class"], out["changed"]))
    for r in out["per_class"][:10]:
        print(f"  {r['class']:<24} n={r['n']:<5} {r['before']:6.1f}% -> {r['after']:6.1f}%  ({r['delta']:+.1f} points)")
    return 0


def _cmd_history(a: argparse.Namespace) -> int:
    from compress.history import History
    h = History(a.history)
    if a.delete is not None:
        if not h.delete(a.delete):
            raise CompressError(f"There is no run {a.delete} in {h.path}.")
        print(f"deleted run {a.delete}")
        return 0
    runs = h.runs(status=a.status)
    if a.json:
        print(json.dumps([r.to_json() for r in runs], indent=2))
        return 0
    for r in runs:
        acc = (r.after or {}).get("accuracy") or {}
        lat = (r.after or {}).get("latency_ms") or {}
        print(f"{r.id:>5}  {r.status:<8} {r.name[:60]:<60} "
              + (f"top-1 {acc['top1']:.2f}%  " if acc else "")
              + (f"{lat['median']:.2f} ms" if lat else "")
              + (f"  error: {r.error}" if r.error else ""))
    return 0


def _cmd_profile(a: argparse.Namespace) -> int:
    from compress import data as D
    from compress.device import resolve_device
    from compress.measure import profile_model
    from compress.report import noisy_latency, profile_table, text_table
    from compress.zoo import no_data_hint

    device = resolve_device(a.device)
    loaded = _load(a)
    spec = loaded.spec
    if not a.checkpoint:
        _default_data(a, spec.name)
    elif a.data and a.data.lower() == "none":
        a.data = None
    batches = total = None
    source = ""
    if a.data:      # the same evaluation images as `run` and every page for (data, limit, seed)
        sets = D.eval_sets(a.data, spec.preprocess.transform(), spec.num_classes, spec.name, categories=spec.categories,
                           limit=a.limit, seed=a.seed)
        batches, total, source = sets.evaluation, sets.n_eval, sets.source
    prof = profile_model(loaded.model, spec.name, spec.input_size, device, batch=a.batch,
                         runs=a.runs, warmup=a.warmup, threads=a.threads, eval_batches=batches,
                         eval_total=total, weights=loaded.weights_note, eval_source=source)
    out = prof.to_json()
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print(text_table(profile_table(prof, no_data_hint(spec), counts=True)))
    if prof.latency_ms and prof.latency_ms.noisy:
        print(noisy_latency(prof.latency_ms))
    return 0


def _saliency_path(out: str) -> Path:
    """``--saliency``'s file, checked before any model loads."""
    out_path = Path(out).expanduser()
    if out_path.suffix.lower() != ".png":
        raise CompressError(f"--saliency {out}: give a .png file name.")
    if not out_path.parent.is_dir():
        raise CompressError(f"--saliency {out}: the folder {out_path.parent} does not exist.")
    return out_path


def _write_saliency(out: str, entries: list[dict], files, spec, model, original) -> None:
    """One PNG per answered photo: where the model looks (next to where the original looks
    when ``original`` is given, i.e. for ``--run``). One photo writes ``out`` itself; several
    write ``out``'s stem + ``-`` + the photo's stem. Each entry gains ``saliency``: the file,
    the method and, with two maps, their similarity."""
    from compress import saliency
    from compress.images import read_image
    out_path = _saliency_path(out)
    answered = [(e, f) for e, f in zip(entries, files) if "top" in e]
    models = ([("original", original)] if original is not None else []) + [("model", model)]
    for e, f in answered:
        image = read_image(Path(f).read_bytes(), Path(f).name)
        maps = saliency.explain(models, image, spec.preprocess, spec.categories)
        target = out_path if len(answered) == 1 else out_path.with_name(f"{out_path.stem}-{Path(f).stem}.png")
        saliency.side_by_side(image, maps, [n for n, _ in models]).save(target)
        e["saliency"] = {"file": str(target), "method": maps[0].method}
        if len(maps) == 2:
            e["saliency"]["similarity"] = round(saliency.similarity(*maps), 4)


def _cmd_predict(a: argparse.Namespace) -> int:
    """Top-k labels and probabilities per photo; a photo that cannot be read is a message of
    its own (exit 0 when at least one photo was answered, 2 when none)."""
    from compress.device import resolve_device
    from compress.predict import photo_files, predict_files
    files = photo_files(a.photos)                     # a missing path fails before the model loads
    if a.saliency:
        _saliency_path(a.saliency)
    device = resolve_device(a.device)
    if a.run is not None:
        if a.model or a.checkpoint:
            raise CompressError("Give --run N or --model/--checkpoint, not both.")
        from compress import pipeline
        from compress.history import History
        h = History(a.history)
        run = h.get(a.run)
        if run is None:
            raise CompressError(f"There is no run {a.run} in {h.path}.")
        point = pipeline.point_of_run(run)
        orig = pipeline.load_ref(point.recipe.model)
        spec, original = orig.spec, orig.model
        model, device = point.module, (device if not point.quantized else resolve_device("cpu"))
    else:
        loaded = _load(a)
        spec, model = loaded.spec, loaded.model
        original = None
    entries = predict_files(model, spec, files, device, topk=a.topk)
    if a.saliency:
        _write_saliency(a.saliency, entries, files, spec, model, original)
    if a.json:
        print(json.dumps(entries, indent=2))
    else:
        for e in entries:
            if "error" in e:
                print(f"{e['file']}: error: {e['error']}")
            else:
                print(f"{e['file']}: " + ", ".join(f"{t['label']} {100 * t['prob']:.1f}%" for t in e["top"]))
                if "saliency" in e:
                    sal = e["saliency"]
                    extra = (f"; similarity to the original's map {sal['similarity']:.2f}"
                             if "similarity" in sal else "")
                    print(f"  saliency ({sal['method']}) written to {sal['file']}{extra}")
    for e in entries:
        if "error" in e and a.json:
            print(f"warning: {e['error']}", file=sys.stderr)
    return 0 if any("top" in e for e in entries) else 2


def _ratio_list(text: str) -> list[float]:
    from compress.limits import check
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise CompressError(f"--ratios {text}: give channel ratios separated by commas, e.g. 0.3,0.5.") from None
    return [check("prune_ratio", v, "--ratios") for v in values]


def _cmd_auto(a: argparse.Namespace) -> int:
    """Search recipes for the fastest/smallest model within --max-drop points (compress.auto)."""
    from compress import auto
    from compress.history import History
    from compress.recipe import DataRef, MeasureRef, ModelRef, Recipe
    from compress.report import speed_phrase
    name = a.model or ("" if a.checkpoint else "resnet18_cifar10")
    _default_data(a, name)
    cfg = auto.AutoConfig(max_drop=a.max_drop, objective=a.objective, runtime=a.runtime,
                          budget_minutes=a.budget_minutes, screen_images=a.screen_images,
                          ratios=tuple(_ratio_list(a.ratios)))
    auto.validate(cfg)
    base = Recipe(model=ModelRef(name=name, weights=a.weights, checkpoint=a.checkpoint, arch=a.arch,
                                 num_classes=a.num_classes or None, trust_pickle=a.trust_pickle),
                  data=DataRef(path=a.data, limit=a.limit, seed=a.seed, train_path=a.train_data,
                               train_limit=a.train_limit),
                  measure=MeasureRef(device=a.device, batch=a.batch, runs=a.runs, warmup=a.warmup,
                                     threads=a.threads))

    def log(ev):
        if not a.json:
            print(f"[{ev.stage}] {ev.message}", file=sys.stderr, flush=True)

    res = auto.search(base, cfg, history=History(a.history), on_progress=log)
    if a.json:
        print(json.dumps(res.to_json(), indent=2))
        return 0 if res.chosen else 2
    for c in res.candidates:
        run = f"run #{c.run['run_id']}" if c.run else (f"screened as run #{c.screen['run_id']}" if c.screen else "")
        print(f"{c.label:<50} {run:<22} {c.why}")
    if res.chosen is None:
        print(f"No measured candidate stays within {cfg.max_drop:g} points (searched {res.seconds / 60:.1f} min).")
        return 2
    ch = res.chosen
    b, af = ch["before"]["accuracy"], ch["after"]["accuracy"]
    print(f"\nChosen: run #{ch['run_id']}: top-1 {af['top1']:.2f}% against {b['top1']:.2f}% "
          f"(n = {af['n']}), {ch['before']['size_bytes'] / ch['after']['size_bytes']:.1f}× smaller; "
          + (speed_phrase(ch["before"], ch["after"]) or "speed not stated"))
    return 0


def _cmd_models(a: argparse.Namespace) -> int:
    from compress.zoo import ZOO
    for spec in ZOO.values():
        print(f"{spec.name:<20} {spec.description}")
    return 0


_model_args = [
    (("--model",), dict(default=None, help="zoo entry (see `models`)")),
    (("--weights",), dict(default=None, help="weights file for the zoo entry")),
    (("--checkpoint",), dict(default=None, help="your own checkpoint instead of a zoo entry")),
    (("--arch",), dict(default=None, help="architecture of --checkpoint (default: guessed)")),
    (("--num-classes",), dict(type=_num("num_classes"), default=None,
                              help="classes of --checkpoint (default or 0: read from the file)")),
    (("--trust-pickle",), dict(action="store_true",
                               help="allow a full pickled model (runs code from the file)")),
]
_measure_args = [
    (("--data",), dict(default=None, help="labelled folder or CIFAR-10 tarball/folder (default: the model's "
                                          "bundled sample, if it has one; 'none': no accuracy)")),
    (("--limit",), dict(type=_num("limit"), default=None, help="evaluate on N images (seeded)")),
    (("--seed",), dict(type=_num("seed"), default=0)),
    (("--device",), dict(default="cpu", help="cpu, cuda or auto")),
    (("--batch",), dict(type=_num("batch"), default=1, help="batch size for latency")),
    (("--runs",), dict(type=_num("runs"), default=50, help="timed runs for latency")),
    (("--warmup",), dict(type=_num("warmup"), default=10)),
    (("--threads",), dict(type=_num("threads"), default=None)),
    (("--json",), dict(action="store_true", help="print one JSON object")),
]


def main(argv: list[str] | None = None) -> int:
    from compress.export import FORMATS
    from compress.prune import CRITERIA
    from compress.quantize import KEEP_RANKS, MODES, OBSERVERS
    p = _Parser(prog="python -m compress", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    pr = sub.add_parser("profile", help="measure a model: params, bytes, MACs, latency, accuracy")
    for args, kw in _model_args + _measure_args:
        pr.add_argument(*args, **kw)
    pr.set_defaults(func=_cmd_profile)

    ru = sub.add_parser("run", help="compress a model and measure it before and after")
    ru.add_argument("recipe", nargs="?", default=None,
                    help="a recipe JSON file (see compress/recipe.py); without it, the flags below")
    for args, kw in _model_args + _measure_args:
        ru.add_argument(*args, **kw)
    ru.add_argument("--prune-ratio", type=_num("prune_ratio"), default=None,
                    help="structured pruning: fraction of channels to remove (0-0.9); with "
                         "--prune-target macs/params, the fraction of MACs/params to remove")
    ru.add_argument("--prune-criterion", default="l1", choices=list(CRITERIA))
    ru.add_argument("--prune-scope", default="uniform", choices=["uniform", "global"])
    ru.add_argument("--prune-target", default="ratio", choices=["ratio", "macs", "params"])
    ru.add_argument("--prune-layers", default=None,
                    help="single-layer mode: prune only these layers (comma-separated), e.g. layer2.0.conv1")
    ru.add_argument("--prune-steps", type=_num("prune_steps"), default=1,
                    help="reach the ratio in N steps (with --finetune/--distill-epochs, recovery runs after "
                         "every step)")
    ru.add_argument("--bn-images", type=_num("bn_images"), default=512,
                    help="re-estimate BatchNorm statistics after pruning on up to N scoring photos (never "
                         "evaluation images); 0 = off (default 512)")
    ru.add_argument("--protect", default=None,
                    help="layers never pruned, comma-separated; 'none' for none "
                         "(default: the stem conv and the classifier)")
    ru.add_argument("--round-to", type=_num("round_to"), default=None, help="keep channel counts multiples of N")
    ru.add_argument("--unstructured-amount", type=_num("unstructured_amount"), default=None,
                    help="unstructured pruning: fraction of weights set to zero (0-0.95)")
    ru.add_argument("--unstructured-method", default="l1", choices=["l1", "random"])
    ru.add_argument("--unstructured-scope", default="global", choices=["global", "layer"])
    ru.add_argument("--quantize", default="none", choices=["none"] + list(MODES),
                    help="quantize after pruning; `after` is measured in the runtime that runs it")
    ru.add_argument("--calib", type=_num("calibration"), default=128, help="calibration images (kept apart from evaluation)")
    ru.add_argument("--qbackend", default="x86", choices=["x86", "qnnpack"])
    ru.add_argument("--observer", default="auto", choices=list(OBSERVERS),
                    help="activation ranges: auto tries min/max and percentile (ONNX Runtime) and keeps "
                         "the one closer to FP32 on the calibration photos; PyTorch uses histogram for auto")
    ru.add_argument("--equalize", action="store_true",
                    help="cross-layer equalization before INT8: same float outputs, weight ranges that "
                         "quantize better (pairs joined by ReLU; ReLU6 pairs are left alone)")
    ru.add_argument("--bias-correction", action="store_true",
                    help="before INT8, take the mean output shift that 8-bit weights cause (measured on the "
                         "calibration photos) out of each layer's bias")
    ru.add_argument("--keep-float", default=None, help="layers left in float, comma-separated")
    ru.add_argument("--finetune-epochs", type=_num("recover_epochs"), default=0, help="recover after pruning by fine-tuning")
    ru.add_argument("--distill-epochs", type=_num("recover_epochs"), default=0,
                    help="recover after pruning by knowledge distillation from --teacher")
    ru.add_argument("--distill-T", type=_num("temperature"), default=4.0, help="distillation temperature")
    ru.add_argument("--distill-alpha", type=_num("alpha"), default=0.9,
                    help="weight of the teacher's term (1 = label-free: no labels needed)")
    ru.add_argument("--distill-attention", type=_num("attention"), default=0.0,
                    help="weight of attention transfer on the stage outputs (0 = off; 1000 in Zagoruyko & "
                         "Komodakis); needs the original as the teacher")
    ru.add_argument("--warmup-epochs", type=_num("warmup_epochs"), default=0.0,
                    help="recovery: linear learning-rate warm-up before the cosine decay to zero")
    ru.add_argument("--teacher", default=None, help="zoo entry to distil from (default: the unpruned model)")
    ru.add_argument("--lr", type=_num("lr"), default=0.01, help="recovery learning rate (SGD, cosine)")
    ru.add_argument("--unfreeze", default="all", choices=["pruned", "all"],
                    help="pruned: only pruned layers, BatchNorms and the classifier train")
    ru.add_argument("--keep-worst", type=_num("keep_worst"), default=0,
                    help="also keep K layers in float, ranked by --keep-rank")
    ru.add_argument("--keep-rank", default="sqnr", choices=list(KEEP_RANKS),
                    help="sqnr: simulated 8-bit error (fast); accuracy: quantize with each candidate in "
                         "float and keep those that raise agreement with FP32 most (slower, measured)")
    ru.add_argument("--weight-bits", default="auto", choices=["auto", "8", "7"],
                    help="ONNX Runtime INT8 weights: auto chooses per CPU (with VNNI 8-bit; without, "
                         "8-bit and 7-bit are both tried and the closer to FP32 kept)")
    ru.add_argument("--qat-epochs", type=_num("qat_epochs"), default=1)
    ru.add_argument("--qat-lr", type=_num("lr"), default=1e-4)
    ru.add_argument("--train-data", default=None,
                    help="labelled training photos (QAT); a CIFAR-10 tarball/folder uses its train split")
    ru.add_argument("--train-limit", type=_num("train_limit"), default=None, help="train on N images (seeded)")
    ru.add_argument("--save", default=None, help="write the compressed model (project checkpoint format)")
    ru.add_argument("--export", default=None,
                    help=f"comma-separated: {', '.join(FORMATS)}; each file is "
                         "loaded back and checked against the model; a Markdown model card comes with them")
    ru.add_argument("--out", default=None, help="folder for --export files")
    ru.add_argument("--history", default=None, help="history file (default: COMPRESSION_LAB_HISTORY or "
                                                    "~/.cache/compression-lab/history.sqlite)")
    ru.add_argument("--no-history", action="store_true", help="do not record this run")
    ru.add_argument("--from-run", type=_num("run_id"), default=None, metavar="ID",
                    help="start from run ID's saved model: its steps are not redone; the flags add steps")
    ru.set_defaults(func=_cmd_run)

    hi = sub.add_parser("history", help="list (or delete) recorded runs")
    hi.add_argument("--history", default=None)
    hi.add_argument("--status", default=None, choices=["running", "done", "failed", "cancelled", "interrupted"])
    hi.add_argument("--delete", type=_num("run_id"), default=None, metavar="ID")
    hi.add_argument("--json", action="store_true")
    hi.set_defaults(func=_cmd_history)

    df = sub.add_parser("diff", help="what changed between two runs: per-class top-1 and the images that flipped")
    df.add_argument("run_a", type=_num("run_id"), metavar="RUN_A")
    df.add_argument("run_b", type=_num("run_id"), metavar="RUN_B")
    df.add_argument("--history", default=None)
    df.add_argument("--json", action="store_true")
    df.set_defaults(func=_cmd_diff)

    pd = sub.add_parser("predict", help="classify photos: top-k labels and probabilities per photo")
    pd.add_argument("photos", nargs="+", help="photo files or folders of photos")
    for args, kw in _model_args:
        pd.add_argument(*args, **kw)
    pd.add_argument("--run", type=_num("run_id"), default=None, metavar="ID",
                    help="use the model a history run saved (e.g. a pruned or INT8 one)")
    pd.add_argument("--history", default=None, help="history file for --run")
    pd.add_argument("--topk", type=_num("topk"), default=5)
    pd.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    pd.add_argument("--saliency", default=None, metavar="OUT.png",
                    help="write where the model looks (Grad-CAM, or occlusion for INT8/ONNX models) as a "
                         "PNG; with --run, next to the original's map. Several photos: OUT-<photo>.png")
    pd.add_argument("--json", action="store_true",
                    help='one list: {"file", "top": [{"index", "label", "prob"}]} or {"file", "error"} per photo')
    pd.set_defaults(func=_cmd_predict)

    au = sub.add_parser("auto", help="search recipes for the fastest or smallest model within an accuracy budget")
    for args, kw in _model_args + _measure_args:
        au.add_argument(*args, **kw)
    au.add_argument("--max-drop", type=_num("max_drop"), default=1.0, help="points of top-1 the model may lose")
    au.add_argument("--objective", default="latency", choices=["latency", "size"])
    au.add_argument("--runtime", default="ort",
                    help="ort (ONNX Runtime), torch (PyTorch INT8 through PT2E + Inductor) or executorch "
                         "(ExecuTorch XNNPACK, the phone runtime, timed on this CPU)")
    au.add_argument("--budget-minutes", type=_num("budget_minutes"), default=30.0)
    au.add_argument("--screen-images", type=_num("screen_images"), default=300,
                    help="images each candidate is screened on before the full measurement")
    au.add_argument("--ratios", default="0.2,0.35,0.5,0.65", help="channel ratios to try (comma-separated)")
    au.add_argument("--train-data", default=None, help="training photos: adds a short distillation candidate")
    au.add_argument("--train-limit", type=_num("train_limit"), default=None)
    au.add_argument("--history", default=None)
    au.set_defaults(func=_cmd_auto, runs=30, warmup=5)

    mo = sub.add_parser("models", help="list the model zoo")
    mo.set_defaults(func=_cmd_models)

    t = sub.add_parser("train-baseline", help="train the project's CIFAR-10 ResNet18")
    t.add_argument("model")
    t.add_argument("--data", required=True, help="cifar10-jpeg.tar.gz or a CIFAR-10 folder")
    t.add_argument("--epochs", type=_num("epochs"), default=30)
    t.add_argument("--batch", type=_num("batch_size"), default=128,
                   help="images per step over all processes (split evenly under torchrun)")
    t.add_argument("--train-limit", type=_num("train_limit"), default=None,
                   help="train on a seeded subset of this many training images")
    t.add_argument("--lr", type=_num("lr"), default=0.1)
    t.add_argument("--seed", type=_num("seed"), default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "assets"))
    t.add_argument("--workdir", default=None, help="per-epoch checkpoints (for --resume)")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--verbose", action="store_true")
    t.set_defaults(func=_cmd_train_baseline)

    a = p.parse_args(argv)
    try:
        return a.func(a)
    except CompressError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
