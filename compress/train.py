"""The one training loop: baseline training, fine-tuning, knowledge distillation and QAT
all call :func:`fit`.

``fit`` takes a model, an iterable of training batches and an optional evaluation
iterable, and reports progress through ``on_progress``. It checkpoints every epoch to
``workdir/last.pt`` and resumes from it when asked, so a long CPU run can be stopped
and continued.

Under ``torchrun`` (see :mod:`compress.distributed`) the same loop trains a
DistributedDataParallel copy: each rank's batches are its shard, gradients are averaged,
the epoch's loss/accuracy/samples are summed over ranks, and only rank 0 evaluates,
reports and writes checkpoints.

Also here: the CIFAR-10 baseline trainer, the one-step timer behind time estimates and
the software versions every run records.
"""
from __future__ import annotations

import copy
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from compress import data as D
from compress import distributed as dist
from compress.device import resolve_device
from compress.zoo import ZOO, build_architecture
from compress.errors import CompressError
from compress.measure import evaluate
from compress.progress import Cancel, Cancelled, OnProgress, emit  # noqa: F401


class TrainError(CompressError):
    """A training request that cannot run as asked (frozen model, out of memory, bad batch)."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    lr: float = 0.1
    optimizer: str = "sgd"           # "sgd" (momentum 0.9, nesterov) or "adamw"
    weight_decay: float = 5e-4
    schedule: str = "cosine"         # "cosine" or "step" (x0.1 at 50% and 75%)
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    seed: int = 0
    amp: bool = True                 # CUDA only: autocast fp16/bf16
    channels_last: bool = True


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_acc: Optional[float]     # None when the photos have no labels
    val_acc: Optional[float]
    seconds: float
    samples_per_s: float
    lr: float
    held_out: Optional[float] = None   # the score that chooses the best epoch (see fit's ``select``)


@dataclass
class TrainResult:
    history: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0
    start_score: Optional[float] = None   # ``select``'s score before any training
    best_epoch: Optional[int] = None      # the epoch whose weights were kept (0: the start)


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(cfg.warmup_epochs * steps_per_epoch)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "step":
            frac = step / total
            return 1.0 if frac < 0.5 else (0.1 if frac < 0.75 else 0.01)
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]   # no weight decay on BN and biases
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


@torch.enable_grad()
def fit(model: nn.Module, train_batches: Iterable, cfg: TrainConfig, device: torch.device,
        val_batches: Optional[Iterable] = None, on_progress: Optional[OnProgress] = None,
        cancel: Optional[Cancel] = None, workdir: Optional[Path] = None, resume: bool = False,
        loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = None,
        select: Optional[Callable[[nn.Module], float]] = None) -> TrainResult:
    """Train ``model`` in place for ``cfg.epochs`` epochs.

    ``loss_fn(logits, labels, inputs)`` overrides the default cross-entropy (distillation
    passes its KD loss here). ``cancel.is_set()`` is checked every step. ``select(model)``
    scores the model (higher is better) before training and after every epoch, on photos
    kept apart from training; the best-scoring weights, the start's included, are the
    ones left in ``model``, so training never returns a worse model by that score.
    """
    torch.manual_seed(cfg.seed)
    model.to(device)
    if cfg.channels_last:  # measured faster for convs on CPU (oneDNN) as well as CUDA
        model.to(memory_format=torch.channels_last)
    w = dist.world()
    if not w.main:
        on_progress = None                  # one rank reports; the others train quietly
    train_model = model
    if w.size > 1:
        from torch.nn.parallel import DistributedDataParallel
        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if not any(p.requires_grad for p in model.parameters()):
        raise TrainError("Nothing to train: every parameter of this model is frozen.")
    opt = make_optimizer(model, cfg)
    steps_per_epoch = len(train_batches)  # type: ignore[arg-type]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=(device.type == "cuda" and cfg.amp
                                                   and not torch.cuda.is_bf16_supported()))
    result = TrainResult()
    start_epoch = 0
    ckpt = Path(workdir) / "last.pt" if workdir else None
    if resume and ckpt and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"])
        result.history = [EpochRecord(**r) for r in json.loads(state["history_json"])]
        emit(on_progress, "train", start_epoch / cfg.epochs, f"resumed after epoch {start_epoch}")
    ce = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    loss_fn = loss_fn or (lambda logits, y, x: ce(logits, y))
    t_start = time.perf_counter()
    best = None
    if select is not None and w.main:
        result.start_score = float(select(model))
        best = (result.start_score, 0, copy.deepcopy(model.state_dict()))
    report_every = max(1, min(20, steps_per_epoch // 25))   # about 25 points per epoch for live curves
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        sampler = getattr(train_batches, "sampler", None)
        if hasattr(sampler, "set_epoch"):   # DistributedSampler: a new shuffle each epoch
            sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        loss_sum = correct = seen = labelled = 0.0
        for step, (x, y) in enumerate(train_batches):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled in epoch {epoch + 1}, step {step}")
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cfg.channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            try:
                with _autocast(device, cfg.amp):
                    logits = train_model(x)
                    loss = loss_fn(logits, y, x)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
            except torch.cuda.OutOfMemoryError:
                opt.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                raise TrainError(f"The GPU ran out of memory at batch size {x.shape[0]}: choose a "
                                   "smaller batch (half is a good first try) and start again.") from None
            scaler.step(opt)
            scaler.update()
            sched.step()
            bs = x.shape[0]
            loss_sum += float(loss.detach()) * bs
            seen += bs
            known = y >= 0                  # unlabelled photos (label -1) have no accuracy
            if known.any():
                labelled += float(known.sum())
                correct += float((logits.detach().argmax(1)[known] == y[known]).sum())
            if step % report_every == 0 or step == steps_per_epoch - 1:
                elapsed = time.perf_counter() - t0
                done = epoch - start_epoch + (step + 1) / steps_per_epoch
                total_left = (cfg.epochs - start_epoch - done) * (elapsed / ((step + 1) / steps_per_epoch))
                emit(on_progress, "train", (epoch + (step + 1) / steps_per_epoch) / cfg.epochs,
                     f"epoch {epoch + 1}/{cfg.epochs} step {step + 1}/{steps_per_epoch}",
                     epoch=epoch + 1, epochs=cfg.epochs, step=step + 1, steps=steps_per_epoch,
                     loss=loss_sum / seen, train_acc=100 * correct / labelled if labelled else None,
                     samples_per_s=seen / elapsed, eta_s=total_left)
        loss_sum, correct, seen, labelled = dist.all_reduce_sum([loss_sum, correct, seen, labelled], device)
        val_acc = None
        if val_batches is not None:
            if w.main:
                val_acc = evaluate(model, val_batches, device).top1
            val_acc = dist.broadcast_value(val_acc, device)
        secs = time.perf_counter() - t0
        held = float(select(model)) if best is not None else None
        if held is not None and held > best[0]:
            best = (held, epoch + 1, copy.deepcopy(model.state_dict()))
        rec = EpochRecord(epoch + 1, loss_sum / seen, 100 * correct / labelled if labelled else None,
                          val_acc, secs, seen / secs, opt.param_groups[0]["lr"], held)
        result.history.append(rec)
        emit(on_progress, "epoch", (epoch + 1) / cfg.epochs,
             f"epoch {epoch + 1}/{cfg.epochs}: loss {rec.train_loss:.3f}"
             + (f", train {rec.train_acc:.1f}%" if rec.train_acc is not None else "")
             + (f", val {val_acc:.2f}%" if val_acc is not None else "") + f" ({secs:.0f} s)",
             epochs=cfg.epochs, **asdict(rec))
        if ckpt and w.main:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "epoch": epoch + 1,
                        "history_json": json.dumps([asdict(r) for r in result.history])}, ckpt)
    result.seconds = time.perf_counter() - t_start
    if best is not None:
        model.load_state_dict(best[2])
        result.best_epoch = best[1]
    if cfg.channels_last:
        # channels-last was a training speed-up; the model handed back has the standard layout
        # (ExecuTorch's ChannelsLastTaggedReshapePass, for one, rejects channels-last weights)
        model.to(memory_format=torch.contiguous_format)
    model.eval()
    return result


@torch.enable_grad()    # works even when called under torch.no_grad()
def measure_step_seconds(student: nn.Module, input_size: tuple[int, int, int], batch_size: int,
                         device: torch.device, teacher: Optional[nn.Module] = None,
                         steps: int = 2) -> float:
    """Median seconds of one training step (forward, backward, update; plus the teacher's
    forward when distilling) on random images, after one warm-up step. Used to tell the
    user how long a run will take before it starts; the models are not changed."""
    import statistics
    model = copy.deepcopy(student).to(device).train()
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    t_model = None if teacher is None else teacher.to(device).eval()
    x = torch.randn(batch_size, *input_size, device=device)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        out = model(x)
        if t_model is not None:
            with torch.no_grad():
                t_out = t_model(x)
            out = out + 0 * t_out
        loss = out.float().logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def software_versions() -> dict[str, str]:
    import torchvision
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "platform": platform.platform()}


def train_baseline_cifar10(data: str, out_dir: Path, epochs: int, batch_size: int = 128,
                           lr: float = 0.1, seed: int = 0, device: Optional[str] = None,
                           workdir: Optional[Path] = None, resume: bool = False,
                           on_progress: Optional[OnProgress] = None,
                           train_limit: Optional[int] = None) -> dict:
    """Train resnet18_cifar10 from scratch and write assets/resnet18_cifar10.{pt,json}.

    The shipped checkpoint is an fp16 state_dict; the accuracy in the sidecar JSON is
    measured on the full test split *after* rounding to fp16 and loading back, i.e. it is
    the accuracy users of the shipped file get.

    Under ``torchrun --nproc_per_node N`` each of the N processes trains on its shard with
    ``batch_size / N`` images per step (so the recipe is the same at any N); rank 0 writes
    the files and returns the sidecar, the other ranks return an empty dict.
    """

    spec = ZOO["resnet18_cifar10"]
    w, dev = dist.init_from_env(resolve_device(device))
    if batch_size % w.size:
        raise TrainError(f"The batch size {batch_size} must divide evenly over {w.size} processes.")
    train_dir, test_dir = D.resolve_cifar10(data, "train"), D.resolve_cifar10(data, "test")
    if not w.main:
        on_progress = None
    emit(on_progress, "data", 0.0, "decoding CIFAR-10 images (cached after the first run)")
    train_images = D.scan_folder(train_dir)
    train_images = train_images.subset(D.subset_indices(len(train_images), train_limit, seed))
    xtr, ytr = D.decode_to_tensor(train_images, 32)
    xte, yte = D.decode_to_tensor(D.scan_folder(test_dir), 32)
    mean, std = spec.preprocess.mean, spec.preprocess.std
    train_b = D.TensorBatches(xtr, ytr, batch_size // w.size, mean, std, shuffle=True, augment=True,
                              seed=seed, rank=w.rank, world_size=w.size)
    test_b = D.TensorBatches(xte, yte, 500, mean, std)
    model = build_architecture(spec.arch, spec.num_classes)
    cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed, weight_decay=5e-4, label_smoothing=0.1,
                      warmup_epochs=1.0, schedule="cosine")
    res = fit(model, train_b, cfg, dev, val_batches=test_b, on_progress=on_progress,
              workdir=workdir, resume=resume)
    if not w.main:
        return {}
    model.cpu().eval()
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    pt = out_dir / "resnet18_cifar10.pt"
    torch.save(half, pt)
    check = build_architecture(spec.arch, spec.num_classes)
    check.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in
                           torch.load(pt, weights_only=True).items()})
    acc = evaluate(check, test_b, torch.device("cpu"))
    sidecar = {
        "model": "resnet18_cifar10", "architecture": "torchvision resnet18, 10-class head, 32x32 input",
        "file": pt.name, "bytes": pt.stat().st_size, "dtype": "float16 state_dict",
        "data": {"train": f"CIFAR-10 train split ({len(xtr):,} JPEG images, cifar10-jpeg.tar.gz)",
                 "test": "CIFAR-10 test split (10,000 JPEG images)"},
        "training": {**asdict(cfg), "batch_size": batch_size,
                     "augmentation": "4-px padded random crop + horizontal flip",
                     "device": str(dev), "processes": w.size, "seconds": round(res.seconds, 1)},
        "history": [asdict(r) for r in res.history],
        "test_accuracy": {"top1": round(acc.top1, 2), "n": acc.n,
                          "ci95": [round(acc.ci95[0], 2), round(acc.ci95[1], 2)],
                          "measured_on": "the shipped fp16 file, loaded back to fp32, CPU"},
        "software": software_versions(),
        "command": ("" if w.size == 1 else f"torchrun --nproc_per_node {w.size} -m compress ")
                   + ("python -m compress " if w.size == 1 else "")
                   + f"train-baseline resnet18_cifar10 --data DATA --epochs {epochs} "
                   f"--batch {batch_size} --lr {lr} --seed {seed}"
                   + (f" --train-limit {train_limit}" if train_limit else ""),
    }
    (out_dir / "resnet18_cifar10.json").write_text(json.dumps(sidecar, indent=2))
    return sidecar
