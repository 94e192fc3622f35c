"""Tables of measured profiles: before/after, one column per model, a single model's
profile (the Model page and ``python -m compress profile`` show the same one), and the
one-sentence summary of a run."""
from __future__ import annotations

from typing import Optional

from compress.measure import Profile
from compress.runtimes import ONNX_RUNTIME
from compress.report.speed import speed_phrase, speed_ratio, time_change, times_faster


def _cells(p: Profile) -> dict[str, str]:
    """One profile's figures as table cells, keyed by the measure's name."""
    cells = {"Parameters": f"{p.params / 1e6:.3f} M",
             "Nonzero parameters": f"{p.nonzero_params / 1e6:.3f} M",
             "Size (file)": f"{p.size_bytes / 1e6:.2f} MB",
             "Size (gzip)": f"{p.size_gzip_bytes / 1e6:.2f} MB"}
    if p.macs is not None:
        cells["MACs / image"] = f"{p.macs / 1e9:.4f} G"
    if p.latency_ms:
        cells["Latency, median"] = f"{p.latency_ms.median:.2f} ms"
        cells["Latency, p90"] = f"{p.latency_ms.p90:.2f} ms"
    if p.accuracy:
        a = p.accuracy
        cells["Top-1 accuracy"] = f"{a.top1:.2f}% ({a.ci95[0]:.1f}–{a.ci95[1]:.1f})"
    return cells


def _size_how(p: Profile) -> str:
    """What the size figure counts, by the runtime that runs the model."""
    if ONNX_RUNTIME in (p.runtime or ""):
        return "real bytes of the ONNX file ONNX Runtime loads"
    return "real bytes of the state_dict written by torch.save"


def _how(p: Profile) -> dict[str, str]:
    """How each measure was taken (the same for every profile of one run)."""
    how = {"Parameters": "all parameter tensors", "Nonzero parameters": "parameters that are not exactly 0",
           "Size (file)": _size_how(p),
           "Size (gzip)": "the same bytes, gzip level 6",
           "MACs / image": f"thop at {p.input_size[1]}×{p.input_size[2]}",
           "Latency, p90": "90th percentile of the same runs"}
    if p.latency_ms:
        la = p.latency_ms
        how["Latency, median"] = (f"{la.runs} timed runs after {la.warmup} warm-up; batch {la.batch}, "
                                  f"{la.device}, {la.threads} threads"
                                  + (f"; timed in turn with {', '.join(la.interleaved_with)}, one run each "
                                     "per round" if la.interleaved_with else ""))
    if p.accuracy:
        how["Top-1 accuracy"] = f"n = {p.accuracy.n} images, 95% Wilson interval in brackets"
    return how


def _values(p: Profile) -> dict[str, Optional[float]]:
    return {"Parameters": p.params, "Nonzero parameters": p.nonzero_params, "Size (file)": p.size_bytes,
            "Size (gzip)": p.size_gzip_bytes, "MACs / image": p.macs,
            "Latency, median": p.latency_ms.median if p.latency_ms else None,
            "Latency, p90": p.latency_ms.p90 if p.latency_ms else None,
            "Top-1 accuracy": p.accuracy.top1 if p.accuracy else None}


def compare_profiles(before: Profile, after: Profile, same_run: bool = True, baseline: bool = True) -> list[dict]:
    """Rows of a before/after table, each with the change and how it was measured.

    "change" is after/before for sizes, MACs and latency (×0.25 = four times smaller) and
    a difference in points for accuracy. With ``same_run=False`` (two runs' results) the
    latencies are marked as timed in different runs, and each run's own speed-up against
    its original is added as a row. ``baseline`` says ``before`` is the original that
    ``after.speed`` was timed against (then the latency change is its per-round ratio).
    """
    cb, ca, vb, va, how = _cells(before), _cells(after), _values(before), _values(after), _how(after)
    if before.runtime != after.runtime and "Latency, median" in how:
        how["Latency, median"] += f"; {before.runtime} → {after.runtime}"
    if _size_how(before) != _size_how(after):
        how["Size (file)"] = f"before: {_size_how(before)}; after: {_size_how(after)}"
    rows = []
    for m in cb:
        if m not in ca:
            continue
        if m == "Top-1 accuracy":
            change = f"{va[m] - vb[m]:+.2f} pts"
        elif m.startswith("Latency") and not same_run:
            change = (f"×{va[m] / vb[m]:.2f}, different runs" if vb[m] and va[m] is not None else "–")
        elif m == "Latency, median" and after.speed and baseline:
            change = time_change(before.to_json(), after.to_json())
        else:
            change = f"×{va[m] / vb[m]:.2f}" if vb[m] and va[m] is not None else "–"
        rows.append(dict(measure=m, before=cb[m], after=ca[m], change=change, how=how.get(m, "")))
    if not baseline:
        own = [speed_ratio({"latency_ms": None}, p.to_json()) for p in (before, after)]
        if all(r for r, _, _ in own):
            rows.append(dict(measure="Speed-up against its own original", before=times_faster(own[0][0]),
                             after=times_faster(own[1][0]), change="–",
                             how="each timed in turn with its original, in its own run"
                                 + ("; ⚠ busy machine: unreliable" if own[0][1] or own[1][1] else "")))
    if after.agreement_top1 is not None:
        aa = after.accuracy
        rows.append(dict(measure="Same top-1 as the float model", before="100%",
                         after=f"{after.agreement_top1:.2f}%", change="–",
                         how=f"share of the {aa.n if aa else ''} images whose top class is unchanged"))
    return rows




def profiles_table(columns: dict[str, Profile]) -> list[dict]:
    """Rows of a table with one column per profile (e.g. original / pruned / recovered),
    all measured in the same run, and how each measure was taken."""
    cells = {name: _cells(p) for name, p in columns.items()}
    first = next(iter(columns.values()))
    how = _how(first)
    return [{"measure": m, **{name: c.get(m, "–") for name, c in cells.items()}, "how": how.get(m, "")}
            for m in cells[next(iter(cells))]]



def near_chance(profile: dict, num_classes: Optional[int]) -> Optional[str]:
    """Why ``profile``'s top-1 is no better than guessing (below twice the chance rate of
    1/num_classes), or None. Such a figure is a symptom, not a result: images that do not
    match the model, calibration photos from another domain, or a model pruned past use."""
    acc = profile.get("accuracy")
    if not acc or not num_classes or num_classes < 2:
        return None
    chance = 100.0 / num_classes
    if acc["top1"] >= 2 * chance:
        return None
    return (f"top-1 {acc['top1']:.1f}% on {acc['n']:,} images is near chance ({chance:.1f}% for "
            f"{num_classes} classes guessed at random)")


def chance_warnings(before: dict, after: dict, num_classes: Optional[int]) -> list[str]:
    """Warnings for a run whose original or result scores near chance (see :func:`near_chance`)."""
    out = []
    b = near_chance(before, num_classes)
    if b:
        out.append(f"The original model's {b}: these images probably do not match the model (another "
                   "dataset, other classes, or other preprocessing), so no accuracy figure of this run "
                   "means anything.")
    a = near_chance(after, num_classes) if after is not before else None
    if a and not b:
        out.append(f"The compressed model's {a}: it no longer works. Typical causes: calibration photos "
                   "unlike the evaluation photos, or pruning without recovery (re-estimate BatchNorm or "
                   "fine-tune). Do not use this result.")
    return out


def summary(before: dict, after: dict, num_classes: Optional[int] = None) -> str:
    """One sentence a non-engineer can read, from two Profile JSONs of the same run. An
    accuracy near chance is named as such, never as a figure to compare."""
    parts = [f"{before['size_bytes'] / after['size_bytes']:.1f}× smaller"]
    speed = speed_phrase(before, after)
    if speed:
        parts.append(speed)
    ab, aa = before.get("accuracy"), after.get("accuracy")
    broken = near_chance(before, num_classes) or near_chance(after, num_classes)
    if ab and aa and broken:
        parts.append(f"accuracy not stated: {broken} (see the warning)")
    elif ab and aa:
        d = aa["top1"] - ab["top1"]
        word = "less" if d < 0 else "more"
        parts.append(f"{abs(d):.1f} points {word} accurate on {aa['n']:,} validation images "
                     f"(95% interval {aa['ci95'][0]:.1f}–{aa['ci95'][1]:.1f}% against "
                     f"{ab['ci95'][0]:.1f}–{ab['ci95'][1]:.1f}% for the original)")
    else:
        parts.append("accuracy not measured (no labelled images were chosen)")
    return ", ".join(parts)



COUNTS = ("Parameters", "Nonzero parameters", "Size (file)", "Size (gzip)", "MACs / image")


def _mb(n: Optional[int]) -> str:
    return "n/a" if n is None else f"{n / 1e6:.2f} MB"


def profile_table(p: Profile, no_accuracy: str = "", counts: bool = False) -> list[dict]:
    """One model's profile as rows of measure, value and how it was measured: latency,
    peak memory and accuracy, led by the model (with its weights) and the static counts with
    ``counts`` (the command line; the Model page shows those as metrics). ``no_accuracy``
    says what to do when no accuracy was measured."""
    cells, how = _cells(p), _how(p)
    rows = []
    if counts:
        rows.append(dict(measure="Model", value=p.model, how=p.weights))
        rows += [dict(measure=m, value=cells.get(m, "n/a"), how=how[m]) for m in COUNTS]
    if p.latency_ms:
        rows += [dict(measure=m, value=cells[m], how=how[m]) for m in ("Latency, median", "Latency, p90")]
    rows.append(dict(measure="Peak activation memory", value=_mb(p.peak_memory_bytes),
                     how="allocator peak during one forward pass"))
    a = p.accuracy
    if a is None:
        rows.append(dict(measure="Accuracy", value="not measured", how=no_accuracy))
        return rows
    rows.append(dict(measure="Top-1 accuracy", value=f"{a.top1:.2f}%",
                     how=f"n = {a.n} images, 95% interval {a.ci95[0]:.1f}–{a.ci95[1]:.1f}%"
                         + (f"; {a.source}" if a.source else "")))
    if a.top5 is not None:
        rows.append(dict(measure="Top-5 accuracy", value=f"{a.top5:.2f}%", how=f"n = {a.n}"))
    return rows


def text_table(rows: list[dict]) -> str:
    """Rows of dicts as aligned plain-text columns (for the command line)."""
    if not rows:
        return ""
    keys = list(rows[0])
    widths = [max(len(str(r.get(k, ""))) for r in rows) for k in keys]
    return "\n".join("  ".join(str(r.get(k, "")).ljust(w) for k, w in zip(keys, widths)).rstrip() for r in rows)
