"""Recovery benchmark: how close a pruned resnet18_cifar10 gets back to the unpruned model.

resnet18_cifar10 is pruned at each channel ratio (L1 criterion, the product's default; the layers in --protect
kept whole), BatchNorm statistics are re-estimated on --bn-images *training* photos
(never test photos), then the model is trained back through the engine's ``recover``
(the same code as the pipeline) for --epochs over the CIFAR-10 training images by
  * ``finetune``: cross-entropy on the labels, and/or
  * ``distill``: knowledge distillation from the unpruned model (T, alpha, and optional
    attention transfer on the stage outputs with weight --attention).
Settings not given on the command line (--lr, --batch, --warmup, --T, --alpha, --attention,
--holdout) are chosen by the product's one recovery recipe (compress/recovery.py) from the
number of training photos, exactly as the pipeline does; the recipe holds a slice of the
training photos out and keeps the best epoch on it. Each method runs once per seed (the seed draws the shuffling and augmentation). Top-1 is
measured on the whole CIFAR-10 test split (10,000 images) with a 95% interval, and the
mean over seeds is printed. Prints Markdown (results live in docs/distillation.md); with
--jsonl every finished row is also appended to that file as it ends.

    # issue 26's figures: the product's own recipe, given only epochs (ratio 0.6, stem protected: 3.5x fewer MACs)
    .venv/bin/python bench/recover_bench.py --cifar ../shared/data/cifar10-jpeg.tar.gz \
        --ratios 0.6 --protect conv1,fc --methods distill --seeds 0,1 --epochs 15
    .venv/bin/python bench/recover_bench.py --cifar ../shared/data/cifar10-jpeg.tar.gz \
        --ratios 0.6 --protect conv1,fc --methods distill --epochs 1 --train-limit 2000
    # issue 14's figure (older rows were run without a held-out slice: add --holdout 0): ratio 0.5 with only the classifier protected (3.7x fewer MACs), 2 seeds
    .venv/bin/python bench/recover_bench.py --cifar ../shared/data/cifar10-jpeg.tar.gz \\
        --ratios 0.5 --methods distill --seeds 0,1 --lr 0.05 --T 2 --alpha 0.5 --batch 64
    # the original comparison (fine-tuning against KD at 0.5 and 0.75, no re-estimation)
    .venv/bin/python bench/recover_bench.py --cifar ../shared/data/cifar10-jpeg.tar.gz \\
        --bn-images 0 --T 4 --alpha 0.9 --batch 128
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from compress import data as D  # noqa: E402
from compress import prune as P  # noqa: E402
from compress import recovery as RV  # noqa: E402
from compress.distill import RecoverConfig, recover  # noqa: E402
from compress.measure import count_macs, evaluate  # noqa: E402
from compress.checkpoint import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar", required=True)
    ap.add_argument("--ratios", default="0.5,0.75")
    ap.add_argument("--methods", default="finetune,distill", help="comma-separated: finetune, distill")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds; the mean is reported")
    ap.add_argument("--protect", default="fc", help="layers kept whole, comma-separated ('conv1,fc' = stem too)")
    ap.add_argument("--criterion", default="l1", help="channel importance (compress.prune.CRITERIA)")
    ap.add_argument("--scope", default="uniform", help="uniform or global")
    ap.add_argument("--bn-images", type=int, default=512,
                    help="training photos BatchNorm statistics are re-estimated on after pruning (0 = off)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train-limit", type=int, default=None, help="seeded subset of the 50,000 training images")
    ap.add_argument("--lr", type=float, default=None, help="default: the recovery recipe's")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up epochs before the cosine decay")
    ap.add_argument("--T", type=float, default=None)
    ap.add_argument("--alpha", type=float, default=None)
    ap.add_argument("--attention", type=float, default=None, help="attention-transfer weight (0 = off)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--holdout", type=int, default=None, help="training photos held out to keep the best epoch")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--jsonl", default=None, help="append each finished row to this file")
    ap.add_argument("--save", metavar="DIR",
                    help="write each recovered model there (the project checkpoint, float16 weights) with a "
                         "sidecar JSON of how it was made and what it measured")
    ap.add_argument("--curve", action="store_true",
                    help="also measure the test images after every epoch (the top-1 curve; never used to choose)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    loaded = load_model("resnet18_cifar10")
    spec = loaded.spec
    mean, std = spec.preprocess.mean, spec.preprocess.std
    train_imgs = D.scan_folder(D.resolve_cifar10(a.cifar, "train"))
    train_imgs = train_imgs.subset(D.subset_indices(len(train_imgs), a.train_limit, 0))
    xtr, ytr = D.decode_to_tensor(train_imgs, 32)
    xte, yte = D.decode_to_tensor(D.scan_folder(D.resolve_cifar10(a.cifar, "test")), 32)
    test_b = D.TensorBatches(xte, yte, 500, mean, std)
    size = spec.input_size
    protect = tuple(n for n in a.protect.split(",") if n)
    seeds = [int(s) for s in a.seeds.split(",")]

    base_acc = evaluate(loaded.model, test_b, device)
    base_macs = count_macs(loaded.model, size)
    print("## Recovering accuracy after pruning\n")
    print(f"resnet18_cifar10, {a.criterion} criterion, {a.scope} scope, protected: {', '.join(protect) or 'nothing'}; BatchNorm re-estimated on "
          f"{a.bn_images} training photos after pruning; {len(xtr):,} CIFAR-10 training images (crop+flip "
          f"augmentation), {a.epochs} epochs, SGD (momentum 0.9, nesterov), cosine to zero after warm-up, weight "
          f"decay 5e-4, every layer trained; KD teacher = the unpruned model. Settings given: lr {a.lr}, batch "
          f"{a.batch}, warm-up {a.warmup}, T {a.T}, α {a.alpha}, attention {a.attention}, held out {a.holdout} "
          f"(None: the recovery recipe's, in the plan column). Top-1 on "
          f"the {base_acc.n:,} CIFAR-10 test images. Device {device}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}.\n")
    print(f"Unpruned baseline: **{base_acc.top1:.2f}%** (95% CI {base_acc.ci95[0]:.2f}–{base_acc.ci95[1]:.2f}), "
          f"{base_macs / 1e6:.1f} M MACs.\n")
    print("| channel ratio | × fewer MACs | pruned | after BN re-estimation | recovery | plan | seed | top-1 after "
          "| 95% CI | vs baseline (points) | best epoch | train images/s | minutes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    bn_b = D.TensorBatches(xtr, ytr, 64, mean, std, shuffle=True, seed=12345)
    for r in [float(v) for v in a.ratios.split(",")]:
        cfg = P.StructuredConfig(ratio=r, protected=protect, bn_images=a.bn_images, criterion=a.criterion,
                                 scope=a.scope)
        score_b = D.TensorBatches(xtr[-640:], ytr[-640:], 64, mean, std)     # data criteria: training photos
        pruned, _ = P.prune_structured(loaded.model, cfg, size, batches=score_b,
                                       bn_batches=bn_b if a.bn_images else None)
        macs = count_macs(pruned, size)
        as_pruned, _ = P.prune_structured(loaded.model, replace(cfg, bn_images=0), size, batches=score_b)
        raw = evaluate(as_pruned, test_b, device)
        bn = evaluate(pruned, test_b, device) if a.bn_images else None
        for method in a.methods.split(","):
            scores = []
            for seed in seeds:
                rc = RecoverConfig(method=method, epochs=a.epochs, lr=a.lr, batch_size=a.batch, unfreeze="all",
                                   temperature=a.T, alpha=a.alpha, seed=seed, attention=a.attention,
                                   warmup_epochs=a.warmup, holdout=a.holdout)
                plan = RV.plan(rc, len(xtr), labelled=True)
                rc = plan.config
                order = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed + 1))
                held, kept = order[:plan.holdout], order[plan.holdout:]
                train_b = D.TensorBatches(xtr[kept], ytr[kept], rc.batch_size, mean, std, shuffle=True, augment=True,
                                          seed=seed)
                held_b = D.TensorBatches(xtr[held], ytr[held], 500, mean, std) if plan.holdout else None
                t0 = time.perf_counter()
                student, res = recover(pruned, loaded.model, rc, train_b, device, input_size=size,
                                       holdout_batches=held_b, val_batches=test_b if a.curve else None)
                how = (f"batch {rc.batch_size}, lr {rc.lr:g}, warm-up {rc.warmup_epochs:g}, T {rc.temperature:g}, "
                       f"α {rc.alpha:g}, att. {rc.attention:g}, {plan.holdout} held out")
                minutes = (time.perf_counter() - t0) / 60
                acc = evaluate(student, test_b, device)
                scores.append(acc.top1)
                sps = sum(h.samples_per_s for h in res.history) / len(res.history)
                print(f"| {r} | {base_macs / macs:.2f}× | {raw.top1:.2f}% | "
                      f"{f'{bn.top1:.2f}%' if bn else '–'} | {method} | {how} | {seed} | **{acc.top1:.2f}%** | "
                      f"{acc.ci95[0]:.2f}–{acc.ci95[1]:.2f} | {acc.top1 - base_acc.top1:+.2f} | {res.best_epoch} | "
                      f"{sps:.0f} | "
                      f"{minutes:.1f} |", flush=True)
                if a.jsonl:
                    with open(a.jsonl, "a") as f:
                        f.write(json.dumps({"ratio": r, "protect": protect, "macs_reduction": base_macs / macs,
                                            "method": method, "seed": seed, "config": vars(a),
                                            "baseline": base_acc.top1, "pruned": raw.top1,
                                            "bn": bn.top1 if bn else None, "top1": acc.top1,
                                            "ci95": list(acc.ci95), "n": acc.n, "minutes": minutes,
                                            "plan": plan.to_json(), "best_epoch": res.best_epoch,
                                            "start_held_out": res.start_score,
                                            "epoch_held_out": [h.held_out for h in res.history],
                                            "epoch_test_top1": [h.val_acc for h in res.history],
                                            "epoch_losses": [h.train_loss for h in res.history]}) + "\n")
                if a.save:
                    _save(a.save, student, spec, cfg, rc, seed, {
                        "command": "bench/recover_bench.py " + " ".join(sys.argv[1:]),
                        "training_data": f"CIFAR-10 training split ({Path(a.cifar).name})",
                        "training_photos": len(kept), "held_out": plan.holdout, "best_epoch": res.best_epoch,
                        "minutes": round(minutes, 1), "macs_reduction": round(base_macs / macs, 2),
                        "measured_when_made": {"top1": acc.top1, "ci95": list(acc.ci95), "n": acc.n,
                                               "baseline_top1": base_acc.top1,
                                               "data": "CIFAR-10 test split"},
                        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"})
            if len(scores) > 1:
                m = statistics.mean(scores)
                print(f"| {r} | | | | {method} | | mean of {len(scores)} | **{m:.2f}%** | | "
                      f"**{m - base_acc.top1:+.2f}** | | | |", flush=True)
    print()


def _save(folder: str, student, spec, prune_cfg, rc, seed: int, made: dict) -> None:
    """The recovered model as the project checkpoint (float16 weights) and a sidecar JSON:
    the recipe steps that made it (prune, recover) and the figures measured then."""
    from dataclasses import asdict
    from compress.checkpoint import save_artifact
    from compress.zoo import LoadedModel
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{spec.name}_p{prune_cfg.ratio:g}_{rc.method}{rc.epochs}_s{seed}"
    save_artifact(LoadedModel(student.cpu().eval(), spec, "recovered"), out / f"{stem}.pt",
                  meta={"made": made}, half=True)
    sidecar = {"file": f"{stem}.pt", "model": spec.name, "bytes": (out / f"{stem}.pt").stat().st_size,
               "dtype": "float16 weights (measured in float32)",
               "recipe": {"prune": asdict(prune_cfg), "recover": asdict(rc)}, **made}
    (out / f"{stem}.json").write_text(json.dumps(sidecar, indent=2, default=list))
    print(f"<!-- saved {out / stem}.pt ({sidecar['bytes']:,} bytes) -->", flush=True)


if __name__ == "__main__":
    main()
