"""The one recovery recipe: the settings of a recovery chosen from the work.

A :class:`~compress.distill.RecoverConfig` may leave its learning rate, batch size,
warm-up, temperature, α, attention weight and held-out slice unset (``None``); :func:`plan`
sets them from how many training photos there are, whether they carry labels, and the
budget (epochs, or minutes turned into epochs from a timed training step on this device).
Every setting a user gives is kept as given. The Distill page, the CLI, the presets and the
autopilot all run recovery through this plan, so one recipe serves them all.

The choices, and why (measured on resnet18_cifar10 pruned 0.5-0.7, docs/distillation.md):

* **batch size**: 128 at 50,000 photos (the best measured recipe), halved until an epoch
  has at least 16 steps, never below 32 (BatchNorm's batch statistics are too noisy below:
  on 512 photos batch 16 ended 4 points lower than batch 32, docs/distillation.md).
* **learning rate**: 0.1 at batch 128, scaled linearly with the batch (Goyal et al.), and
  scaled down by √(steps / 400) when the whole run has fewer than 400 steps: a short run
  from a pruned but trained model must not wander far from it (lr 0.1 for 4 steps on
  512 photos collapsed a pruned model to 10%).
* **warm-up**: a tenth of the run, at most half an epoch, then cosine decay to zero.
* **distillation**: T = 2, α = 0.5 with labels (α = 1, label-free, without), and attention
  transfer (β = 50) on the stage outputs when the teacher is the unpruned original.
* **held-out slice**: a tenth of the photos (at least 16, at most 1,000) is kept apart;
  the student is scored on it before training and after every epoch, and the best weights
  are kept, so recovery never returns a model worse than the one it started from.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Optional

from compress import data as D
from compress.distill import ORIGINAL, DistillError, RecoverConfig, validate_recover

BEST_BATCH = 128           # the batch of the best measured recipe (50,000 photos)
BEST_LR = 0.1              # its learning rate
BEST_WARMUP = 0.5          # its warm-up (epochs), capped at a tenth of a short run
MIN_STEPS_PER_EPOCH = 16
MIN_BATCH = 32
FULL_LR_STEPS = 400        # fewer steps in the whole run scale the learning rate down
TEMPERATURE, ALPHA, ATTENTION = 2.0, 0.5, 50.0
HOLDOUT_SHARE, HOLDOUT_MIN, HOLDOUT_MAX = 0.1, 16, 1000
MIN_TRAIN = 32             # photos left to train on after the held-out slice


@dataclass(frozen=True)
class RecoveryPlan:
    """A recovery with every setting decided, and why."""
    config: RecoverConfig                # no field left to the plan
    n_photos: int                        # training photos given
    holdout: int                         # of them, kept apart to choose the best epoch
    steps_per_epoch: int
    epoch_seconds: Optional[float]       # from a timed step (minutes budgets), else None
    reasons: tuple[str, ...]             # one sentence per choice the plan made

    @property
    def n_train(self) -> int:
        return self.n_photos - self.holdout

    def to_json(self) -> dict:
        return {"n_photos": self.n_photos, "holdout": self.holdout, "steps_per_epoch": self.steps_per_epoch,
                "epoch_seconds": self.epoch_seconds, "reasons": list(self.reasons),
                "epochs": self.config.epochs, "batch_size": self.config.batch_size, "lr": self.config.lr,
                "warmup_epochs": self.config.warmup_epochs}


def holdout_size(n_photos: int, cfg: RecoverConfig) -> int:
    """The photos kept apart from ``n_photos`` (the config's own, or a tenth, 16 to 1,000)."""
    if cfg.holdout is not None:
        return cfg.holdout
    return int(min(HOLDOUT_MAX, max(HOLDOUT_MIN, round(HOLDOUT_SHARE * n_photos))))


def check_photos(cfg: RecoverConfig, n_photos: int, labelled: bool) -> None:
    """The photos can carry this recovery (cheap: before any training)."""
    hold = holdout_size(n_photos, cfg)
    if hold < 1 and cfg.holdout is not None and cfg.holdout != 0:
        raise DistillError("The held-out slice must hold at least 1 photo (or 0 to keep the last epoch).")
    if n_photos - hold < MIN_TRAIN:
        raise DistillError(f"Recovery needs at least {MIN_TRAIN + hold} training photos ({MIN_TRAIN} to train on "
                           f"and {hold} held out to choose the best epoch); there are {n_photos}. Give more "
                           "photos (or a larger --train-limit).")
    method = cfg.method_entry
    alpha = cfg.alpha if cfg.alpha is not None else (ALPHA if labelled else 1.0)
    if not labelled and (method.always_needs_labels or (method.uses_teacher and alpha < 1.0)):
        raise DistillError(f"These {n_photos} photos have no labels, and {method.noun} "
                           + ("trains on labels." if method.always_needs_labels else
                              f"with α = {alpha:g} learns from labels too.")
                           + " Use distillation with α = 1 (label-free), or give labelled photos.")


def plan(cfg: RecoverConfig, n_photos: int, labelled: bool, step_seconds: Optional[float] = None,
         read_seconds: float = 0.0) -> RecoveryPlan:
    """Decide every setting ``cfg`` leaves unset, for ``n_photos`` training photos.

    ``step_seconds`` (one training step at the planned batch, :func:`compress.train.
    measure_step_seconds`) and ``read_seconds`` (reading one photo) turn ``cfg.minutes``
    into epochs; they are needed only then. A message when the photos or the budget
    cannot carry the recovery."""
    check_photos(cfg, n_photos, labelled)
    hold = holdout_size(n_photos, cfg)
    n_train = n_photos - hold
    why = []
    batch = cfg.batch_size
    if batch is None:
        batch = BEST_BATCH
        while batch > MIN_BATCH and n_train / batch < MIN_STEPS_PER_EPOCH:
            batch //= 2
        why.append(f"batch {batch}: " + ("the best measured recipe's" if batch == BEST_BATCH else
                                         f"halved from {BEST_BATCH} so an epoch of {n_train:,} photos has "
                                         f"{math.ceil(n_train / batch)} steps"))
    steps = math.ceil(n_train / batch)
    epochs, epoch_seconds = cfg.epochs, None
    if cfg.minutes is not None:
        if step_seconds is None:
            raise DistillError("A minutes budget needs a timed training step.")
        epoch_seconds = steps * (step_seconds + read_seconds * batch)
        fit = cfg.minutes * 60.0 / epoch_seconds
        if cfg.minutes * 60.0 < step_seconds + read_seconds * batch:
            raise DistillError(f"{cfg.minutes:g} minutes is shorter than one training step here "
                               f"({step_seconds + read_seconds * batch:.1f} s): give more minutes.")
        if fit < 1:
            raise DistillError(f"{cfg.minutes:g} minutes holds {100 * fit:.0f}% of one epoch: one epoch over "
                               f"{n_train:,} photos takes about {epoch_seconds / 60:.1f} min on this device. Give at "
                               f"least {math.ceil(epoch_seconds / 60)} minutes, or fewer photos (--train-limit).")
        epochs = int(min(200, math.floor(fit)))
        why.append(f"{epochs} epoch(s): {cfg.minutes:g} min at about {epoch_seconds / 60:.1f} min an epoch "
                   f"(a timed step: {step_seconds:.2f} s)")
    lr = cfg.lr
    if lr is None:
        total = steps * epochs
        lr = BEST_LR * batch / BEST_BATCH * min(1.0, math.sqrt(total / FULL_LR_STEPS))
        lr = float(f"{lr:.3g}")
        why.append(f"learning rate {lr:g}: {BEST_LR:g} at batch {BEST_BATCH}, scaled to batch {batch}"
                   + (f" and down for a short run ({total} steps)" if total < FULL_LR_STEPS else ""))
    warm = cfg.warmup_epochs
    if warm is None:
        warm = float(f"{min(BEST_WARMUP, 0.1 * epochs):.3g}")
        why.append(f"warm-up {warm:g} epoch(s), then cosine decay")
    method = cfg.method_entry
    temperature, alpha, attention = cfg.temperature, cfg.alpha, cfg.attention
    if method.uses_teacher:
        if temperature is None:
            temperature = TEMPERATURE
        if alpha is None:
            alpha = ALPHA if labelled else 1.0
            why.append(f"T {temperature:g}, α {alpha:g}" + ("" if labelled else " (the photos have no labels)"))
        if attention is None:
            attention = ATTENTION if cfg.teacher == ORIGINAL else 0.0
            if attention:
                why.append(f"attention transfer β {attention:g} on the stage outputs of the original")
    resolved = replace(cfg, epochs=epochs, minutes=None, lr=lr, batch_size=batch, warmup_epochs=min(warm, epochs),
                       temperature=temperature if temperature is not None else TEMPERATURE,
                       alpha=alpha if alpha is not None else ALPHA,
                       attention=attention if attention is not None else 0.0, holdout=hold)
    if hold:
        why.append(f"{hold:,} of the {n_photos:,} photos held out: the best epoch on them is kept (never worse "
                   "than the start)")
    validate_recover(resolved)
    return RecoveryPlan(resolved, n_photos, hold, steps, epoch_seconds, tuple(why))


# ------------------------------------------------------------------ how long it will take

@dataclass(frozen=True)
class TimeEstimate:
    """How long a recovery will take, from one timed training step and photo reads."""
    seconds: float
    steps_per_epoch: int
    step_seconds: float                # one training step (forward, backward, update; + teacher)
    read_seconds: float                # reading and preparing one batch of photos
    n_train: int


def seconds_to_read(images, transform, n: int = 16) -> float:
    """Seconds to read and prepare one of ``images`` (the mean over the first ``n``)."""
    ds = D.ImageListDataset(images.subset(list(range(min(n, len(images))))), transform)
    t0 = time.perf_counter()
    for i in range(len(ds)):
        _ = ds[i]
    return (time.perf_counter() - t0) / max(len(ds), 1)


def estimate_seconds(cfg: RecoverConfig, n_train: int, step_seconds: float,
                     read_seconds_per_image: float) -> TimeEstimate:
    """The time ``cfg`` will train for on ``n_train`` photos, given a measured step time
    (:func:`compress.train.measure_step_seconds`) and per-photo read time
    (:func:`seconds_to_read`). Validation and the final measurements come on top."""
    steps = math.ceil(n_train / cfg.batch_size)
    read = read_seconds_per_image * cfg.batch_size
    return TimeEstimate(cfg.epochs * steps * (step_seconds + read), steps, step_seconds, read, n_train)
