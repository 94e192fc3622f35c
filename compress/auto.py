"""Autopilot: search recipes for the fastest (or smallest) model that loses at most
``max_drop`` points of top-1, measuring every candidate through the pipeline.

The search, cheapest first:

1. **Candidates**: channel ratios (BatchNorm re-estimated, no training) × the target
   runtime's float and INT8 forms (``ort``: ONNX Runtime FP32 / INT8; ``torch``: eager FP32 /
   static INT8), plus INT8 with the 2 worst layers kept in float. With training photos and
   budget left, a short distillation (then INT8) of each prune that failed screening, least
   pruned first, until one fails even after it.
2. **Screening**: each candidate is run on a small seeded subset of the evaluation images
   (``screen_images``) with a short timing loop. A candidate whose drop exceeds the budget
   by more than its 95% interval's half-width is dropped here.
3. **Full measurement** of the survivors, most promising first, on the full evaluation
   images with the full timing loop, until the time budget is spent.

Every run, screening included, is a run in the history (source ``auto``). A run already
in the history with the same recipe is reused, so a cancelled search resumes where it
stopped. The chosen model is the best objective among the fully measured candidates whose
measured drop is within ``max_drop``; the frontier is the set of fully measured points that
no other point beats on both accuracy and the objective.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

from compress import pipeline
from compress.distill import RecoverConfig
from compress.errors import CompressError
from compress.progress import Cancel, Cancelled, OnProgress, emit
from compress.prune import StructuredConfig
from compress.quantize import MODES, QuantConfig
from compress.recipe import MeasureRef, Recipe
from compress.report import speed_entry

OBJECTIVES = ("latency", "size")
# runtime searched -> its INT8 mode; the FP32 form is that mode's float twin (None: PyTorch
# eager, the original itself)
RUNTIMES = {"ort": "ort-int8", "torch": "pt2e", "executorch": "et-int8"}


def runtime_name(runtime: str) -> str:
    """How pages name a searched runtime (the runtime of its INT8 mode, e.g. "ONNX Runtime")."""
    return MODES[RUNTIMES[runtime]].engine


class AutoError(CompressError):
    """An autopilot request that cannot run."""


@dataclass(frozen=True)
class AutoConfig:
    max_drop: float = 1.0                     # points of top-1 the chosen model may lose
    objective: str = "latency"                # "latency": fastest; "size": fewest bytes
    runtime: str = "ort"                      # a key of RUNTIMES
    budget_minutes: float = 30.0
    screen_images: int = 300
    ratios: tuple[float, ...] = (0.2, 0.35, 0.5, 0.65)
    distill_epochs: int = 1                   # for the distillation candidate (with training photos)


@dataclass
class Candidate:
    recipe: Recipe
    label: str
    stage: str = "waiting"                    # waiting, screened, measured, skipped
    screen: Optional[dict] = None             # {"run_id", "drop", "half_width", "objective"}
    run: Optional[dict] = None                # the full run: {"run_id", "recipe", "before", "after"}
    why: str = ""                             # why it lost, or "chosen"

    def to_json(self) -> dict:
        return {"label": self.label, "recipe": self.recipe.to_dict(), "stage": self.stage,
                "screen": self.screen, "run_id": (self.run or {}).get("run_id"), "why": self.why}


@dataclass
class AutoResult:
    config: AutoConfig
    candidates: list[Candidate]
    frontier: list[dict] = field(default_factory=list)
    chosen: Optional[dict] = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"config": asdict(self.config), "frontier": self.frontier, "chosen": self.chosen,
                "candidates": [c.to_json() for c in self.candidates], "seconds": round(self.seconds, 1)}


def validate(cfg: AutoConfig) -> None:
    if cfg.objective not in OBJECTIVES:
        raise AutoError(f"Unknown objective {cfg.objective!r}: use {' or '.join(OBJECTIVES)}.")
    if cfg.runtime not in RUNTIMES:
        raise AutoError(f"Runtime {cfg.runtime!r} is not searched yet: use {', '.join(RUNTIMES)}.")
    if not 0 <= cfg.max_drop <= 100:
        raise AutoError(f"--max-drop {cfg.max_drop:g}: give the points of top-1 the model may lose, 0 to 100.")
    if cfg.budget_minutes <= 0:
        raise AutoError("The time budget must be above 0 minutes.")
    if any(not 0 < r <= 0.9 for r in cfg.ratios):
        raise AutoError("Channel ratios must be above 0 and at most 0.9.")


def candidates(base: Recipe, cfg: AutoConfig) -> list[Candidate]:
    """The recipes searched, from the least to the most compressed."""
    int8_mode = RUNTIMES[cfg.runtime]
    float_mode = MODES[int8_mode].float_twin
    out = []
    for ratio in (0.0,) + tuple(cfg.ratios):
        prune = StructuredConfig(ratio=ratio) if ratio else None
        forms = [(float_mode, 0), (int8_mode, 0), (int8_mode, 2)]
        for mode, keep in forms:
            if mode is None and prune is None:
                continue                      # the original itself is the baseline, not a candidate
            q = QuantConfig(mode=mode, keep_worst=keep) if mode else None
            r = replace(base, prune=prune, quantize=q, recover=None, name="")
            words = ([f"prune {ratio:g} + BN"] if prune else []) + \
                    ([mode + (f", {keep} worst layers in float" if keep else "")] if mode else ["float"])
            out.append(Candidate(r, ", ".join(words)))
    return out


def _objective(after: dict, objective: str) -> Optional[float]:
    """Lower is better: the time per image relative to the original (from the run's own
    interleaved speed-up), or the model file's bytes."""
    if objective == "size":
        return float(after["size_bytes"])
    total = speed_entry(after, "total")
    return 1.0 / total["ratio"] if total and total.get("ratio") else None


def _drop(before: dict, after: dict) -> tuple[float, float]:
    a, b = after.get("accuracy"), before.get("accuracy")
    if not a or not b:
        raise AutoError("The autopilot needs accuracy: give labelled images (--data).")
    return b["top1"] - a["top1"], (a["ci95"][1] - a["ci95"][0]) / 2


def _history_index(history) -> dict[str, dict]:
    """Finished runs of the history by their recipe (normalised JSON), newest first wins:
    what lets a search resume, and a second visit open without measuring."""
    out: dict[str, dict] = {}
    if history is None:
        return out
    for r in history.runs(status="done"):
        if not r.after:
            continue
        try:
            k = json.dumps(Recipe.from_dict(r.recipe, check=False).to_dict(), sort_keys=True)
        except Exception:  # noqa: BLE001 - a row from another version: not a match
            continue
        out.setdefault(k, {"run_id": r.id, "recipe": r.recipe, "before": r.before, "after": r.after})
    return out


def _find(index: dict[str, dict], recipe: Recipe) -> Optional[dict]:
    """A finished run of exactly this recipe in the history (resume)."""
    return index.get(json.dumps(recipe.to_dict(), sort_keys=True))


def _point(res) -> dict:
    return {"run_id": res.run_id, "recipe": res.recipe.to_dict(), "before": res.before, "after": res.after}


def frontier(points: list[dict], objective: str) -> list[dict]:
    """The points no other point beats on both top-1 (higher) and the objective (lower)."""
    def key(p):
        return p["after"]["accuracy"]["top1"], _objective(p["after"], objective)
    out = []
    for p in points:
        acc, obj = key(p)
        if obj is None:
            continue
        beaten = any((a2 >= acc and o2 <= obj) and (a2 > acc or o2 < obj)
                     for a2, o2 in (key(q) for q in points if q is not p) if o2 is not None)
        if not beaten:
            out.append(p)
    return sorted(out, key=lambda p: -p["after"]["accuracy"]["top1"])


def _settings_file(history):
    return Path(history.path).with_name("autopilot-settings.json")


def _settings_key(base: Recipe) -> str:
    d = base.to_dict()
    return json.dumps({"model": d.get("model"), "data": d.get("data")}, sort_keys=True, default=str)


def remember(history, base: Recipe, cfg: AutoConfig) -> None:
    """Keep ``cfg`` as the last search settings for ``base``'s model and images, beside the
    history, so a later visit opens with the same settings, hence the same ladder."""
    if history is None:
        return
    path = _settings_file(history)
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    table[_settings_key(base)] = asdict(cfg)
    try:
        path.write_text(json.dumps(table))
    except OSError:
        pass                                   # a read-only folder: only the convenience is lost


def remembered(history, base: Recipe) -> Optional[AutoConfig]:
    """The last search settings used for ``base``'s model and images (None: none yet)."""
    if history is None:
        return None
    try:
        d = json.loads(_settings_file(history).read_text()).get(_settings_key(base))
        return AutoConfig(**{**d, "ratios": tuple(d["ratios"])}) if d else None
    except (OSError, ValueError, TypeError, KeyError):
        return None


def search(base: Recipe, cfg: AutoConfig, history=None, on_progress: Optional[OnProgress] = None,
           cancel: Optional[Cancel] = None, loaded=None, measure: bool = True) -> AutoResult:
    """Run the search for ``base``'s model on ``base``'s images (see the module docstring).
    ``loaded``: the original model when the caller holds it already. ``measure=False``
    measures nothing: the result is built from the runs already in the history (a page
    opens with the ladder of an earlier search at once)."""
    validate(cfg)
    if not base.data.path:
        raise AutoError("The autopilot needs labelled evaluation images (--data) to keep the accuracy "
                        "budget.")
    t0 = time.perf_counter()
    deadline = t0 + 60 * cfg.budget_minutes
    cands = candidates(base, cfg)
    index = _history_index(history)
    if measure:
        remember(history, base, cfg)
        loaded = loaded if loaded is not None else pipeline.load(base)
    screen_data = replace(base.data, limit=min(cfg.screen_images, base.data.limit or cfg.screen_images))
    screen_measure = MeasureRef(device=base.measure.device, runs=5, warmup=2, threads=base.measure.threads)
    durations: list[float] = []

    def run(recipe: Recipe, what: str, i: int, n: int) -> Optional[dict]:
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"autopilot cancelled before {what}")
        found = _find(index, recipe)
        if found is not None or not measure:
            return found
        left = deadline - time.perf_counter()
        typical = (sum(durations) / len(durations)) if durations else 0.0
        if left <= 0 or typical > left:
            return None
        eta = typical * (n - i)
        emit(on_progress, "auto", i / max(n, 1), f"{what} {i + 1}/{n}: {recipe.describe()}"
             + (f" (about {eta / 60:.0f} min left)" if durations else ""))
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"autopilot cancelled before {what}")
        s = time.perf_counter()
        res = pipeline.run(recipe, history=history, source="auto", loaded=loaded, cancel=cancel)
        durations.append(time.perf_counter() - s)
        point = _point(res)
        index[json.dumps(recipe.to_dict(), sort_keys=True)] = point
        return point

    def screen(c: Candidate, i: int, n: int) -> bool:
        """Run ``c`` on the screening subset; True when it stays in the search."""
        r = replace(c.recipe, data=screen_data, measure=screen_measure, export=replace(c.recipe.export, formats=()))
        try:
            p = run(r, "screening", i, n)
        except CompressError as e:
            c.stage, c.why = "skipped", f"could not run: {e}"
            return False
        if p is None:
            c.stage, c.why = "skipped", ("the time budget was spent before screening it" if measure
                                         else "not measured yet")
            return False
        drop, half = _drop(p["before"], p["after"])
        c.stage = "screened"
        c.screen = {"run_id": p["run_id"], "drop": round(drop, 2), "half_width": round(half, 2),
                    "objective": _objective(p["after"], cfg.objective), "n": p["after"]["accuracy"]["n"]}
        if drop > cfg.max_drop + half:
            c.why = (f"lost {drop:.2f} points on {c.screen['n']} screening images"
                     + (" even after distillation" if c.recipe.recover is not None else "")
                     + f", more than the budget {cfg.max_drop:g} plus the interval's half-width {half:.2f}")
            return False
        return True

    # 1. screening on a small subset, from the least pruned up; once every form of a ratio
    # fails, the larger ratios are skipped (pruning more loses more), so the time goes to
    # measuring the survivors on all the images
    def ratio(c: Candidate) -> float:
        return c.recipe.prune.ratio if c.recipe.prune is not None else 0.0
    lost = None                                 # the smallest ratio that failed in every form
    for i, c in enumerate(cands):
        if lost is not None and ratio(c) > lost:
            c.stage, c.why = "skipped", f"prune {lost:g} already lost more than the budget in every form"
            continue
        screen(c, i, len(cands))
        group = [d for d in cands if ratio(d) == ratio(c)]
        if c is group[-1] and ratio(c) > 0 and all(d.screen is not None and d.why for d in group):
            lost = ratio(c)
    # 1b. short distillations of the prunes that failed, least pruned first (with training
    # photos), in the runtime's INT8 form; a ratio that fails even after distillation ends
    # this step, as a larger one would fail too
    if base.data.train_path and cfg.distill_epochs > 0:
        rc = RecoverConfig(method="distill", epochs=cfg.distill_epochs)   # the rest: the recovery recipe
        failed = sorted({c.recipe.prune.ratio for c in cands if c.screen and c.why and c.recipe.prune is not None})
        int8 = RUNTIMES[cfg.runtime]
        for ratio in failed:
            src = next(c for c in cands if c.recipe.prune is not None and c.recipe.prune.ratio == ratio
                       and c.recipe.quantize is not None and c.recipe.quantize.mode == int8
                       and not c.recipe.quantize.keep_worst)
            kd = Candidate(replace(src.recipe, recover=rc), src.label + f", distilled {cfg.distill_epochs} epoch(s)")
            cands.append(kd)
            if not screen(kd, len(cands) - 1, len(cands)):
                break
    # 2. full measurement of the survivors, the most promising (best screened objective) first
    alive = [c for c in cands if c.stage == "screened" and not c.why]
    alive.sort(key=lambda c: (c.screen["objective"] is None, c.screen["objective"] or 0.0))
    for i, c in enumerate(alive):
        try:
            p = run(c.recipe, "measuring", i, len(alive))
        except CompressError as e:
            c.why = f"could not run: {e}"
            continue
        if p is None:
            c.why = ("the time budget was spent before measuring it on all the images" if measure
                     else "not measured on all the images yet")
            continue
        c.stage, c.run = "measured", p
    measured = [c for c in cands if c.stage == "measured"]
    points = [c.run for c in measured]
    front = frontier(points, cfg.objective)
    ok = [c for c in measured if _drop(c.run["before"], c.run["after"])[0] <= cfg.max_drop
          and _objective(c.run["after"], cfg.objective) is not None]
    chosen = min(ok, key=lambda c: _objective(c.run["after"], cfg.objective)) if ok else None
    word = "faster" if cfg.objective == "latency" else "smaller"
    for c in measured:
        drop = _drop(c.run["before"], c.run["after"])[0]
        if c is chosen:
            c.why = "chosen"
        elif drop > cfg.max_drop:
            c.why = f"lost {drop:.2f} points on all {c.run['after']['accuracy']['n']} images, over the budget"
        elif _objective(c.run["after"], cfg.objective) is None:
            c.why = "its speed was not stated (the machine was busy)"
        else:
            c.why = f"within the budget, but run #{chosen.run['run_id']} is {word}"
    emit(on_progress, "auto", 1.0, "done")
    return AutoResult(cfg, cands, front, chosen.run if chosen else None, time.perf_counter() - t0)
