"""What the Explore page says about the autopilot's ladder: each rung's name, its figures
against the original, whether it is over the accuracy budget, and every candidate."""
from __future__ import annotations

from typing import Optional

from compress.recipe import Recipe
from compress.report.speed import speed_phrase


def over_budget(point: dict, max_drop: float) -> bool:
    """Whether a ladder point (before/after Profile JSONs) loses more top-1 than allowed."""
    return point["before"]["accuracy"]["top1"] - point["after"]["accuracy"]["top1"] > max_drop


def rung_names(ladder: list[dict], max_drop: float) -> list[str]:
    """The slider's names: "original", then "#run: steps" of each rung, most accurate first."""
    return ["original"] + [f"#{p['run_id']}: " + Recipe.from_dict(p["recipe"], check=False).describe_steps()
                           + (" (over the budget)" if over_budget(p, max_drop) else "") for p in ladder]


def rung_metrics(before: dict, after: dict, is_original: bool) -> list[dict]:
    """Top-1, file size and latency of a rung (``after``) against the original (``before``)
    as metrics: label, value, delta (None on the original itself), help, delta_color."""
    acc, acc0, lat = after["accuracy"], before["accuracy"], after["latency_ms"]
    return [
        dict(label="Top-1", value=f"{acc['top1']:.2f}%",
             delta=None if is_original else f"{acc['top1'] - acc0['top1']:+.2f} points",
             help=f"n = {acc['n']} images, 95% interval {acc['ci95'][0]:.1f}–{acc['ci95'][1]:.1f}%",
             delta_color="normal"),
        dict(label="File size", value=f"{after['size_bytes'] / 1e6:.2f} MB",
             delta=None if is_original else f"×{before['size_bytes'] / after['size_bytes']:.1f} smaller",
             help=None, delta_color="off"),
        dict(label="Latency (median)", value=f"{lat['median']:.2f} ms", delta=f"p90 {lat['p90']:.2f} ms",
             help=f"batch {lat['batch']}, {lat['device']}, {lat['threads']} threads, {lat['runs']} runs",
             delta_color="off"),
    ]


def rung_notes(before: dict, after: dict, point: Optional[dict], max_drop: float) -> dict:
    """The sentences under a rung's figures: where it runs, the over-budget warning and how
    it compares with the original (the last two "" for the original itself, ``point`` None)."""
    acc = after["accuracy"]
    out = {"runs_in": f"Runs in {after.get('runtime') or 'PyTorch'} on {after['latency_ms']['device']}.",
           "warning": "", "against": ""}
    if point is None:
        return out
    if over_budget(point, max_drop):
        points = "point" if max_drop == 1 else "points"
        out["warning"] = (f"This model loses more than the {max_drop:g} {points} you allowed: it is on the ladder "
                          "because nothing measured is smaller or faster at its accuracy.")
    out["against"] = (f"Against the original: {speed_phrase(before, after) or 'speed not stated'}. "
                      f"Accuracy on {acc['n']} images (95% interval {acc['ci95'][0]:.1f}–"
                      f"{acc['ci95'][1]:.1f}%).")
    return out


def candidate_rows(candidates: list) -> list[dict]:
    """Every candidate the autopilot considered, its run and why it lost (or won)."""
    return [{"candidate": c.label, "run": (c.run or {}).get("run_id") or (c.screen or {}).get("run_id"),
             "screening drop (points)": (c.screen or {}).get("drop"), "outcome": c.why} for c in candidates]


def history_note(candidates: list, demo: bool = False) -> str:
    """What a second visit shows: the ladder of an earlier search (or quick demo), read
    from the history."""
    done = sum(c.stage == "measured" for c in candidates)
    if demo:
        return (f"From the history: the quick demo's {done} models, measured in an earlier visit. Press *Quick "
                "demo* to measure them again now.")
    return (f"From the history: {done} model(s) measured by an earlier search with these settings. Press "
            "*Find the models* to measure the rest.")


def choice_caption(selected_is_chosen: bool, demo: bool, max_drop: float) -> str:
    """The line under the ladder's slider: only while the selected rung is the choice."""
    if not selected_is_chosen:
        return ""
    return (f"Selected: the demo's choice within {max_drop:g} points" if demo else
            "Selected: the autopilot's choice")
