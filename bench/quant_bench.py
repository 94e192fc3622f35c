"""Quantization benchmark: every path measured in the runtime that runs it, in one run.
Prints Markdown; results live in docs/quantization.md.

    .venv/bin/python bench/quant_bench.py --imagenet ../shared/data/imagenet-val \
        --cifar ../shared/data/cifar10-jpeg.tar.gz > /tmp/quantization.md

For each model: PyTorch eager FP32, ONNX Runtime FP32, dynamic INT8, static INT8 (torch,
x86), ONNX Runtime static INT8, and channel pruning at 0.5 followed by each INT8 path.
Calibration images (128, seeded) are never among the evaluation images. torchvision
resnet18 is timed with untrained weights (its ImageNet weights cannot be downloaded
here; latency and size do not depend on weight values), so it has no accuracy column;
calibration uses real ImageNet photos all the same.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from compress import data as D  # noqa: E402
from compress import quantize as Q  # noqa: E402
from compress.measure import profile_model  # noqa: E402
from compress.prune import StructuredConfig, prune_structured  # noqa: E402
from compress.zoo import build_architecture, get_spec, load_model  # noqa: E402

CPU = torch.device("cpu")


def bench(name: str, model, spec, sets, runs: int, with_accuracy: bool) -> None:
    ev = sets.evaluation if with_accuracy else None
    print(f"### {name}\n")
    if with_accuracy:
        print(f"Accuracy on {sets.n_eval} images from `{Path(sets.source).name}`; {sets.n_scoring} other "
              "images calibrate INT8 and score pruning.\n")
    print("| path | runtime | size (MB) | × size | median (ms) | p90 (ms) | speed-up | top-1 % (95% CI) | same top-1 as FP32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = profile_model(model, spec.name, spec.input_size, CPU, runs=runs, warmup=10, eval_batches=ev)

    def row(label, p):
        acc = (f"{p.accuracy.top1:.2f} ({p.accuracy.ci95[0]:.1f}–{p.accuracy.ci95[1]:.1f})"
               if p.accuracy else "–")
        agree = "–" if p.agreement_top1 is None else f"{p.agreement_top1:.1f}%"
        print(f"| {label} | {p.runtime} | {p.size_bytes / 1e6:.2f} | ×{p.size_bytes / base.size_bytes:.2f} | "
              f"{p.latency_ms.median:.2f} | {p.latency_ms.p90:.2f} | "
              f"{base.latency_ms.median / p.latency_ms.median:.2f}× | {acc} | {agree} |", flush=True)
    row("FP32", base)
    pruned, _ = prune_structured(model, StructuredConfig(ratio=0.5), spec.input_size, batches=sets.scoring)
    for label, src, modes in (("", model, ("ort-fp32", "dynamic", "static", "ort-int8")),
                              ("prune 0.5 + ", pruned, (None, "static", "ort-int8"))):
        for mode in modes:
            if mode is None:
                row(f"{label}FP32", profile_model(src, spec.name, spec.input_size, CPU, runs=runs, warmup=10,
                                                  eval_batches=ev))
                continue
            q = Q.quantize(src, Q.QuantConfig(mode=mode, calibration=128), spec.input_size, sets.scoring)
            row(f"{label}{mode}", Q.profile_quantized(q, src, spec.name, spec.input_size, runs=runs,
                                                      warmup=10, eval_batches=ev))
    print()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--imagenet", required=True)
    ap.add_argument("--cifar", default=None)
    ap.add_argument("--runs", type=int, default=50)
    a = ap.parse_args()
    print(f"<!-- torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, "
          f"VNNI: {Q.cpu_has_vnni()} -->\n")
    print(f"Batch 1, CPU, {torch.get_num_threads()} threads, median and p90 of {a.runs} timed runs after "
          "10 warm-up runs; speed-up is against PyTorch FP32 of the same model in the same run.\n")
    t0 = time.perf_counter()
    spec = get_spec("resnet18")
    sets = D.eval_sets(a.imagenet, spec.preprocess.transform(), 1000, "resnet18", limit=64, n_scoring=128)
    bench("resnet18 (224×224, untrained weights: timing and size only)",
          build_architecture("resnet18", 1000).eval(), spec, sets, a.runs, with_accuracy=False)
    lite = load_model("efficientnet_lite0")
    sets = D.eval_sets(a.imagenet, lite.spec.preprocess.transform(), 1000, lite.spec.name, n_scoring=128)
    bench("efficientnet_lite0 (224×224, ImageNet weights)", lite.model, lite.spec, sets, a.runs, True)
    if a.cifar:
        c = load_model("resnet18_cifar10")
        sets = D.eval_sets(a.cifar, c.spec.preprocess.transform(), 10, c.spec.name, limit=2000, n_scoring=128)
        bench("resnet18_cifar10 (32×32, trained here)", c.model, c.spec, sets, a.runs, True)
    print(f"<!-- {time.perf_counter() - t0:.0f} s -->")


if __name__ == "__main__":
    main()
