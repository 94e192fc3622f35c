"""Everything the product says about measured figures, in one place: before/after and
multi-column tables, one-line summaries a non-engineer can read, labels for a session's
model, and the Markdown model card. Pure functions of Profiles and Results: the pages,
the CLI and the exporters all call these, so a figure reads the same everywhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from compress.measure import Profile


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
    if "ONNX" in (p.runtime or ""):
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
            change = _time_change(before.to_json(), after.to_json())
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


def _time_change(before: dict, after: dict) -> str:
    """after's time as a multiple of before's, from the per-round ratios, with their 95%
    interval; marked when the machine was busy."""
    ratio, noisy, _ = speed_ratio(before, after)
    total = speed_entry(after, "total")
    text = f"×{1 / ratio:.2f}"
    if total:
        lo, hi = total["ci95"]
        text += f" (×{1 / hi:.2f}–×{1 / lo:.2f})"
    return text + (" ⚠ busy machine: unreliable" if noisy else "")


def profiles_table(columns: dict[str, Profile]) -> list[dict]:
    """Rows of a table with one column per profile (e.g. original / pruned / recovered),
    all measured in the same run, and how each measure was taken."""
    cells = {name: _cells(p) for name, p in columns.items()}
    first = next(iter(columns.values()))
    how = _how(first)
    return [{"measure": m, **{name: c.get(m, "–") for name, c in cells.items()}, "how": how.get(m, "")}
            for m in cells[next(iter(cells))]]


BUSY = "the machine was busy; speed figures are unreliable, measure again"


def times_faster(r: float) -> str:
    return f"{r:.1f}× faster" if r >= 1 else f"{1 / r:.1f}× slower"


def speed_entry(after: dict, role: str) -> Optional[dict]:
    """The Speedup JSON of ``role`` ("total", "runtime", "compression", "from start") in a
    Profile JSON's ``speed`` list, or None."""
    return next((s for s in after.get("speed") or [] if s.get("role") == role), None)


def speed_against(after: dict, base: str) -> Optional[dict]:
    """The Speedup JSON in a Profile JSON's ``speed`` list whose base is ``base`` (a name in
    the timing loop: "original", "float model", "ort-fp32", …), or None."""
    return next((s for s in after.get("speed") or [] if s.get("base") == base), None)


def speed_ratio(before: dict, after: dict) -> tuple[Optional[float], bool, str]:
    """(how many times faster ``after`` ran than ``before``, noisy?, how it was timed).
    From the interleaved per-round ratios when the run has them; from two medians (timed
    in separate loops, e.g. a run recorded by an older version) otherwise."""
    total = speed_entry(after, "total")
    if total is not None:
        return total["ratio"], total["noisy"], total.get("why", "")
    lb, la = before.get("latency_ms"), after.get("latency_ms")
    if not (lb and la):
        return None, False, ""
    noisy = [f"{n}'s p90 is {x['p90'] / x['median']:.1f}× its median" for n, x in (("before", lb), ("after", la))
             if x["p90"] > 1.5 * x["median"]]
    return lb["median"] / la["median"], bool(noisy), "; ".join(noisy + ["timed in separate loops"])


def speed_phrase(before: dict, after: dict) -> Optional[str]:
    """The speed part of a summary: the ratio with its interval, split into runtime switch
    and compression where the run measured both. A noisy figure is never stated."""
    ratio, noisy, why = speed_ratio(before, after)
    if ratio is None:
        return None
    if noisy:
        return f"speed not stated: {BUSY} ({why})"
    total = speed_entry(after, "total")
    if total is None:
        return f"{times_faster(ratio)} ({why})"
    lo, hi = total["ci95"]
    text = f"{times_faster(ratio)} (95% interval ×{lo:.2f}–×{hi:.2f}, {total['pairs']} rounds timed in turn)"
    rt, comp = speed_entry(after, "runtime"), speed_entry(after, "compression")
    if rt and comp:
        if rt["noisy"] or comp["noisy"]:
            text += "; how much of it came from the runtime is unreliable (the machine was busy)"
        else:
            text += (f": ×{rt['ratio']:.2f} from running in ONNX Runtime instead of PyTorch (both FP32), "
                     f"×{comp['ratio']:.2f} from compression within ONNX Runtime")
    return text


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


def point_label(recipe) -> str:
    """A short name for the model a recipe makes, e.g. "channel-pruned 0.50 (l1) → ort-int8"."""
    parts = []
    if recipe.prune is not None:
        c = recipe.prune
        parts.append(f"channel-pruned {c.ratio:.2f} ({c.criterion}, {c.scope})" if c.target == "ratio"
                     else f"channel-pruned −{100 * c.target_reduction:.0f}% {c.target} ({c.criterion})")
    if recipe.recover is not None:
        r = recipe.recover
        parts.append(f"{'distilled' if r.method == 'distill' else 'fine-tuned'} {r.epochs} epoch(s)")
    if recipe.unstructured is not None:
        parts.append(f"{100 * recipe.unstructured.amount:.0f}% zero weights")
    if recipe.quantize is not None:
        parts.append(recipe.quantize.mode)
    label = " → ".join(parts) if parts else "unchanged"
    return f"{recipe.name}: {label}" if recipe.name else label


def _threads(r) -> str:
    lat = (r.after or {}).get("latency_ms") or {}
    return f" ({lat['threads']} threads, {r.after.get('runtime', '')})" if lat.get("threads") else ""


def model_card(result) -> str:
    """A Markdown model card: what was done (the recipe), what was measured, and the files."""
    r = result
    lines = [f"# Model card: {r.recipe.name or r.recipe.describe()}", "",
             f"- Base model: `{r.recipe.model.name}` ({r.weights})",
             f"- Steps: {r.recipe.describe()}",
             f"- Measured on device: {r.device}" + _threads(r) + (f"; accuracy on {r.data['n_eval']} images from "
                                                     f"`{r.data['source']}` (seed {r.data['seed']})"
                                                     if r.data else ""),
             "- Software: " + ", ".join(f"{k} {v}" for k, v in r.versions.items()), "",
             ]
    if r.before and r.after:
        lines += ["## Before and after (measured in the same run)", "",
                  "| measure | before | after | change | how |", "|---|---|---|---|---|"]
        for row in compare_profiles(Profile.from_json(r.before), Profile.from_json(r.after)):
            lines.append(f"| {row['measure']} | {row['before']} | {row['after']} | {row['change']} | {row['how']} |")
        num_classes = r.loaded.spec.num_classes if r.loaded is not None else None
        lines += ["", f"In one sentence: {summary(r.before, r.after, num_classes)}."]
    if r.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in r.warnings]
    if r.exports:
        lines += ["", "## Files", "", "Each file was loaded back in its runtime and compared with the model on "
                  "real images.", "",
                  "| format | file | bytes (the file's own) | runtime | checked on | max abs diff | same top-1 | note |",
                  "|---|---|---|---|---|---|---|---|"]
        for e in r.exports.values():
            diff = "–" if e["max_abs_diff"] is None else f"{e['max_abs_diff']:.2e}"
            agree = "–" if e["agreement_top1"] is None else f"{e['agreement_top1']:.1f}% of {e['n']}"
            lines.append(f"| {e['format']} | `{Path(e['path']).name}` | {e['bytes']:,} | {e['runtime']} | "
                         f"{e.get('device', 'cpu')} | {diff} | {agree} | {e['note']} |")
    lines += ["", "## Recipe", "", "```json", r.recipe.to_json(), "```", ""]
    return "\n".join(lines)



# ------------------------------------------------------------------ what changed


def _name(i: int, names) -> str:
    return names[i] if 0 <= i < len(names) else str(i)


def changed_images(data: dict, before: dict, after: dict, class_names=()) -> list[dict]:
    """The evaluation images whose top-1 differs between two profiles measured on the same
    images (``data["files"]``/``data["labels"]``, each profile's ``per_image``): file,
    label, each model's class and probability, and whether the image got "fixed" (now
    right), "broken" (now wrong) or stayed wrong with another answer ("still wrong")."""
    pb, pa = before.get("per_image") or {}, after.get("per_image") or {}
    files, labels = data.get("files") or [], data.get("labels") or []
    if not (pb.get("pred") and pa.get("pred")) or not (len(files) == len(pb["pred"]) == len(pa["pred"])):
        return []
    out = []
    for i, (f, b, a) in enumerate(zip(files, pb["pred"], pa["pred"])):
        if a == b:
            continue
        y = labels[i] if i < len(labels) else -1
        change = "fixed" if a == y else "broken" if b == y else "still wrong"
        out.append({"file": f, "label": _name(y, class_names), "change": change,
                    "before": {"class": _name(b, class_names), "prob": pb["prob"][i]},
                    "after": {"class": _name(a, class_names), "prob": pa["prob"][i]}})
    return out


def per_class_deltas(before: dict, after: dict) -> list[dict]:
    """Per class: n, top-1 before and after (percent) and the change in points, from two
    profiles' ``accuracy.per_class`` on the same images; sorted from the largest loss."""
    pb = {c["index"]: c for c in (before.get("accuracy") or {}).get("per_class") or []}
    pa = {c["index"]: c for c in (after.get("accuracy") or {}).get("per_class") or []}
    rows = []
    for k in sorted(pb.keys() & pa.keys()):
        b, a = pb[k], pa[k]
        if b["n"] != a["n"] or not b["n"]:
            continue
        rows.append({"class": b["class"], "n": b["n"], "before": 100.0 * b["correct"] / b["n"],
                     "after": 100.0 * a["correct"] / a["n"],
                     "delta": 100.0 * (a["correct"] - b["correct"]) / b["n"]})
    return sorted(rows, key=lambda r: (r["delta"], r["class"]))


def diff_runs(a, b, class_names=None) -> dict:
    """What changed from run ``a``'s compressed model to run ``b``'s (history Runs measured on
    the same images): per-class deltas and the images whose top-1 changed. A run against
    itself gives no change. Raises ValueError when the runs measured different images."""
    da, db = a.data or {}, b.data or {}
    if not da.get("files") or not db.get("files"):
        raise ValueError(f"run {a.id if not da.get('files') else b.id} kept no per-image results "
                         "(recorded by an earlier version, or without labelled images): measure it again.")
    if da["files"] != db["files"] or da.get("labels") != db.get("labels"):
        raise ValueError(f"runs {a.id} and {b.id} were measured on different images "
                         f"({da.get('source')}, {da.get('n_eval')} images against {db.get('source')}, "
                         f"{db.get('n_eval')}): compare runs made with the same data, limit and seed.")
    idx = {c["index"]: c["class"] for c in (a.after.get("accuracy") or {}).get("per_class") or []}
    names = class_names or [idx.get(i, str(i)) for i in range(max(idx, default=-1) + 1)]
    changed = changed_images(da, a.after, b.after, names)
    deltas = per_class_deltas(a.after, b.after)
    return {"a": a.id, "b": b.id, "n": da.get("n_eval"), "source": da.get("source"),
            "per_class": deltas, "changed": changed,
            "fixed": sum(c["change"] == "fixed" for c in changed),
            "broken": sum(c["change"] == "broken" for c in changed)}


def _pts(delta: float) -> str:
    """A class's change in points: whole points from 10 up, one decimal below (never "-0")."""
    return f"{delta:+.0f}" if abs(delta) >= 10 else f"{delta:+.1f}"


def _photos(k: int) -> str:
    return f"{k} photo" + ("" if k == 1 else "s")


def forgetting_sentence(deltas: list[dict], changed: list[dict]) -> str:
    """One plain sentence: where most of the loss is, and how many images flipped each way.
    A class is named only when it lost at least 2 photos: with one or two photos per class
    (e.g. 650 ImageNet images over 1,000 classes) a single flip is not a pattern."""
    def lost(r):
        return round((r["before"] - r["after"]) * r["n"] / 100)
    losing = [r for r in deltas if r["delta"] < 0]
    named = [r for r in losing if lost(r) >= 2][:2]
    fixed = sum(c["change"] == "fixed" for c in changed)
    broken = sum(c["change"] == "broken" for c in changed)
    if not losing:
        head = "No class lost accuracy"
    elif not named:
        head = (f"No class lost more than one photo (the loss is spread over {len(losing)} "
                f"{'class' if len(losing) == 1 else 'classes'}; too few photos per class to name one)")
    else:
        first = named[0]
        head = (f"Most of the loss is in '{first['class']}' ({_pts(first['delta'])} points on "
                f"{_photos(first['n'])})")
        if len(named) > 1:
            head += f" and '{named[1]['class']}' ({_pts(named[1]['delta'])})"
    return f"{head}; {_photos(fixed)} became right, {_photos(broken)} became wrong."
