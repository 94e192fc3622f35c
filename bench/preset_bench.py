"""Presets, measured: each preset of compress.recipe.presets run through the pipeline on a
model, as the Compare page runs it (exports left out). Writes assets/preset_results.json
(the presets' descriptions quote it) and prints Markdown for docs/presets.md.

    .venv/bin/python bench/preset_bench.py --cifar ../shared/data/cifar10-jpeg.tar.gz \
        --imagenet ../shared/data/imagenet-val > /tmp/presets.md

resnet18_cifar10 is measured on 2,000 CIFAR-10 test images, with and without training
photos (the CIFAR-10 train split: the pruning presets then distil for one epoch on 10,000
of them); efficientnet_lite0 on the 650-image ImageNet sample, without training photos.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from compress import pipeline  # noqa: E402
from compress.recipe import PRESET_RESULTS, DataRef, ExportRef, MeasureRef, presets  # noqa: E402
from compress.report import speed_entry  # noqa: E402


def measure(model: str, data: DataRef, label: str, results: dict) -> None:
    for name, (recipe, _) in presets(model, data).items():
        if name == "Keep accuracy" and data.train_path:
            continue                               # no training in it: measured once
        recipe = replace(recipe, export=ExportRef(), measure=MeasureRef(device="cpu", runs=30, warmup=5))
        t0 = time.perf_counter()
        res = pipeline.run(recipe)
        b, a = res.before, res.after
        total = speed_entry(a, "total")
        key = f"{name}|{'distilled' if recipe.recover is not None else 'bn'}"
        results.setdefault(model, {})[key] = {
            "top1_before": b["accuracy"]["top1"], "top1_after": a["accuracy"]["top1"],
            "ci_after": a["accuracy"]["ci95"], "n": a["accuracy"]["n"], "data": label,
            "smaller": b["size_bytes"] / a["size_bytes"], "macs": a["macs"] / b["macs"] if a["macs"] else None,
            "speed": total["ratio"] if total else None, "speed_ci": total["ci95"] if total else None,
            "noisy": bool(total and total["noisy"]), "recipe": recipe.describe(),
            "seconds": round(time.perf_counter() - t0, 1), "date": time.strftime("%Y-%m-%d")}
        r = results[model][key]
        PRESET_RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")   # after each: a crash keeps the rest
        print(f"| {model} | {name} | {r['recipe']} | {r['top1_before']:.2f} | {r['top1_after']:.2f} "
              f"({r['ci_after'][0]:.1f}–{r['ci_after'][1]:.1f}) | {r['top1_after'] - r['top1_before']:+.2f} | "
              f"×{r['smaller']:.1f} | " + (f"×{r['speed']:.2f} ({r['speed_ci'][0]:.2f}–{r['speed_ci'][1]:.2f})"
                                           + (" busy" if r["noisy"] else "") if r["speed"] else "–")
              + f" | {r['seconds']:.0f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cifar")
    ap.add_argument("--imagenet")
    a = ap.parse_args()
    results = json.loads(PRESET_RESULTS.read_text()) if PRESET_RESULTS.is_file() else {}
    print("| model | preset | recipe | top-1 before (%) | top-1 after (%) | points | × smaller | × speed (95%) | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    if a.cifar:
        measure("resnet18_cifar10", DataRef(path=a.cifar, limit=2000), "CIFAR-10 test", results)
        measure("resnet18_cifar10", DataRef(path=a.cifar, limit=2000, train_path=a.cifar), "CIFAR-10 test", results)
    if a.imagenet:
        measure("efficientnet_lite0", DataRef(path=a.imagenet, limit=None), "ImageNet validation", results)
    PRESET_RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
