"""Profile every zoo model that is available offline and print a Markdown table.

    .venv/bin/python bench/profile_models.py --imagenet PATH/imagenet-val --cifar PATH/cifar10-jpeg.tar.gz

Results are recorded in docs/profiles.md with the date and machine.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from compress import data as D  # noqa: E402
from compress.errors import CompressError  # noqa: E402
from compress.measure import profile_model  # noqa: E402
from compress.checkpoint import load_model  # noqa: E402
from compress.zoo import ZOO  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--imagenet", default=None)
    ap.add_argument("--cifar", default=None)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads\n")
    print("| model | params | size (MB) | gzip (MB) | MACs (G) | latency median / p90 (ms, batch 1) | top-1 (95% CI, n) | top-5 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, spec in ZOO.items():
        try:
            loaded = load_model(name, download=False)
        except CompressError as e:
            print(f"| {name} | not available offline: {str(e)[:60]}… | | | | | | |")
            continue
        data = args_data = a.cifar if spec.num_classes == 10 else a.imagenet
        batches = None
        if args_data:
            images = D.open_labelled(data)
            batches, _ = D.eval_loader(images, spec.preprocess.transform(), limit=a.limit, workers=0)
        p = profile_model(loaded.model, name, spec.input_size, torch.device("cpu"), runs=a.runs,
                          eval_batches=batches)
        acc = p.accuracy
        acc_s = "-" if acc is None else f"{acc.top1:.2f}% ({acc.ci95[0]:.1f}–{acc.ci95[1]:.1f}, n={acc.n})"
        top5 = "-" if acc is None or acc.top5 is None else f"{acc.top5:.2f}%"
        print(f"| {name} | {p.params:,} | {p.size_bytes / 1e6:.2f} | {p.size_gzip_bytes / 1e6:.2f} | "
              f"{p.macs / 1e9:.3f} | {p.latency_ms.median:.2f} / {p.latency_ms.p90:.2f} | {acc_s} | {top5} |",
              flush=True)


if __name__ == "__main__":
    main()
