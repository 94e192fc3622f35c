"""Quantization benchmark: every INT8 path measured in the runtime that runs it, all of one
model's rows timed together in one interleaved loop. Prints Markdown; results live in
docs/quantization.md.

    .venv/bin/python bench/quant_bench.py --imagenet ../shared/data/imagenet-val \
        --cifar ../shared/data/cifar10-jpeg.tar.gz > /tmp/quantization.md

For each model: PyTorch eager FP32, ONNX Runtime FP32, ONNX Runtime INT8 with each of its
settings (8-bit or 7-bit weights, min/max or percentile ranges) and the automatic choice,
ONNX Runtime INT8 after cross-layer equalization, ONNX Runtime INT8 with 2 layers kept in
float ranked by measured agreement, ExecuTorch FP32 and INT8 (PT2E with XNNPACKQuantizer,
lowered to XNNPACK), PyTorch INT8 through PT2E (X86InductorQuantizer, compiled by
TorchInductor) and through torch.ao FX (deprecated). Speed-ups are given against
PyTorch FP32 and against FP32 in the same runtime (ORT rows against ORT FP32, ExecuTorch
rows against ExecuTorch FP32, PyTorch rows against PyTorch FP32), all from the per-round
ratios of the one loop.

Accuracy: efficientnet_lite0 on every ImageNet photo outside the 162-photo scoring pool
(488 of 650), 128 of the pool calibrate; resnet18_cifar10 on 2,000 test images.
mobilenet_v3_large and resnet18 have untrained weights here (their ImageNet weights cannot
be downloaded on this machine): timing and size only, calibrated on real photos all the same.
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
from compress.measure import evaluate  # noqa: E402
from compress.timing import time_interleaved  # noqa: E402
from compress.checkpoint import load_model  # noqa: E402
from compress.zoo import build_architecture, get_spec  # noqa: E402

CPU = torch.device("cpu")


def _bytes(model) -> int:
    return len(Q.torch_bytes(model))


def bench(title: str, model, spec, sets, runs: int, with_accuracy: bool, full: bool) -> None:
    model = model.eval()
    print(f"### {title}\n")
    if with_accuracy:
        print(f"Accuracy on {sets.n_eval} images from `{Path(sets.source).name}`; 128 other images calibrate.\n")
    configs = [("ORT FP32", Q.QuantConfig(mode="ort-fp32"))]
    if full:
        configs += [(f"ORT INT8, {v.label}", Q.QuantConfig(mode="ort-int8", observer=v.observer,
                                                          weight_bits=7 if v.reduce_range else 8))
                    for v in Q.ort_int8_variants("auto", vnni=False)]
    configs += [("ORT INT8, automatic choice", Q.QuantConfig(mode="ort-int8")),
                ("ORT INT8 + CLE", Q.QuantConfig(mode="ort-int8", equalize=True)),
                ("ORT INT8, 2 layers in float (measured rank)",
                 Q.QuantConfig(mode="ort-int8", keep_worst=2, keep_rank="accuracy")),
                ("ExecuTorch FP32", Q.QuantConfig(mode="et-fp32")),
                ("ExecuTorch INT8 (PT2E)", Q.QuantConfig(mode="et-int8")),
                ("PyTorch INT8, PT2E + Inductor", Q.QuantConfig(mode="pt2e")),
                ("PyTorch INT8, torch.ao FX", Q.QuantConfig(mode="static")),
                ("PyTorch INT8, torch.ao FX + CLE", Q.QuantConfig(mode="static", equalize=True))]
    rows = [("PyTorch FP32", "PyTorch eager FP32", model, _bytes(model), [])]
    for label, cfg in configs:
        t0 = time.perf_counter()
        q = Q.quantize(model, cfg, spec.input_size, sets.scoring)
        rows.append((label, q.runtime, q.model, q.size_bytes, q.notes + [f"made in {time.perf_counter() - t0:.0f} s"]))
    timing = time_interleaved([(r[0], r[2], CPU) for r in rows], spec.input_size, runs=runs, warmup=10)
    ref_preds: list = []
    base_acc = evaluate(model, sets.evaluation, CPU, predictions=ref_preds) if with_accuracy else None
    print("| path | size (MB) | × size | median (ms) | p90 (ms) | vs PyTorch FP32 | vs FP32, same runtime | "
          "top-1 % (95% CI) | Δ points | same top-1 as FP32 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    for label, runtime, m, size, n in rows:
        lat = timing.latency[label]
        vs_torch = timing.speedup("PyTorch FP32", label) if label != "PyTorch FP32" else None
        same = ("PyTorch FP32" if runtime.startswith("PyTorch") else
                "ExecuTorch FP32" if runtime.startswith("ExecuTorch") else "ORT FP32")
        vs_same = timing.speedup(same, label) if label != same else None
        acc = delta = agree = "–"
        if with_accuracy:
            preds: list = []
            a = base_acc if m is model else evaluate(m, sets.evaluation, CPU, predictions=preds)
            acc = f"{a.top1:.2f} ({a.ci95[0]:.1f}–{a.ci95[1]:.1f})"
            delta = f"{a.top1 - base_acc.top1:+.2f}"
            if m is not model:
                same_n = sum(p == r for p, r in zip(preds, ref_preds))
                agree = f"{100 * same_n / sets.n_eval:.1f}%"
        fmt = (lambda s: "–" if s is None else f"{s.ratio:.2f}× ({s.ci95[0]:.2f}–{s.ci95[1]:.2f})")
        print(f"| {label} | {size / 1e6:.2f} | ×{size / rows[0][3]:.3f} | {lat.median:.2f} | {lat.p90:.2f} | "
              f"{fmt(vs_torch)} | {fmt(vs_same)} | {acc} | {delta} | {agree} |", flush=True)
        if n:
            notes.append(f"- **{label}**: " + "; ".join(n))
    print("\nNotes the product attached to each result:\n")
    print("\n".join(notes) + "\n", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--imagenet", required=True)
    ap.add_argument("--cifar", default=None)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--models", default="efficientnet_lite0,resnet18_cifar10,mobilenet_v3_large,resnet18")
    ap.add_argument("--flush-denormal", action="store_true",
                    help="flush denormal floats to zero in PyTorch: an untrained mobilenet_v3_large's activations "
                         "decay into denormals, which PyTorch eager computes ~100x slower (1.9 s per image measured)")
    a = ap.parse_args()
    if a.flush_denormal:
        torch.set_flush_denormal(True)
        print("PyTorch flushes denormal floats to zero in this run (`torch.set_flush_denormal(True)`).\n")
    print(f"<!-- torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, "
          f"VNNI: {Q.cpu_has_vnni()} -->\n")
    print(f"Batch 1, CPU, {torch.get_num_threads()} threads, median and p90 of {a.runs} timed runs after 10 "
          "warm-up runs, every row of a table in one interleaved loop; speed-ups are medians of the per-round "
          "ratios with their 95% interval.\n")
    t0 = time.perf_counter()
    for name in a.models.split(","):
        if name == "resnet18_cifar10":
            if not a.cifar:
                continue
            c = load_model(name)
            sets = D.eval_sets(a.cifar, c.spec.preprocess.transform(), 10, name, limit=2000, n_scoring=128)
            bench(f"{name} (32×32, trained here)", c.model, c.spec, sets, a.runs, True, True)
        elif name == "efficientnet_lite0":
            lm = load_model(name)
            sets = D.eval_sets(a.imagenet, lm.spec.preprocess.transform(), 1000, name, limit=None, n_scoring=128)
            bench(f"{name} (224×224, ImageNet weights)", lm.model, lm.spec, sets, a.runs, True, True)
        else:
            spec = get_spec(name)
            sets = D.eval_sets(a.imagenet, spec.preprocess.transform(), 1000, name, limit=32, n_scoring=128)
            bench(f"{name} (224×224, untrained weights: timing and size only)",
                  build_architecture(name, 1000), spec, sets, a.runs, False, False)
    print(f"<!-- {time.perf_counter() - t0:.0f} s -->")


if __name__ == "__main__":
    main()
