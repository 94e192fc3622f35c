"""Pruning benchmark: what channel pruning buys (params, MACs, CPU latency) and what it
costs in accuracy before any recovery. Prints Markdown; results live in docs/pruning.md.

    .venv/bin/python bench/prune_bench.py --cifar ../shared/data/cifar10-jpeg.tar.gz \
        --imagenet ../shared/data/imagenet-val > /tmp/pruning.md

Part 1 times torchvision resnet18 at 224x224. Its ImageNet weights cannot be downloaded
here, so it uses untrained weights: params, MACs and latency do not depend on the weight
values. Every latency is a ratio to the unpruned model timed in the same run.
Part 2 prunes the trained models (resnet18_cifar10, efficientnet_lite0) with each
criterion and measures top-1 with no fine-tuning, on images kept apart from the 64 used
by the activation/Taylor criteria.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
import torch_pruning as tp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from compress import data as D  # noqa: E402
from compress import prune as P  # noqa: E402
from compress.measure import count_macs, count_params, evaluate  # noqa: E402
from compress.timing import measure_latency  # noqa: E402
from compress.checkpoint import load_model  # noqa: E402
from compress.zoo import build_architecture  # noqa: E402

CPU = torch.device("cpu")


def part1(ratios, runs1: int, runs32: int) -> None:
    size = (3, 224, 224)
    base = build_architecture("resnet18", 1000).eval()
    print("## 1. resnet18 at 224×224: what pruning removes and how much faster it runs\n")
    print(f"Untrained weights (timing only). CPU, {torch.get_num_threads()} threads, FP32 eager. "
          f"Batch 1: median of {runs1} runs; batch 32: median of {runs32} runs; 3 warm-up runs each. "
          "Ratios are pruned / unpruned, measured in the same run.\n")
    print("| protected | channel ratio | params (M) | × params | MACs (G) | × MACs | batch 1 median (ms) | × latency b1 | batch 32 median (ms) | × latency b32 |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def row(label, ratio, m, ref=None):
        params, macs = count_params(m)[0], count_macs(m, size)
        l1 = measure_latency(m, size, CPU, batch=1, warmup=3, runs=runs1)
        l32 = measure_latency(m, size, CPU, batch=32, warmup=3, runs=runs32)
        ref = ref or (params, macs, l1.median, l32.median)
        print(f"| {label} | {ratio} | {params / 1e6:.2f} | ×{params / ref[0]:.2f} | {macs / 1e9:.3f} | "
              f"×{macs / ref[1]:.2f} | {l1.median:.2f} | ×{l1.median / ref[2]:.2f} | {l32.median:.1f} | "
              f"×{l32.median / ref[3]:.2f} |", flush=True)
        return ref
    ref = row("–", "0 (unpruned)", base)
    for protected, label in ((("fc",), "classifier only (Torch-Pruning's default)"),
                             (None, "stem conv + classifier (our default)")):
        for r in ratios:
            m, _ = P.prune_structured(base, P.StructuredConfig(ratio=r, protected=protected), size)
            row(label, r, m, ref)
    print()


def part2(name: str, path: str, limit, ratios) -> None:
    loaded = load_model(name)
    spec = loaded.spec
    sets = D.eval_sets(path, spec.preprocess.transform(), spec.num_classes, spec.name, limit=limit,
                       seed=0, n_scoring=64, batch_size=100)
    t0 = time.perf_counter()
    base = evaluate(loaded.model, sets.evaluation, CPU)
    print(f"### {name}: top-1 right after pruning, no fine-tuning\n")
    print(f"{sets.n_eval} evaluation images from `{Path(path).name}` (seed 0), the 64 scoring images "
          f"kept apart. Unpruned: **{base.top1:.2f}%** (95% CI {base.ci95[0]:.1f}–{base.ci95[1]:.1f}). "
          "Uniform scope, stem conv and classifier protected.\n")
    head = " | ".join(f"ratio {r}: top-1 % (CI)" for r in ratios)
    print(f"| criterion | {head} | × MACs at {ratios[-1]} |")
    print("|---|" + "---|" * (len(ratios) + 1))
    for crit in P.CRITERIA:
        cells, macs_x = [], None
        for r in ratios:
            m, _ = P.prune_structured(loaded.model, P.StructuredConfig(ratio=r, criterion=crit),
                                      spec.input_size, batches=sets.scoring)
            acc = evaluate(m, sets.evaluation, CPU)
            cells.append(f"{acc.top1:.2f} ({acc.ci95[0]:.1f}–{acc.ci95[1]:.1f})")
            macs_x = count_macs(m, spec.input_size) / count_macs(loaded.model, spec.input_size)
        print(f"| {crit} | " + " | ".join(cells) + f" | ×{macs_x:.2f} |", flush=True)
    print(f"\n({time.perf_counter() - t0:.0f} s)\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cifar", default=None)
    ap.add_argument("--imagenet", default=None)
    ap.add_argument("--runs1", type=int, default=30)
    ap.add_argument("--runs32", type=int, default=8)
    ap.add_argument("--skip-latency", action="store_true")
    a = ap.parse_args()
    print(f"<!-- torch {torch.__version__}, torch-pruning {tp.__version__}, "
          f"{platform.machine()}, {torch.get_num_threads()} threads -->\n")
    if not a.skip_latency:
        part1((0.25, 0.5, 0.75), a.runs1, a.runs32)
    print("## 2. Accuracy cost per criterion, before any recovery\n")
    if a.cifar:
        part2("resnet18_cifar10", a.cifar, None, (0.25, 0.5))
    if a.imagenet:
        part2("efficientnet_lite0", a.imagenet, None, (0.1, 0.25))


if __name__ == "__main__":
    main()
