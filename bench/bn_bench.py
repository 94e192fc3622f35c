"""BatchNorm re-estimation after structured pruning: top-1 as pruned and after
re-estimating the BN statistics on N scoring photos (no gradient step), with the seconds
it took. Prints Markdown; results live in docs/pruning.md.

    .venv/bin/python bench/bn_bench.py --cifar ../shared/data/cifar10-jpeg.tar.gz \
        --imagenet ../shared/data/imagenet-val > /tmp/bn.md

Evaluation images and BN photos never overlap: BN uses the scoring pool that
data.eval_sets sets apart (as the pipeline does).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from compress import data as D  # noqa: E402
from compress import prune as P  # noqa: E402
from compress.measure import count_macs, evaluate  # noqa: E402
from compress.checkpoint import load_model  # noqa: E402

CPU = torch.device("cpu")


def table(name: str, data: str, limit, rows) -> None:
    loaded = load_model(name)
    spec = loaded.spec
    sets = D.eval_sets(data, spec.preprocess.transform(), spec.num_classes, spec.name, limit=limit, seed=0,
                       categories=spec.categories)
    base = evaluate(loaded.model, sets.evaluation, CPU)
    print(f"## {name}\n")
    print(f"Top-1 on {sets.n_eval} evaluation images ({data}, seed 0); unpruned: **{base.top1:.2f}%** "
          f"({base.ci95[0]:.1f}–{base.ci95[1]:.1f}). BN photos from the {sets.pool_size}-image scoring pool. "
          f"CPU, {torch.get_num_threads()} threads.\n")
    print("| ratio | criterion | scope | protected | × MACs | BN photos | BN form | top-1 (%) | vs unpruned | 95% interval | BN seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    sets.scoring_batches(max(n for row in rows for n in row[3]))      # read the photos before timing
    base_macs = count_macs(loaded.model, spec.input_size)
    for ratio, crit, protected, bns, scope in rows:
        if ratio:
            cfg = P.StructuredConfig(ratio=ratio, criterion=crit, protected=protected, scope=scope)
            pruned, _ = P.prune_structured(loaded.model, cfg, spec.input_size, batches=sets.scoring_batches(64))
        else:                           # ratio 0: what re-estimation alone does to the unpruned model
            pruned = loaded.model
        macs = count_macs(pruned, spec.input_size) / base_macs
        # from scratch (the statistics replaced), and the default difference form against the
        # unpruned model (see prune.reestimate_batchnorm)
        for n, form in [(n, f) for n in bns for f in (("–",) if not n else ("scratch", "difference"))]:
            t0 = time.perf_counter()
            ref = loaded.model if form == "difference" else None
            m, used = (P.with_reestimated_batchnorm(pruned, sets.scoring_batches(n), n, reference=ref)
                       if n else (pruned, 0))
            secs = time.perf_counter() - t0
            acc = evaluate(m, sets.evaluation, CPU)
            label = ("default: " + _describe(P.default_protected(loaded.model)) if protected is None
                     else (", ".join(protected) or "none (output only)"))
            print(f"| {ratio} | {crit if ratio else '–'} | {scope if ratio else '–'} | {label if ratio else '–'} | "
                  f"×{macs:.2f} | {used} | {form} | {acc.top1:.2f} | {acc.top1 - base.top1:+.2f} | "
                  f"{acc.ci95[0]:.1f}–{acc.ci95[1]:.1f} | {secs:.1f} |", flush=True)
    print()


def _describe(names) -> str:
    proj = [n for n in names if n.endswith("project_conv") or ".block." in n]
    rest = [n for n in names if n not in proj]
    return ", ".join(rest) + (f" + {len(proj)} projection convs" if proj else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cifar")
    ap.add_argument("--imagenet")
    ap.add_argument("--levers", action="store_true",
                    help="efficientnet_lite0 at ratio 0.1 only: every criterion, uniform and global scope, "
                         "default protection (what the depthwise default was chosen from)")
    a = ap.parse_args()
    if a.cifar:
        rows = [(0, "l1", None, (128, 512), "uniform")]
        rows += [(r, "l1", prot, (0, 128, 512), "uniform") for r in (0.3, 0.5, 0.7) for prot in (None, ())]
        table("resnet18_cifar10", a.cifar, 2000, rows)
    if a.imagenet and a.levers:
        rows = [(0.1, c, None, (162,), scope) for scope in ("uniform", "global")
                for c in ("taylor", "activation", "bn_scale", "l1", "l2", "fpgm")]
        table("efficientnet_lite0", a.imagenet, None, rows)
    elif a.imagenet:
        rows = [(0, "l1", None, (162,), "uniform")]
        rows += [(r, c, prot, (0, 162), "uniform") for r in (0.1, 0.25, 0.5) for prot in (("_conv_stem",), None)
                 for c in ("l1", "taylor")]
        table("efficientnet_lite0", a.imagenet, None, rows)


if __name__ == "__main__":
    main()
