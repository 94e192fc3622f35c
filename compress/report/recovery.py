"""What the Distill page says and decides: whether the current model can be recovered,
the label-free rule, the time a recovery will take, live progress, and the result."""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Optional

from compress import distill as K
from compress import recovery as RV
from compress.measure import Profile
from compress.progress import ProgressEvent
from compress.train import measure_step_seconds


def duration(s: float) -> str:
    """Seconds as a person says them: "45 s", "12.5 min", "2.1 h"."""
    return f"{s:.0f} s" if s < 90 else (f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h")


# ---------------------------------------------------------------- can it be recovered?


def through_float_origin(point) -> bool:
    """Whether a point is a quantized pruned model that is recovered through the float model
    it was made from (kept in the history), then quantized again."""
    r = point.recipe
    return point.quantized and r.prune is not None and r.recover is None and r.unstructured is None


def float_origin_note(quantized, origin) -> str:
    return (f"The current compressed model ({quantized.label}) is quantized, and training needs the "
            f"float model. This page trains the float pruned model it was made from (run #{origin.run_id}); "
            "afterwards one click quantizes the recovered model again with the same settings.")


def no_float_origin(why: str) -> str:
    return f"Distillation recovers a pruned float model. {why}"


def recoverable(point) -> bool:
    """A pruned float model, not yet recovered and without zeroed weights."""
    return point is not None and point.recipe.prune is not None and not point.quantized \
        and point.recipe.unstructured is None and point.recipe.recover is None


def not_recoverable(point) -> Optional[tuple[str, str]]:
    """("info" or "warning", why) when ``point`` cannot be recovered; None when it can."""
    if point is None or point.recipe.prune is None or point.quantized:
        return "info", ("Distillation recovers a **pruned** model. Prune one on the Prune page first"
                        + (" (the current compressed model is quantized, and the float model it came from is "
                           "not available)." if point is not None and point.quantized else "."))
    if point.recipe.unstructured is not None:
        return "warning", ("The current compressed model has zeroed weights (unstructured pruning). "
                           "Training would fill them in again: recover after channel pruning, then "
                           "zero weights.")
    if point.recipe.recover is not None:
        return "info", (f"The current compressed model ({point.label}) is already recovered"
                        + (f" (run #{point.run_id})" if point.run_id is not None else "") + ". A recipe holds one "
                        "recovery: to train longer, prune again and choose more epochs. Quantize or export it next.")
    return None


# ---------------------------------------------------------------- settings


def kd_sentence(temperature: float, alpha: float) -> str:
    return (f"In plain words: with T = {temperature:g} the student learns not only the "
            "teacher's top class but how close the others came (a cat that looks a bit "
            f"like a dog). {100 * alpha:.0f}% of the lesson comes from the teacher, "
            f"{100 * (1 - alpha):.0f}% from the labels.")


def label_rule(method: str, alpha: float, has_labels: bool) -> tuple[float, str, str]:
    """(α to train with, error, note) for training photos with or without labels: a method
    that always needs labels cannot run without them (error); one that learns from a
    teacher runs label-free (α = 1) on them (note)."""
    m = K.RECOVERY_METHODS[method]
    if has_labels:
        return alpha, "", ""
    if m.always_needs_labels:
        return alpha, (f"These photos have no labels: {m.noun} needs labels. Choose knowledge "
                       "distillation; it runs label-free (α = 1) on them."), ""
    if alpha < 1.0:
        return 1.0, "", "These photos have no labels: training runs label-free (α = 1)."
    return alpha, "", ""


# ---------------------------------------------------------------- the recipe chosen, and how long it will take


def plan_sentence(plan: RV.RecoveryPlan) -> str:
    """What the one recovery recipe chose for these photos, and why."""
    return f"Chosen for these {plan.n_photos:,} photos: " + "; ".join(plan.reasons) + "."


def step_seconds(student, input_size, batch: int, device, teacher=None) -> float:
    """Seconds of one training step of ``student`` (with ``teacher``'s forward) at ``batch``."""
    return measure_step_seconds(student, input_size, batch, device, teacher=teacher)


def estimate_sentence(cfg: K.RecoverConfig, n_train: int, step_s: float, read_s: float, device) -> str:
    """How long ``cfg`` will train on ``n_train`` photos, and what the estimate rests on."""
    est = RV.estimate_seconds(cfg, n_train, step_s, read_s)
    where = "on the GPU" if device.type == "cuda" else "on this machine's CPU"
    return (f"**Estimated time {where}: about {duration(est.seconds)}** for {cfg.epochs} "
            f"epoch(s) of {est.steps_per_epoch} steps over {n_train:,} photos. Estimate: one training "
            f"step at batch {cfg.batch_size} took {est.step_seconds:.2f} s here just now, plus "
            f"{est.read_seconds:.2f} s to read its photos. Validation after each epoch and measuring "
            "the three models afterwards add to it.")


# ---------------------------------------------------------------- while it trains


def training_events(on_progress):
    """A progress callback for the pipeline's recovery run that hands the page's live view
    "train"/"epoch" events for the curves and "measure" events for everything else (the
    pipeline names stages "recover: train", "original: latency", …)."""
    def relay(ev: ProgressEvent):
        head, _, tail = ev.stage.partition(": ")
        if head == "recover" and tail in ("train", "epoch"):
            on_progress(ProgressEvent(tail, ev.fraction, ev.message, ev.metrics))
        else:
            on_progress(ProgressEvent("measure", ev.fraction, f"{head}: {ev.message}", ev.metrics))
    return relay


def training_progress(events: list, started: float) -> tuple[float, str, str]:
    """(fraction done, the progress bar's text, the caption) of a running recovery."""
    last = events[-1] if events else None
    train = [e for e in events if e.stage == "train" and "eta_s" in e.metrics]
    if last is None:
        fraction, text = 0.0, "starting…"
    elif last.stage == "measure":
        fraction, text = last.fraction, last.message
    else:
        m = train[-1].metrics if train else {}
        extra = f" · {m['samples_per_s']:.0f} photos/s · about {duration(m['eta_s'])} left" if m else ""
        fraction, text = last.fraction, f"{last.message}{extra}"
    return fraction, text, (f"Running for {duration(time.time() - started)}. You can leave this page or reload "
                            "the tab; the training goes on and its result appears here.")


# ---------------------------------------------------------------- the result


def recovery_step(result) -> dict:
    """The recovery's step record ({step, config, seconds, report}) in a run's Result."""
    return next(s for s in result.steps if s["step"] == result.recipe.recover.method)


def recovered_sentence(result) -> str:
    step = recovery_step(result)
    return (f"Recovered in {duration(step['seconds'])} on {step['report']['train_images']:,} training "
            f"photos and recorded as run #{result.run_id}. It is the current compressed model.")


def recovery_profiles(result) -> dict[str, Profile]:
    """The three models a recovery run measured on the same images, by column name."""
    return {"original": Profile.from_json(result.before),
            "pruned, before recovery": Profile.from_json(result.start_profile),
            "recovered": Profile.from_json(result.after)}


def won_back_sentence(profiles: dict[str, Profile], cfg: K.RecoverConfig) -> str:
    """How many points pruning cost and how many the recovery won back; "" without accuracy."""
    orig, before, after = (p.accuracy for p in profiles.values())
    if not (orig and before and after):
        return ""
    return (f"Pruning cost **{orig.top1 - before.top1:.1f} points** of top-1; {cfg.epochs} epoch(s) of "
            f"{cfg.method_entry.noun} won back **{after.top1 - before.top1:.1f}**: {after.top1:.2f}% against "
            f"the original's {orig.top1:.2f}% (n = {after.n} images; 95% intervals in the table).")


EPOCH_COLUMNS = {"epoch": "epoch", "train_loss": "training loss", "train_acc": "train top-1 %",
                 "val_acc": "validation top-1 %", "seconds": "seconds", "samples_per_s": "photos/s", "lr": "last lr"}


def epoch_table(history: list[dict]) -> list[dict]:
    """One row per epoch of the training history, rounded, "–" where not measured."""
    def cell(v):
        if v is None or v != v:
            return "–"
        return round(v, 3) if isinstance(v, float) else v
    return [{EPOCH_COLUMNS.get(k, k): cell(v) for k, v in row.items()} for row in history]


def settings_sentence(cfg: K.RecoverConfig) -> str:
    return "Settings: " + ", ".join(f"{k} {v}" for k, v in asdict(cfg).items())


def requantized_sentence(result) -> str:
    acc = result.after.get("accuracy") or {}
    return (f"Quantized again and recorded as run #{result.run_id}: {result.point.label}"
            + (f", top-1 {acc['top1']:.2f}% (n = {acc['n']})" if acc else "")
            + ". It is the current compressed model; Compare shows it next to the others.")
