"""What the Compare page says about recorded runs: the table of every run, the ones that
did not finish, the accuracy/speed series, two runs side by side and the photos that
flipped."""
from __future__ import annotations

import time
from pathlib import Path

from compress.measure import Profile
from compress.report.profiles import compare_profiles
from compress.report.speed import same_run_faster, speed_ratio, timed_together, timing_note


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def split_runs(runs: list, model: dict | None = None) -> tuple[list, list]:
    """(finished runs with both profiles, runs that did not finish) among ``runs``; only
    those of ``model`` (a ModelRef as a dict) unless it is None."""
    mine = [r for r in runs if model is None or r.recipe.get("model") == model]
    return ([r for r in mine if r.status == "done" and r.after and r.before],
            [r for r in mine if r.status != "done"])


def runs_table(runs: list) -> list[dict]:
    """One row per finished run: when, runtime, size, latency and each run's speed-up and
    accuracy change against its own original (measured in the same run)."""
    rows = []
    for r in runs:
        a = r.after
        acc, acc0 = a.get("accuracy"), r.before.get("accuracy")
        rows.append({
            "run": r.id, "name": r.name, "from": r.source, "when": _when(r.started),
            "runtime": a.get("runtime", ""), "size (MB)": round(a["size_bytes"] / 1e6, 3),
            "× smaller": round(r.before["size_bytes"] / a["size_bytes"], 2),
            "latency median (ms)": round(a["latency_ms"]["median"], 3) if a.get("latency_ms") else None,
            "× faster (same run)": same_run_faster(r.before, a),
            "speed timing": timing_note(r.before, a),
            "top-1 %": acc["top1"] if acc else None,
            "95% CI": f"{acc['ci95'][0]:.1f}–{acc['ci95'][1]:.1f}" if acc else "",
            "n": acc["n"] if acc else None,
            "Δ top-1 (points)": round(acc["top1"] - acc0["top1"], 2) if acc and acc0 else None,
        })
    return rows


def unfinished_table(runs: list) -> list[dict]:
    return [{"run": r.id, "name": r.name, "status": r.status, "from": r.source, "when": _when(r.started),
             "error": r.error or ("its process ended before it finished" if r.status == "interrupted" else "")}
            for r in runs]


def pareto_series(runs: list) -> dict | None:
    """The accuracy-against-speed chart's series (keyword arguments of ``charts.pareto``)
    for the runs that measured accuracy and speed, or None when none did. Each run's time
    is relative to its own original, timed in the same run: the only speed figure that
    compares across runs measured at different times."""
    measured = [r for r in runs if r.after.get("accuracy") and same_run_faster(r.before, r.after)]
    if not measured:
        return None
    newest = measured[0]
    return dict(
        names=["original"] + [f"#{r.id}" + (" ⚠" if speed_ratio(r.before, r.after)[1] else "") for r in measured],
        latency_ms=[1.0] + [1 / same_run_faster(r.before, r.after) for r in measured],
        top1=[newest.before["accuracy"]["top1"]] + [r.after["accuracy"]["top1"] for r in measured],
        size_bytes=[newest.before["size_bytes"]] + [r.after["size_bytes"] for r in measured],
        hover=[f"original (accuracy as measured in run #{newest.id})"] + [r.name for r in measured],
        x_title="time per image ÷ the original's, measured in the same run", x_unit="× the original's time")


def side_by_side(a, b) -> tuple[list[dict], bool]:
    """(rows comparing run ``a``'s compressed model with run ``b``'s, whether their
    latencies were timed in one loop). Each run's own speed-up against its original is a row."""
    together = a.id == b.id or timed_together(a.after, b.after)
    rows = compare_profiles(Profile.from_json(a.after), Profile.from_json(b.after), same_run=together,
                            baseline=False)
    names = {"before": f"A: #{a.id}", "after": f"B: #{b.id}", "change": "B / A"}
    return [{names.get(k, k): v for k, v in row.items()} for row in rows], together


def flipped_photos(changed: list, most: int = 12) -> list[dict]:
    """The photos whose answer flipped, by kind: title, how many, and the first ``most``
    that are still on disk, each with its caption."""
    out = []
    for kind, title in (("broken", "Was right, now wrong"), ("fixed", "Was wrong, now right")):
        shown = [c for c in changed if c["change"] == kind and Path(c["file"]).is_file()][:most]
        if not shown:
            continue
        out.append(dict(title=f"**{title}** ({sum(c['change'] == kind for c in changed)} photos"
                        + (f", the first {most}" if len(shown) == most else "") + ")",
                        photos=[(c["file"], f"{c['label']}: {c['before']['class']} {100 * c['before']['prob']:.0f}% → "
                                            f"{c['after']['class']} {100 * c['after']['prob']:.0f}%") for c in shown]))
    return out

