"""What changed between two models measured on the same images: per-class deltas, the
images whose answer flipped, and one plain sentence about them."""
from __future__ import annotations


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
