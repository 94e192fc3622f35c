"""What compression forgets, measured: for each (model, recipe) the pipeline's own run,
then which classes lost most, how many images flipped each way, and how alike the
original's and the compressed model's saliency maps are on the first evaluation images.
Prints Markdown for docs/forgetting.md.

    .venv/bin/python bench/forgetting_bench.py --cifar ../shared/data/cifar10-jpeg.tar.gz \
        --imagenet ../shared/data/imagenet-val > /tmp/forgetting.md

resnet18_cifar10: all 10,000 CIFAR-10 test images; efficientnet_lite0: the 650-image
ImageNet sample (calibration and BatchNorm photos are kept apart by the pipeline, so n is
what remains). Latency is not the point here (5 timed runs).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from compress import pipeline, saliency  # noqa: E402
from compress.data import open_rgb  # noqa: E402
from compress.prune import StructuredConfig  # noqa: E402
from compress.quantize import QuantConfig  # noqa: E402
from compress.recipe import DataRef, MeasureRef, ModelRef, Recipe  # noqa: E402
from compress.report import changed_images, forgetting_sentence, per_class_deltas  # noqa: E402


def saliency_agreement(res, loaded, files: list[str], n: int) -> tuple[float, str, int]:
    """Median similarity of the original's and the compressed model's maps on ``n`` images."""
    spec = loaded.spec
    module = res.model if not hasattr(res.model, "model") else res.model.model
    sims, method = [], ""
    for f in files[:n]:
        image = open_rgb(Path(f))
        a, b = saliency.explain([("original", loaded.model), ("compressed", module)], image, spec.preprocess,
                                spec.categories)
        method = a.method
        s = saliency.similarity(a, b)
        if s == s:
            sims.append(s)
    return (statistics.median(sims) if sims else float("nan")), method, len(sims)


def one(model: str, data: DataRef, step: str, cfg, saliency_n: int) -> None:
    recipe = Recipe(model=ModelRef(name=model), data=data, measure=MeasureRef(device="cpu", runs=5, warmup=2),
                    **{step: cfg})
    t0 = time.perf_counter()
    res = pipeline.run(recipe)
    secs = time.perf_counter() - t0
    b, a = res.before, res.after
    deltas = per_class_deltas(b, a)
    changed = changed_images(res.data, b, a)
    other = sum(c["change"] == "still wrong" for c in changed)
    loaded = pipeline.load(recipe)
    t1 = time.perf_counter()
    sim, method, k = saliency_agreement(res, loaded, res.data["files"], saliency_n)
    print(f"\n### {model}: {recipe.describe()}\n")
    print(f"n = {a['accuracy']['n']} ({a['accuracy'].get('source', '')}); top-1 {b['accuracy']['top1']:.2f}% → "
          f"{a['accuracy']['top1']:.2f}% ({a['accuracy']['top1'] - b['accuracy']['top1']:+.2f} points); "
          f"run {secs:.0f} s, saliency {time.perf_counter() - t1:.0f} s.\n")
    print(f"**{forgetting_sentence(deltas, changed)}** {other} stayed wrong with another answer.\n")
    print(f"Saliency: median similarity of the two maps {sim:.2f} on the first {k} evaluation images ({method}).\n")
    if max(r["n"] for r in deltas) < 5:
        print(f"No per-class table: at most {max(r['n'] for r in deltas)} photos per class over {len(deltas)} "
              "classes, so a class's change is one or two photos.")
        sys.stdout.flush()
        return
    print("| class | n | top-1 before (%) | top-1 after (%) | points |")
    print("|---|---|---|---|---|")
    rows = deltas if len(deltas) <= 10 else deltas[:5] + deltas[-3:]
    for r in rows:
        print(f"| {r['class']} | {r['n']} | {r['before']:.1f} | {r['after']:.1f} | {r['delta']:+.1f} |")
    if len(deltas) > 10:
        print(f"\n(the 5 classes that lost most and the 3 that gained most of {len(deltas)})")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cifar")
    ap.add_argument("--imagenet")
    ap.add_argument("--saliency-images", type=int, default=30)
    a = ap.parse_args()
    if a.cifar:
        data = DataRef(path=a.cifar, limit=None)
        one("resnet18_cifar10", data, "prune", StructuredConfig(ratio=0.5), a.saliency_images)
        one("resnet18_cifar10", data, "quantize", QuantConfig(mode="ort-int8", calibration=128), a.saliency_images)
    if a.imagenet:
        data = DataRef(path=a.imagenet, limit=None)
        one("efficientnet_lite0", data, "prune", StructuredConfig(ratio=0.1), a.saliency_images)
        one("efficientnet_lite0", data, "quantize", QuantConfig(mode="ort-int8", calibration=128),
            a.saliency_images)


if __name__ == "__main__":
    main()
