"""What the Prune page says: the slider's estimate, the before/after table with the
accuracy as pruned, the sensitivity scan and its table."""
from __future__ import annotations

from compress import prune as P
from compress.measure import Profile
from compress.paths import cache_dir
from compress.report.profiles import compare_profiles


def estimate_metrics(est: dict, base_params: int, base_macs: int) -> list[dict]:
    """The slider's estimate (from :func:`compress.prune.estimate`) as metrics: label,
    value and the fraction of the original it keeps (``delta``, None for the ratio)."""
    return [
        dict(label="Parameters (estimate)", value=f"{est['params'] / 1e6:.2f} M",
             delta=f"×{est['params'] / base_params:.2f} of {base_params / 1e6:.2f} M"),
        dict(label="MACs / image (estimate)", value=f"{est['macs'] / 1e9:.3f} G",
             delta=f"×{est['macs'] / base_macs:.2f} of {base_macs / 1e9:.3f} G"),
        dict(label="Channel ratio used", value=f"{est['ratio']:.3f}", delta=None),
    ]


def estimate_caption(est: dict, criterion: str) -> str:
    """What the estimate is, and where the real prune may differ from it."""
    return ("Estimate: parameters and MACs computed from the channels this setting removes "
            "(the same counts a real prune gives), without latency or accuracy. Press **Prune** "
            "to measure everything."
            + ("" if est.get("exact", True) else
               f" Global ranking with the {criterion} criterion (it needs images or draws at random) "
               "is estimated by ranking channels by weight size (L1): the real prune may keep a "
               "slightly different mix."))


def output_layer_note(model, num_classes: int) -> str:
    return (f"The output layer ({', '.join(P.output_layers(model))}) is never pruned: its "
            f"{num_classes} channels are the classes. Its inputs shrink with the layer before it.")


def needs_images_warning(criterion: str, has_images: bool) -> str:
    """Why the criterion cannot run without a dataset; "" when it can."""
    if criterion not in P.NEEDS_DATA or has_images:
        return ""
    return (f"The {criterion} criterion looks at real images: choose a labelled dataset in "
            "the sidebar, or pick a weight-based criterion.")


def pruned_table(before: Profile, after: Profile, report) -> list[dict]:
    """The before/after rows of a channel prune, with the pruned model's accuracy before
    BatchNorm re-estimation added under the top-1 row (when it was measured)."""
    rows = compare_profiles(before, after)
    acc = report.accuracy_as_pruned
    if not acc:
        return rows
    out = []
    for row in rows:
        out.append(row)
        if row["measure"] == "Top-1 accuracy":
            out.append(dict(measure="Top-1 as pruned, before BatchNorm re-estimation", before=row["before"],
                            after=f"{acc['top1']:.2f}% ({acc['ci95'][0]:.1f}–{acc['ci95'][1]:.1f})",
                            change=f"{acc['top1'] - before.accuracy.top1:+.2f} pts",
                            how=f"the same {acc['n']} images, before the statistics were re-estimated"))
    return out


def pruned_captions(run_id, report, after: Profile) -> tuple[str, str]:
    """(what the table is, how its accuracy was taken) for a channel prune's result."""
    head = (f"Both measured just now, in the same run (#{run_id} in the history). Channel "
            f"ratio {report.ratio:.3f}, criterion {report.criterion}.")
    if report.bn_images:
        bn = (f"Top-1 accuracy is after BatchNorm re-estimation on {report.bn_images} scoring photos "
              "(none of them among the evaluation images); the row below it is the same pruned model "
              "before that, on the same images.")
    elif after.accuracy is not None:
        bn = "BatchNorm statistics were not re-estimated: the accuracy is the raw pruned one."
    else:
        bn = ""
    return head, bn


def zeroing_start(point):
    """The current compressed model (a Point) when weights may be zeroed from it, else None:
    a quantized model is final, and zeroing replaces earlier zeroing."""
    if point is None or point.quantized or point.recipe.unstructured is not None:
        return None
    return point


def zeroed_caption(run_id) -> str:
    return (f"Before: the model it started from; after: with zeroed weights. Both measured in run "
            f"#{run_id}.")


def sensitivity_scan(model, input_size, sets, n_images: int, **settings) -> P.SensitivityTable:
    """:func:`compress.prune.sensitivity` on ``n_images`` photos of the scoring pool of
    ``sets`` (never the evaluation images), cached on disk in the project's cache folder."""
    batches = sets.scoring_batches(int(n_images)) if sets else []
    return P.sensitivity(model, input_size, batches, cache_dir=cache_dir() / "sensitivity", **settings)


def sensitivity_caption(t: P.SensitivityTable) -> str:
    return (f"{t.n} scoring photos; each pruned model "
            + ("had its BatchNorm statistics re-estimated first." if t.reestimate_bn
               else "was scored as pruned (no BatchNorm re-estimation).")
            + (" From the cache: the same weights, images and settings were scanned before."
               if t.cached else ""))


def sensitivity_rows(t: P.SensitivityTable) -> list[dict]:
    return [dict(unit=r.unit, ratio=r.ratio, top1=round(r.top1, 2), ci95=f"{r.ci95[0]:.1f}–{r.ci95[1]:.1f}",
                 n=r.n, macs_x=round(r.macs_fraction, 3)) for r in t.rows]
