"""A run described for people: the short label of a recipe's model, the Markdown model
card, and the table of exported files."""
from __future__ import annotations

from pathlib import Path

from compress.distill import RECOVERY_METHODS
from compress.measure import Profile
from compress.report.profiles import compare_profiles, summary


def point_label(recipe) -> str:
    """A short name for the model a recipe makes, e.g. "channel-pruned 0.50 (l1) → ort-int8"."""
    parts = []
    if recipe.prune is not None:
        c = recipe.prune
        parts.append(f"channel-pruned {c.ratio:.2f} ({c.criterion}, {c.scope})" if c.target == "ratio"
                     else f"channel-pruned −{100 * c.target_reduction:.0f}% {c.target} ({c.criterion})")
    if recipe.recover is not None:
        r = recipe.recover
        parts.append(f"{RECOVERY_METHODS[r.method].past} "
                     + (f"{r.minutes:g} min" if r.minutes is not None else f"{r.epochs} epoch(s)"))
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
            cells = _export_cells(e)
            lines.append(f"| {e['format']} | `{Path(e['path']).name}` | {e['bytes']:,} | {e['runtime']} | "
                         f"{e.get('device', 'cpu')} | {cells['diff']} | {cells['agree']} | {e['note']} |")
    lines += ["", "## Recipe", "", "```json", r.recipe.to_json(), "```", ""]
    return "\n".join(lines)


def _export_cells(e: dict) -> dict:
    return {"diff": "–" if e["max_abs_diff"] is None else f"{e['max_abs_diff']:.2e}",
            "agree": "–" if e["agreement_top1"] is None else f"{e['agreement_top1']:.1f}% of {e['n']}"}


def export_table(exports: dict) -> list[dict]:
    """One row per exported file (``Result.exports``): bytes, runtime, and how closely the
    file, loaded back, agrees with the model."""
    rows = []
    for e in exports.values():
        cells = _export_cells(e)
        rows.append({"format": e["format"], "file": Path(e["path"]).name, "bytes": f"{e['bytes']:,}",
                     "runtime": e["runtime"], "max abs diff": cells["diff"], "same top-1": cells["agree"],
                     "note": e["note"]})
    return rows
