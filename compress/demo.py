"""The quick demo: a ladder of compressed models that opens in about half a minute, offline.

Training a pruned model back takes minutes to hours on a CPU, so the project ships a few
compressed variants of a zoo model (``assets/ladder/``: made by ``bench/make_ladder.sh``
with the product's own recovery recipe; float16 weights; a sidecar JSON per file says how
each was made). The demo measures, **live, in this run, on the given images**:

- the original and its forms in the runtime (ONNX Runtime FP32 and INT8 for ``ort``);
- every shipped variant and its forms in the runtime, each started from the shipped model
  (its recipe's prune and recover steps are recorded as already done).

Nothing is taken from a sidecar but the recipe that made the model (shown on screen); every
figure on the ladder comes from this run. The result is an :class:`~compress.auto.AutoResult`,
so the Explore page and ``python -m compress auto --demo --json`` show it like a search: the
``frontier`` is the ladder, and the chosen model is the smallest (or fastest) within the
accuracy budget. Every run is recorded in the history (source ``demo``); a second visit
opens the ladder from there at once (``measure=False``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from compress import auto, pipeline
from compress.checkpoint import load_checkpoint
from compress.distill import RecoverConfig
from compress.errors import CompressError
from compress.paths import ASSETS
from compress.pipeline import Point
from compress.progress import Cancel, Cancelled, OnProgress, emit
from compress.prune import StructuredConfig
from compress.quantize import MODES, QuantConfig
from compress.recipe import Recipe, RecipeError

LADDER_DIR = ASSETS / "ladder"


class DemoError(CompressError):
    """A demo that cannot run (no shipped variants for this model, or no images)."""


@dataclass(frozen=True)
class Variant:
    """A shipped compressed model: its file, the recipe steps that made it, and its sidecar."""
    path: Path
    prune: StructuredConfig
    recover: Optional[RecoverConfig]
    sidecar: dict


def variants(model_name: str, folder: Path = LADDER_DIR) -> list[Variant]:
    """The shipped variants of ``model_name``, least pruned first (a sidecar that cannot be
    read, or whose model file is missing, is left out)."""
    out = []
    for side in sorted(folder.glob(f"{model_name}_*.json")):
        try:
            d = json.loads(side.read_text())
            if d.get("model") != model_name:
                continue
            r = Recipe.from_dict({"prune": d["recipe"]["prune"], "recover": d["recipe"].get("recover")},
                                 check=False)
        except (OSError, ValueError, KeyError, TypeError, RecipeError):
            continue
        path = folder / d.get("file", "")
        if r.prune is None or not path.is_file():
            continue
        out.append(Variant(path, r.prune, r.recover, d))
    return sorted(out, key=lambda v: (v.prune.ratio or 0.0, str(v.path)))


def _made_recipe(base: Recipe, v: Variant) -> Recipe:
    """``base`` with the variant's prune and recover steps, as the steps it has already done.
    The training photos are named by the sidecar (the recipe records how the model was made;
    nothing here trains)."""
    train = v.sidecar.get("training_data") or "the training photos named in " + v.path.with_suffix(".json").name
    return replace(base, prune=v.prune, recover=v.recover, quantize=None, unstructured=None,
                   data=replace(base.data, train_path=train, train_limit=None),
                   export=replace(base.export, formats=()), name="")


def run(base: Recipe, runtime: str = "ort", max_drop: float = 1.0, objective: str = "latency", history=None,
        on_progress: Optional[OnProgress] = None, cancel: Optional[Cancel] = None, loaded=None,
        measure: bool = True, folder: Path = LADDER_DIR) -> auto.AutoResult:
    """Measure the original, the shipped variants and their forms in ``runtime`` on
    ``base``'s images (see the module docstring); ``max_drop`` and ``objective`` choose the
    model and draw the ladder as the search does."""
    if not base.data.path:
        raise DemoError("The demo measures on labelled images: give them (the bundled sample of the model).")
    if runtime not in auto.RUNTIMES:
        raise DemoError(f"Runtime {runtime!r} is not searched: use {', '.join(auto.RUNTIMES)}.")
    shipped = variants(base.model.name, folder)
    if not shipped:
        raise DemoError(f"No compressed variants of {base.model.name} ship with the project (assets/ladder/): "
                        "the demo is for resnet18_cifar10. Use the search instead.")
    cfg = auto.AutoConfig(max_drop=max_drop, objective=objective, runtime=runtime, budget_minutes=5,
                          ratios=tuple(v.prune.ratio for v in shipped), distill_epochs=0, demo=True)
    auto.validate(cfg)
    int8 = auto.RUNTIMES[runtime]
    forms = [QuantConfig(mode=m) for m in (MODES[int8].float_twin, int8) if m is not None]
    t0 = time.perf_counter()
    index = auto._history_index(history)
    sets = None
    if measure:
        auto.remember(history, base, cfg)
        loaded = loaded if loaded is not None else pipeline.load(base)
    groups: list[tuple[Optional[Variant], Recipe]] = [(None, replace(base, name=""))]
    groups += [(v, _made_recipe(base, v)) for v in shipped]
    cands: list[auto.Candidate] = []
    for k, (v, recipe) in enumerate(groups):
        made = [auto.Candidate(replace(recipe, quantize=q), _label(v, q)) for q in forms]
        cands += made
        todo = [c for c in made if auto._find(index, c.recipe) is None]
        for c in made:
            if c not in todo:
                c.stage, c.run = "measured", auto._find(index, c.recipe)
        if not todo:
            continue
        if not measure:
            for c in todo:
                c.stage, c.why = "skipped", "not measured yet"
            continue
        if cancel is not None and cancel.is_set():
            raise Cancelled("demo cancelled")
        emit(on_progress, "demo", k / len(groups), f"measuring {_label(v, None)} and its {runtime_forms(forms)}")
        start = None
        try:
            if sets is None:                   # the images, opened once for every model
                sets = pipeline.open_sets(base, loaded.spec)
            if v is not None:
                start = Point(recipe, load_checkpoint(v.path, like=base.model.name).model)
            res = pipeline.run_variants(recipe, [c.recipe.quantize for c in todo], history=history, source="demo",
                                        loaded=loaded, sets=sets, start=start, cancel=cancel)
        except CompressError as e:
            for c in todo:
                c.stage, c.why = "skipped", f"could not run: {e}"
            continue
        for c, r in zip(todo, res.results):
            if isinstance(r, dict):
                c.stage, c.why = "skipped", f"could not run: {r['error']}"
            else:
                c.stage, c.run = "measured", auto._point(r)
    measured = [c for c in cands if c.stage == "measured"]
    front = auto.frontier([c.run for c in measured], cfg.objective)
    ok = [c for c in measured if auto._drop(c.run["before"], c.run["after"])[0] <= cfg.max_drop
          and auto._objective(c.run["after"], cfg.objective) is not None]
    chosen = min(ok, key=lambda c: auto._objective(c.run["after"], cfg.objective)) if ok else None
    word = "fastest" if cfg.objective == "latency" else "smallest"
    for c in measured:
        drop = auto._drop(c.run["before"], c.run["after"])[0]
        c.why = (f"chosen: the {word} within the budget" if c is chosen else
                 f"lost {drop:.2f} points, over the budget of {cfg.max_drop:g}" if drop > cfg.max_drop else
                 "its speed was not stated (the machine was busy)"
                 if auto._objective(c.run["after"], cfg.objective) is None else
                 "on the ladder" if any(p["run_id"] == c.run["run_id"] for p in front) else
                 f"another rung is as accurate and {'faster' if cfg.objective == 'latency' else 'smaller'}")
    emit(on_progress, "demo", 1.0, "done")
    return auto.AutoResult(cfg, cands, front, chosen.run if chosen else None, time.perf_counter() - t0)


def runtime_forms(forms: list[QuantConfig]) -> str:
    return " and ".join(f.mode for f in forms) + " forms"


def _label(v: Optional[Variant], q: Optional[QuantConfig]) -> str:
    what = "original" if v is None else (
        f"shipped prune {v.prune.ratio:g}" + (f" + {v.recover.method} {v.recover.epochs} ep" if v.recover else ""))
    return what + (f", {q.mode}" if q is not None else "")


def button_help(shipped: list[Variant]) -> str:
    """The quick-demo button's tooltip: what it measures."""
    what = ", ".join(f"prune {v.prune.ratio:g}" + (f" + {v.recover.epochs} epochs of {v.recover.method}"
                                                    if v.recover else "") for v in shipped)
    return (f"Measures now, on the bundled sample: the original, {len(shipped)} compressed models that ship with "
            f"the project ({what}) and their float and INT8 forms in the runtime chosen below (ONNX Runtime: about "
            "half a minute; PyTorch compiles each model first). The accuracy budget and the aim below choose the "
            "model. Every figure is measured on this machine in this run; a second visit opens the ladder at once.")


def made_notes(shipped: list[Variant]) -> list[str]:
    """One line per shipped model: its file, size and the command that made it (from its
    sidecar). The figures on the ladder are measured now, not read from here."""
    out = []
    for v in shipped:
        s = v.sidecar
        photos = s.get("training_photos")
        out.append(f"{v.path.name} ({v.path.stat().st_size / 1e6:.1f} MB, float16): "
                   + (f"trained back on {photos:,} photos, " if isinstance(photos, int) else "")
                   + f"made by `{s.get('command', 'unknown')}`")
    return out
