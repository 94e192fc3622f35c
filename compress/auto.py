"""Autopilot: search recipes for the fastest (or smallest) model that loses at most
``max_drop`` points of top-1, measuring every candidate through the pipeline.

The search, cheapest first:

1. **Candidates**: channel ratios (BatchNorm re-estimated, no training) × the target
   runtime's float and INT8 forms (``ort``: ONNX Runtime FP32 / INT8; ``torch``: eager FP32 /
   static INT8), plus INT8 with the 2 worst layers kept in float.
2. **Screening**: each candidate is run on a small seeded subset of the evaluation images
   (``screen_images``) with a short timing loop. A candidate whose drop exceeds the budget
   by more than its 95% interval's half-width is dropped here. Once every form of a ratio
   fails, the larger ratios are not screened (pruning more loses more).
3. **Full measurement** of the survivors, most promising (best screened objective) first, on
   the full evaluation images with the full timing loop. This comes before any training, so
   a longer budget never loses a model a shorter one found.
4. **Recovery where it pays** (with training photos): the ratios that did not keep the
   budget untrained are trained back by distillation from the original (the recovery
   recipe, compress/recovery.py, with a minutes budget), as a binary search: the middle
   ratio first; if it then keeps the budget the more pruned ones are tried, if not the less
   pruned. Each training gets an equal share of the time left over the trainings the
   search may still need (a 2-hour budget gives the first one about half an hour), so a
   longer budget trains longer. Every runtime form of a trained model is screened again and
   measured in full from that one trained model (nothing is trained twice).

Every run, screening and training included, is a run in the history (source ``auto``). A
run already in the history with the same recipe is reused, so a cancelled search resumes
where it stopped; a training is reused when its budget was at least 0.8 of the share it
would get now. The chosen model is the best objective among the fully measured candidates
whose measured drop is within ``max_drop``; the frontier is the set of fully measured
points that no other point beats on both accuracy and the objective.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

from compress import pipeline
from compress.pipeline import Point, point_of_run
from compress.distill import RecoverConfig
from compress.errors import CompressError
from compress.progress import Cancel, Cancelled, OnProgress, emit
from compress.prune import StructuredConfig
from compress.quantize import MODES, QuantConfig
from compress.recipe import MeasureRef, Recipe
from compress.report import speed_entry

OBJECTIVES = ("latency", "size")
MIN_TRAIN_MINUTES = 1.0                       # a training back is not started with less than this
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
    distill_epochs: Optional[int] = None      # recovery of the prunes that failed (with training photos):
                                              # None: the time left, shared out; 0: none; N: N epochs each
    demo: bool = False                        # the quick demo's ladder (compress/demo.py), not a search


@dataclass
class Candidate:
    recipe: Recipe
    label: str
    stage: str = "waiting"                    # waiting, screened, measured, skipped
    screen: Optional[dict] = None             # {"run_id", "drop", "half_width", "objective"}
    run: Optional[dict] = None                # the full run: {"run_id", "recipe", "before", "after"}
    why: str = ""                             # why it lost, or "chosen"
    trained: Optional[int] = None             # the run that trained it back (recovered candidates)

    def to_json(self) -> dict:
        return {"label": self.label, "recipe": self.recipe.to_dict(), "stage": self.stage,
                "screen": self.screen, "run_id": (self.run or {}).get("run_id"), "why": self.why,
                "trained_by_run": self.trained}


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


def _key(recipe: Recipe) -> str:
    return json.dumps(recipe.to_dict(), sort_keys=True)


def _find(index: dict[str, dict], recipe: Recipe) -> Optional[dict]:
    """A finished run of exactly this recipe in the history (resume)."""
    return index.get(_key(recipe))


def _trained(index: dict[str, dict], recipe: Recipe, epochs: Optional[int], minutes: Optional[float]):
    """A finished training-back run of ``recipe`` (no quantize; any recovery) in the
    history: with ``epochs`` set, one of exactly that many epochs; else the longest minutes
    budget, and only when it is at least ``minutes`` × 0.8 (a longer budget trains longer
    rather than reuse a shorter training). ``minutes`` None: any."""
    best = None
    for p in index.values():
        try:
            r = Recipe.from_dict(p["recipe"], check=False)
        except Exception:  # noqa: BLE001 - a row from another version: not a match
            continue
        rec = r.recover
        if rec is None or replace(r, recover=None, name="") != replace(recipe, recover=None, name=""):
            continue
        if epochs:
            if rec.minutes is None and rec.epochs == epochs:
                return p
            continue
        if rec.minutes is None:
            continue
        if best is None or rec.minutes > best[0]:
            best = (rec.minutes, p)
    if best is None or (minutes is not None and best[0] < 0.8 * minutes):
        return None
    return best[1]


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
    durations: dict[str, list[float]] = {"screen": [], "full": [], "train": []}
    points: dict[str, Point] = {}               # recipe key -> the model a run made, to start later runs from

    def typical(kind: str) -> float:
        d = durations[kind]
        return sum(d) / len(d) if d else 0.0

    def run(recipe: Recipe, what: str, i: int, n: int, start: Optional[Point] = None,
            kind: str = "screen") -> Optional[dict]:
        """A finished run of ``recipe``: from the history, or run now when the time left
        holds one (a training run bounds its own time). None: no time, or not measuring."""
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"autopilot cancelled before {what}")
        found = _find(index, recipe)
        if found is not None or not measure:
            return found
        left = deadline - time.perf_counter()
        if left <= 0 or (kind != "train" and typical(kind) > left):
            return None
        eta = typical(kind) * (n - i)
        emit(on_progress, "auto", i / max(n, 1), f"{what} {i + 1}/{n}: {recipe.describe()}"
             + (f" (about {eta / 60:.0f} min left)" if durations[kind] and kind != "train" else ""))
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"autopilot cancelled before {what}")
        s = time.perf_counter()
        res = pipeline.run(recipe, history=history, source="auto", loaded=loaded, cancel=cancel, start=start)
        durations[kind].append(time.perf_counter() - s)
        point = _point(res)
        points[_key(recipe)] = res.point
        index[_key(recipe)] = point
        return point

    def screen(c: Candidate, i: int, n: int, start: Optional[Point] = None) -> bool:
        """Run ``c`` on the screening subset; True when it stays in the search."""
        r = replace(c.recipe, data=screen_data, measure=screen_measure, export=replace(c.recipe.export, formats=()))
        try:
            p = run(r, "screening", i, n, start=start)
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
                     + (" even after recovery" if c.recipe.recover is not None else "")
                     + f", more than the budget {cfg.max_drop:g} plus the interval's half-width {half:.2f}")
            return False
        return True

    def recover_ratio(r: float, trainings_left: int) -> Optional[bool]:
        """Train prune ``r`` back (distillation from the original, the recovery recipe's
        settings) with its share of the time left, then screen its runtime forms from the
        trained model and measure the ones that keep the budget in full. True: a form keeps
        the budget; False: none does; None: no time, or it could not train."""
        forms = [c for c in cands if c.recipe.prune is not None and c.recipe.prune.ratio == r
                 and c.recipe.recover is None]
        train_recipe = replace(forms[0].recipe, quantize=None, data=screen_data, measure=screen_measure,
                               export=replace(forms[0].recipe.export, formats=()))
        left = deadline - time.perf_counter()
        reserve = 3 * typical("screen") + 3 * typical("full")       # screening and measuring what it makes
        minutes = round(max(left - reserve, 0.0) / 60 / trainings_left, 1)
        done = _trained(index, train_recipe, cfg.distill_epochs, None if not measure else minutes)
        if done is None:
            if not measure:
                return None
            rc = (RecoverConfig(method="distill", epochs=cfg.distill_epochs) if cfg.distill_epochs
                  else RecoverConfig(method="distill", minutes=minutes))
            if rc.minutes is not None and rc.minutes < MIN_TRAIN_MINUTES:
                for c in forms:
                    c.why += f"; {left / 60:.1f} min were left: too little to train prune {r:g} back"
                return None
            try:
                done = run(replace(train_recipe, recover=rc), "training back", 0, 1, kind="train")
            except CompressError as e:
                for c in forms:
                    c.why += f"; training it back could not run: {e}"
                return None
            if done is None:
                return None
        start = points.get(_key(Recipe.from_dict(done["recipe"], check=False))) if measure else None
        if start is None and measure:
            try:
                start = point_of_run(history.get(done["run_id"]))
            except (CompressError, AttributeError) as e:
                for c in forms:
                    c.why += f"; the trained model of run #{done['run_id']} cannot be read back: {e}"
                return None
        rec = Recipe.from_dict(done["recipe"], check=False).recover
        words = "recovered " + (f"{rec.minutes:g} min" if rec.minutes is not None else f"{rec.epochs} ep")
        made = []
        for c in forms:
            kd = Candidate(replace(c.recipe, recover=rec), c.label.replace("+ BN", "+ BN, " + words),
                           trained=done["run_id"])
            cands.append(kd)
            made.append(kd)
            screen(kd, len(cands) - 1, len(cands), start=start)
        measure_fully([c for c in made if c.stage == "screened" and not c.why], start=start)
        return any(c.stage == "measured" and _drop(c.run["before"], c.run["after"])[0] <= cfg.max_drop
                   for c in made)

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
    # 2. full measurement of the survivors, the most promising (best screened objective)
    # first; before any training, so a longer budget never loses what a shorter one found
    def measure_fully(group: list[Candidate], start=None) -> None:
        group = sorted(group, key=lambda c: (c.screen["objective"] is None, c.screen["objective"] or 0.0))
        for i, c in enumerate(group):
            try:
                p = run(c.recipe, "measuring", i, len(group), start=start, kind="full")
            except CompressError as e:
                c.why = f"could not run: {e}"
                continue
            if p is None:
                c.why = ("the time budget was spent before measuring it on all the images" if measure
                         else "not measured on all the images yet")
                continue
            c.stage, c.run = "measured", p
    measure_fully([c for c in cands if c.stage == "screened" and not c.why])
    # 3. recovery where it pays (with training photos): the prunes that failed screening
    # are trained back, the middle one first; if it then keeps the budget the more pruned
    # ones follow, if not the less pruned (a binary search: drop grows with the ratio).
    # Each training gets an equal share of the time left over the trainings the search may
    # still need, so a longer budget trains longer; each is screened again in the runtime's
    # float and INT8 forms and the forms that keep the budget are measured in full.
    if base.data.train_path and cfg.distill_epochs != 0:
        # the ratios none of whose forms kept the budget untrained (failed screening or the
        # full measurement, or skipped after a smaller ratio failed)
        failed = sorted({ratio(c) for c in cands if c.recipe.prune is not None}
                        - {ratio(c) for c in cands if c.recipe.prune is not None and c.stage == "measured"
                           and _drop(c.run["before"], c.run["after"])[0] <= cfg.max_drop})
        lo, hi = 0, len(failed) - 1
        while lo <= hi:
            mid = (lo + hi + 1) // 2
            ok = recover_ratio(failed[mid], trainings_left=(hi - lo + 1).bit_length())
            if ok is None:
                break                                    # out of time, or it cannot train
            lo, hi = (mid + 1, hi) if ok else (lo, mid - 1)
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
