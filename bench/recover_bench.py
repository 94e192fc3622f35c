"""Recovery benchmark: plain fine-tuning against knowledge distillation after pruning.

resnet18_cifar10 is pruned at each channel ratio (L2 criterion, only the classifier
protected, Torch-Pruning's default), then recovered for the same number of epochs with
the same optimiser, schedule and images by
  (a) fine-tuning on the labels (cross-entropy), and
  (b) knowledge distillation from the unpruned model (T, alpha below).
Top-1 is measured on the whole CIFAR-10 test split (10,000 images) with a 95% interval.
Prints Markdown; results live in docs/distillation.md.

    .venv/bin/python bench/recover_bench.py --cifar ../shared/data/cifar10-jpeg.tar.gz \
        --epochs 5 --train-limit 20000 > /tmp/distillation.md
"""
from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from compress import data as D  # noqa: E402
from compress import prune as P  # noqa: E402
from compress.distill import distill  # noqa: E402
from compress.train import TrainConfig, fit  # noqa: E402
from compress.measure import count_macs, evaluate  # noqa: E402
from compress.zoo import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cifar", required=True)
    ap.add_argument("--ratios", default="0.5,0.75")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train-limit", type=int, default=None, help="seeded subset of the 50,000 training images")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--T", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cpu = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    loaded = load_model("resnet18_cifar10")
    spec = loaded.spec
    mean, std = spec.preprocess.mean, spec.preprocess.std
    train_imgs = D.scan_folder(D.resolve_cifar10(a.cifar, "train"))
    train_imgs = train_imgs.subset(D.subset_indices(len(train_imgs), a.train_limit, 0))
    xtr, ytr = D.decode_to_tensor(train_imgs, 32)
    xte, yte = D.decode_to_tensor(D.scan_folder(D.resolve_cifar10(a.cifar, "test")), 32)
    test_b = D.TensorBatches(xte, yte, 500, mean, std)
    size = spec.input_size

    base_acc = evaluate(loaded.model, test_b, cpu)
    base_macs = count_macs(loaded.model, size)
    cfg = TrainConfig(epochs=a.epochs, lr=a.lr, optimizer="sgd", weight_decay=5e-4, schedule="cosine",
                      warmup_epochs=0.0, seed=0)
    print("## Recovering accuracy after pruning: fine-tuning against knowledge distillation\n")
    print(f"resnet18_cifar10, {len(xtr):,} CIFAR-10 training images (seeded subset, crop+flip "
          f"augmentation), {a.epochs} epochs, SGD (momentum 0.9, nesterov) lr {a.lr} cosine, weight "
          f"decay 5e-4, batch {a.batch}, every layer trained. KD: teacher = the unpruned model, "
          f"T = {a.T}, α = {a.alpha}. Top-1 on the {base_acc.n:,} CIFAR-10 test images. "
          f"Device {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}.\n")
    print(f"Unpruned baseline: **{base_acc.top1:.2f}%** (95% CI {base_acc.ci95[0]:.2f}–{base_acc.ci95[1]:.2f}), "
          f"{base_macs / 1e6:.1f} M MACs.\n")
    print("| channel ratio | MACs (M) | × fewer MACs | pruned, no recovery | recovery | top-1 after | 95% CI | vs baseline (points) | train samples/s | minutes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in [float(v) for v in a.ratios.split(",")]:
        pruned, _ = P.prune_structured(loaded.model, P.StructuredConfig(ratio=r, protected=("fc",)), size)
        macs = count_macs(pruned, size)
        raw = evaluate(pruned, test_b, cpu)
        for kind in ("fine-tune", "KD"):
            student = copy.deepcopy(pruned)
            train_b = D.TensorBatches(xtr, ytr, a.batch, mean, std, shuffle=True, augment=True, seed=0)
            t0 = time.perf_counter()
            if kind == "KD":
                res = distill(student, loaded.model, train_b, cfg, cpu, temperature=a.T, alpha=a.alpha)
            else:
                res = fit(student, train_b, cfg, cpu)
            minutes = (time.perf_counter() - t0) / 60
            acc = evaluate(student, test_b, cpu)
            sps = sum(h.samples_per_s for h in res.history) / len(res.history)
            print(f"| {r} | {macs / 1e6:.1f} | {base_macs / macs:.1f}× | {raw.top1:.2f}% | {kind} | "
                  f"**{acc.top1:.2f}%** | {acc.ci95[0]:.2f}–{acc.ci95[1]:.2f} | {acc.top1 - base_acc.top1:+.2f} | "
                  f"{sps:.0f} | {minutes:.1f} |", flush=True)
    print()


if __name__ == "__main__":
    main()
