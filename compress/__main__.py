"""Command line: ``python -m compress {profile,train-baseline,models}``.

Errors a user can cause print one plain line to stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compress.errors import CompressError


def _cmd_train_baseline(a: argparse.Namespace) -> int:
    from compress.distill import train_baseline_cifar10
    if a.model != "resnet18_cifar10":
        raise CompressError(f"train-baseline knows only resnet18_cifar10, not {a.model!r}.")

    def log(ev):
        if ev.stage == "epoch" or ev.stage == "data" or (ev.stage == "train" and a.verbose):
            print(f"[{ev.stage}] {ev.message}", flush=True)
    side = train_baseline_cifar10(a.data, Path(a.out), a.epochs, batch_size=a.batch, lr=a.lr,
                                  seed=a.seed, device=a.device,
                                  workdir=Path(a.workdir) if a.workdir else None,
                                  resume=a.resume, on_progress=log)
    print(json.dumps(side["test_accuracy"]))
    return 0


def _fmt_bytes(n) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def _cmd_profile(a: argparse.Namespace) -> int:
    from compress import data as D
    from compress.device import resolve_device
    from compress.measure import check_labels_fit, profile_model
    from compress.zoo import load_checkpoint, load_model

    device = resolve_device(a.device)
    if a.checkpoint:
        loaded = load_checkpoint(a.checkpoint, arch=a.arch, num_classes=a.num_classes,
                                 trust_pickle=a.trust_pickle, like=a.model)
    else:
        loaded = load_model(a.model or "resnet18_cifar10", weights=a.weights)
    spec = loaded.spec
    batches = total = None
    if a.data:
        images = D.open_labelled(a.data)
        check_labels_fit(images.labels or [], spec.num_classes, spec.name)
        batches, sub = D.eval_loader(images, spec.preprocess.transform(), limit=a.limit,
                                     seed=a.seed, batch_size=max(a.batch, 32))
        total = len(sub)
    prof = profile_model(loaded.model, spec.name, spec.input_size, device, batch=a.batch,
                         runs=a.runs, warmup=a.warmup, threads=a.threads, eval_batches=batches,
                         eval_total=total, weights=loaded.weights_note)
    out = prof.to_json()
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    lat = prof.latency_ms
    rows = [("model", prof.model), ("weights", prof.weights),
            ("params", f"{prof.params:,}"), ("nonzero params", f"{prof.nonzero_params:,}"),
            ("size (torch.save)", _fmt_bytes(prof.size_bytes)),
            ("size (gzip)", _fmt_bytes(prof.size_gzip_bytes)),
            ("MACs", "-" if prof.macs is None else f"{prof.macs / 1e9:.3f} G"),
            ("latency median / p90", f"{lat.median:.2f} / {lat.p90:.2f} ms "
             f"(batch {lat.batch}, {lat.device}, {lat.threads} threads, {lat.runs} runs)"),
            ("peak activation memory", _fmt_bytes(prof.peak_memory_bytes))]
    if prof.accuracy:
        acc = prof.accuracy
        rows.append(("top-1", f"{acc.top1:.2f}% (95% CI {acc.ci95[0]:.1f}-{acc.ci95[1]:.1f}, n={acc.n})"))
        if acc.top5 is not None:
            rows.append(("top-5", f"{acc.top5:.2f}%"))
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    return 0


def _cmd_models(a: argparse.Namespace) -> int:
    from compress.zoo import ZOO
    for spec in ZOO.values():
        print(f"{spec.name:<20} {spec.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compress", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    pr = sub.add_parser("profile", help="measure a model: params, bytes, MACs, latency, accuracy")
    pr.add_argument("--model", default=None, help="zoo entry (see `models`)")
    pr.add_argument("--weights", default=None, help="weights file for the zoo entry")
    pr.add_argument("--checkpoint", default=None, help="your own checkpoint instead of a zoo entry")
    pr.add_argument("--arch", default=None, help="architecture of --checkpoint (default: guessed)")
    pr.add_argument("--num-classes", type=int, default=None)
    pr.add_argument("--trust-pickle", action="store_true",
                    help="allow a full pickled model (runs code from the file)")
    pr.add_argument("--data", default=None, help="labelled folder or CIFAR-10 tarball/folder")
    pr.add_argument("--limit", type=int, default=None, help="evaluate on N images (seeded)")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    pr.add_argument("--batch", type=int, default=1)
    pr.add_argument("--runs", type=int, default=50)
    pr.add_argument("--warmup", type=int, default=10)
    pr.add_argument("--threads", type=int, default=None)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=_cmd_profile)

    mo = sub.add_parser("models", help="list the model zoo")
    mo.set_defaults(func=_cmd_models)

    t = sub.add_parser("train-baseline", help="train the project's CIFAR-10 ResNet18")
    t.add_argument("model")
    t.add_argument("--data", required=True, help="cifar10-jpeg.tar.gz or a CIFAR-10 folder")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "assets"))
    t.add_argument("--workdir", default=None, help="per-epoch checkpoints (for --resume)")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--verbose", action="store_true")
    t.set_defaults(func=_cmd_train_baseline)

    a = p.parse_args(argv)
    try:
        return a.func(a)
    except CompressError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
