"""The other commands: profile, predict, auto, diff, history, models, train-baseline."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compress import auto, demo, pipeline, saliency
from compress import data as D
from compress import distributed
from compress.device import resolve_device
from compress.errors import CompressError
from compress.history import History
from compress.images import read_image
from compress.measure import profile_model
from compress.predict import photo_files, predict_files
from compress.recipe import DataRef, MeasureRef, ModelRef, Recipe
from compress.report import diff_runs, forgetting_sentence, noisy_latency, profile_table, speed_phrase, text_table
from compress.train import train_baseline_cifar10
from compress.zoo import ZOO, no_data_hint
from compress.cli.common import _default_data, _load, _ratio_list


def _cmd_train_baseline(a: argparse.Namespace) -> int:
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




def _cmd_diff(a: argparse.Namespace) -> int:
    """What changed between two runs' compressed models on the same images: per-class
    top-1 deltas (B against A) and the images whose top-1 changed."""
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
              + (f"  {'note' if r.status == 'done' else 'error'}: {r.error}" if r.error else ""))
    return 0


def _cmd_profile(a: argparse.Namespace) -> int:

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
    files = photo_files(a.photos)                     # a missing path fails before the model loads
    if a.saliency:
        _saliency_path(a.saliency)
    device = resolve_device(a.device)
    if a.run is not None:
        if a.model or a.checkpoint:
            raise CompressError("Give --run N or --model/--checkpoint, not both.")
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




def _cmd_auto(a: argparse.Namespace) -> int:
    """Search recipes for the fastest/smallest model within --max-drop points (compress.auto)."""
    name = a.model or ("" if a.checkpoint else "resnet18_cifar10")
    _default_data(a, name)
    cfg = auto.AutoConfig(max_drop=a.max_drop, objective=a.objective, runtime=a.runtime,
                          budget_minutes=a.budget_minutes, screen_images=a.screen_images,
                          ratios=tuple(_ratio_list(a.ratios)), distill_epochs=a.recover_epochs)
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

    if a.demo:
        res = demo.run(base, runtime=a.runtime, max_drop=a.max_drop, objective=a.objective, history=History(a.history),
                       on_progress=log)
        cfg = res.config
    else:
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
    for spec in ZOO.values():
        print(f"{spec.name:<20} {spec.description}")
    return 0
