"""Knowledge distillation and recovery after pruning, on top of :func:`compress.train.fit`.

:class:`RecoverConfig` is the one description of a recovery (its method, with its
temperature and α); :func:`recover` trains a copy of a pruned model back.
:data:`RECOVERY_METHODS` is the registry of methods (knowledge distillation, with optional
attention transfer, and fine-tuning): each entry says what it needs (a teacher, labels)
and holds its handler, and validation, the pipeline, reports and pages read it. Also
here: which zoo models can teach which student (:func:`compatible_teachers`) and teachers
with another normalisation (:class:`Renormalize`). The settings a recovery leaves unset are
chosen by the one recovery recipe, :mod:`compress.recovery`, which also says how long a
recovery will take.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from compress import data as D
from compress.checkpoint import load_model
from compress.errors import CompressError
from compress.measure import evaluate
from compress.prune import reestimate_batchnorm
from compress.progress import Cancel, OnProgress
from compress.train import TrainConfig, TrainError, TrainResult, fit
from compress.zoo import ZOO, get_spec


class DistillError(TrainError):
    """A fine-tuning or distillation request that cannot run as asked."""


# ------------------------------------------------------------------ distillation

def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    """α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1−α)·CE(student, labels).

    KL is averaged over the batch; T² keeps the soft term's gradients on the scale of the
    hard term's (Hinton et al. 2015). Images with label < 0 (unlabelled) count in the KL
    term only; with α = 1 labels are not used at all.
    """
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True) * (t * t)
    if alpha >= 1.0:
        return kl
    known = labels >= 0
    ce = F.cross_entropy(student_logits[known], labels[known]) if known.any() else kl.new_zeros(())
    return alpha * kl + (1.0 - alpha) * ce


def stage_ends(model: nn.Module, input_size) -> list[str]:
    """Names of the blocks whose outputs end each spatial resolution of ``model``: for a
    torchvision ResNet ``layer1`` … ``layer3`` (``layer4`` is 1×1 at 32×32 input and is
    left out), for MobileNet/EfficientNet the last block at each resolution.

    Blocks are the model's children and the children of its Sequential/ModuleList
    children (``features.3``, ``_blocks.5``), so paddings and activations inside a block
    are never chosen. One probe forward on zeros records each block's output size; for
    every feature-map size larger than 1×1 the last block to return it is a stage end.
    Pruning keeps module names, so the same names address the teacher and the student."""
    blocks = []
    for name, child in model.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            blocks += [(f"{name}.{k}", c) for k, c in child.named_children()]
        else:
            blocks.append((name, child))
    last: dict[tuple[int, int], str] = {}

    def hook(name):
        def f(_m, _i, out):
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] * out.shape[-2] > 1:
                last.pop(tuple(out.shape[-2:]), None)
                last[tuple(out.shape[-2:])] = name
        return f
    hooks = [m.register_forward_hook(hook(n)) for n, m in blocks]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            dev = next(model.parameters()).device
            model(torch.zeros(1, *input_size, device=dev))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return list(last.values())


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Spatial attention of a feature map (Zagoruyko & Komodakis, ICLR 2017): the mean over
    channels of the squared activations, flattened and L2-normalised per image. It does not
    depend on the channel count, so a pruned student's map compares with its teacher's."""
    return F.normalize(features.float().pow(2).mean(1).flatten(1), dim=1)


class _StageRecorder:
    """Forward hooks that keep the latest output of each named module."""

    def __init__(self, model: nn.Module, names: list[str]):
        modules = dict(model.named_modules())
        self.out: dict[str, torch.Tensor] = {}
        self.hooks = [modules[n].register_forward_hook(self._keep(n)) for n in names]

    def _keep(self, name):
        def f(_m, _i, out):
            self.out[name] = out
        return f

    def remove(self):
        for h in self.hooks:
            h.remove()


def distill(student: nn.Module, teacher: nn.Module, train_batches: Iterable, cfg: TrainConfig,
            device: torch.device, temperature: float = 4.0, alpha: float = 0.9,
            attention: float = 0.0, input_size=None, **fit_kwargs) -> TrainResult:
    """Train ``student`` in place to match a frozen ``teacher`` (eval mode, no gradients)
    with :func:`kd_loss`; everything else is :func:`fit` (progress, cancel, checkpoints).

    ``attention`` > 0 adds attention transfer on the stage outputs (:func:`stage_ends`,
    found on ``input_size``): ``attention`` × Σ_stages mean((A_s − A_t)²) with A from
    :func:`attention_map` (β = 1000 in the paper's setting)."""
    if temperature <= 0:
        raise DistillError(f"Temperature must be positive, not {temperature}.")
    if not 0.0 <= alpha <= 1.0:
        raise DistillError(f"α must be between 0 and 1, not {alpha}.")
    if attention < 0:
        raise DistillError(f"The attention-transfer weight must be 0 or more, not {attention}.")
    teacher = teacher.to(device).eval()
    flags = [p.requires_grad for p in teacher.parameters()]
    for p in teacher.parameters():        # frozen while it teaches
        p.requires_grad_(False)
    recorders: list[_StageRecorder] = []
    if attention > 0:
        if input_size is None:
            raise DistillError("Attention transfer needs the model's input size.")
        names = stage_ends(student, input_size)
        teacher_modules = dict(teacher.named_modules())
        missing = [n for n in names if n not in teacher_modules]
        if not names or missing:
            raise DistillError("Attention transfer needs a teacher with the student's layer names "
                               "(the unpruned original); this teacher has a different structure.")
        recorders = [_StageRecorder(student, names), _StageRecorder(teacher, names)]

    def loss_fn(logits, y, x):
        if alpha < 1.0 and not bool((y >= 0).any()):
            raise DistillError("These training images have no labels: use label-free mode (α = 1).")
        with torch.no_grad():
            t = teacher(x).float()
        loss = kd_loss(logits.float(), t, y, temperature, alpha)
        if recorders:
            s_out, t_out = recorders[0].out, recorders[1].out
            at = sum((attention_map(s_out[n]) - attention_map(t_out[n])).pow(2).mean() for n in s_out)
            loss = loss + attention * at
        return loss
    try:
        return fit(student, train_batches, cfg, device, loss_fn=loss_fn, **fit_kwargs)
    finally:                              # the teacher is often the caller's original model
        for r in recorders:
            r.remove()
        for p, flag in zip(teacher.parameters(), flags):
            p.requires_grad_(flag)


def set_trainable(model: nn.Module, unfreeze: str, pruned_layers: Iterable[str] = ()) -> int:
    """Choose what fine-tuning updates; returns the number of trainable parameters.

    ``"all"``: every parameter. ``"pruned"``: only the layers pruning touched (pass the
    coupled layers of the groups that lost channels), every BatchNorm, and the classifier
    (the last Linear), as the CIFAR-10 pruning tutorial does.
    """
    if unfreeze == "all":
        for p in model.parameters():
            p.requires_grad_(True)
    elif unfreeze == "pruned":
        names = set(pruned_layers)
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        keep = names | set(linears[-1:])
        for n, m in model.named_modules():
            train = n in keep or isinstance(m, nn.modules.batchnorm._BatchNorm)
            for p in m.parameters(recurse=False):
                p.requires_grad_(train)
    else:
        raise DistillError(f"Unknown unfreeze choice {unfreeze!r}: use 'pruned' or 'all'.")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------ recovery after pruning

ORIGINAL = "original"                # the teacher name of the uncompressed model itself


@dataclass(frozen=True)
class RecoveryMethod:
    """One way to train a pruned model back: its registry entry."""
    name: str
    description: str                 # one sentence: what the student learns from
    label: str                       # how a page names the choice
    noun: str                        # in sentences: "3 epochs of distillation"
    past: str                        # in a model's label: "distilled 3 epoch(s)"
    uses_teacher: bool               # learns from a teacher (teacher, T, α and attention apply)
    always_needs_labels: bool        # trains on labels whatever the settings (else only when α < 1)
    handler: Callable                # (student, teacher, cfg, train_batches, device, input_size, fit_kwargs)

    def needs_labels(self, cfg: "RecoverConfig") -> bool:
        return self.always_needs_labels or (self.uses_teacher and cfg.alpha is not None and cfg.alpha < 1.0)


def _by_distillation(student, teacher, cfg, train_batches, device, input_size, kwargs) -> TrainResult:
    return distill(student, teacher, train_batches, cfg.train_config(), device, temperature=cfg.temperature,
                   alpha=cfg.alpha, attention=cfg.attention, input_size=input_size, **kwargs)


def _by_fine_tuning(student, teacher, cfg, train_batches, device, input_size, kwargs) -> TrainResult:
    if not D.has_labels(train_batches):
        raise DistillError("Fine-tuning needs labelled photos; these have no labels. Use "
                           "distillation with α = 1 (label-free) instead.")
    return fit(student, train_batches, cfg.train_config(), device, **kwargs)


RECOVERY_METHODS: dict[str, RecoveryMethod] = {m.name: m for m in (
    RecoveryMethod("distill", "knowledge distillation: the pruned model learns to match the teacher's outputs",
                   "knowledge distillation", "distillation", "distilled", uses_teacher=True,
                   always_needs_labels=False, handler=_by_distillation),
    RecoveryMethod("finetune", "fine-tuning: the pruned model trains on the labels again",
                   "fine-tuning", "fine-tuning", "fine-tuned", uses_teacher=False,
                   always_needs_labels=True, handler=_by_fine_tuning),
)}
UNFREEZE = {
    "pruned": "only the pruned layers, every BatchNorm and the classifier",
    "all": "every layer",
}


@dataclass(frozen=True)
class RecoverConfig:
    """How to train a pruned model back: plain data, part of a recipe.

    A setting left ``None`` is chosen from the work by the one recovery recipe
    (:func:`compress.recovery.plan`: the number of training photos, their labels, the
    budget); a setting given is kept as given. ``minutes``, when set, is the budget and
    ``epochs`` comes from a timed training step."""
    method: str = "distill"          # a name in RECOVERY_METHODS
    epochs: int = 3
    lr: Optional[float] = None
    batch_size: Optional[int] = None
    optimizer: str = "sgd"
    unfreeze: str = "all"            # "pruned" or "all"
    temperature: Optional[float] = None
    alpha: Optional[float] = None    # 1.0 = label-free
    teacher: str = ORIGINAL          # "original" (the uncompressed model) or a zoo name
    seed: int = 0
    attention: Optional[float] = None   # attention-transfer weight on the stage outputs (0 = off)
    warmup_epochs: Optional[float] = None   # linear warm-up before the cosine decay to zero
    minutes: Optional[float] = None  # a time budget instead of epochs (turned into epochs on this device)
    holdout: Optional[int] = None    # training photos kept apart to choose the best epoch (0: keep the last)

    @property
    def planned(self) -> bool:
        """Every setting decided (what :func:`compress.recovery.plan` returns)."""
        return self.minutes is None and None not in (self.lr, self.batch_size, self.temperature, self.alpha,
                                                     self.attention, self.warmup_epochs, self.holdout)

    def train_config(self) -> TrainConfig:
        if not self.planned:
            raise DistillError("This recovery's settings are not all decided yet: run it through "
                               "compress.recovery.plan first.")
        return TrainConfig(epochs=self.epochs, lr=self.lr, optimizer=self.optimizer,
                           weight_decay=5e-4, schedule="cosine", warmup_epochs=self.warmup_epochs,
                           seed=self.seed)

    @property
    def method_entry(self) -> RecoveryMethod:
        return RECOVERY_METHODS[self.method]

    @property
    def zoo_teacher(self) -> Optional[str]:
        """The zoo model to load as the teacher, when this recovery learns from one other
        than the original (None otherwise)."""
        return self.teacher if self.method_entry.uses_teacher and self.teacher != ORIGINAL else None


def validate_recover(cfg: RecoverConfig) -> None:
    """Reject settings that cannot train, before any data is read (a setting left to the
    plan is checked once the plan has chosen it)."""
    if cfg.method not in RECOVERY_METHODS:
        raise DistillError(f"Unknown recovery {cfg.method!r}: use {' or '.join(RECOVERY_METHODS)}.")
    if not 1 <= cfg.epochs <= 200:
        raise DistillError(f"Epochs must be between 1 and 200, not {cfg.epochs}.")
    if cfg.minutes is not None and not 0.05 <= cfg.minutes <= 24 * 60:
        raise DistillError(f"The recovery budget must be between 0.05 and 1440 minutes, not {cfg.minutes:g}.")
    if cfg.holdout is not None and not 0 <= cfg.holdout <= 100_000:
        raise DistillError(f"The held-out photos must number between 0 and 100000, not {cfg.holdout}.")
    if cfg.lr is not None and not 1e-6 <= cfg.lr <= 1.0:
        raise DistillError(f"The learning rate must be between 1e-6 and 1, not {cfg.lr:g}.")
    if cfg.batch_size is not None and not 1 <= cfg.batch_size <= 4096:
        raise DistillError(f"The batch size must be between 1 and 4096, not {cfg.batch_size}.")
    if cfg.optimizer not in ("sgd", "adamw"):
        raise DistillError(f"Unknown optimizer {cfg.optimizer!r}: use sgd or adamw.")
    if cfg.unfreeze not in UNFREEZE:
        raise DistillError(f"Unknown unfreeze choice {cfg.unfreeze!r}: use 'pruned' or 'all'.")
    if RECOVERY_METHODS[cfg.method].uses_teacher:
        if cfg.temperature is not None and not 0.05 <= cfg.temperature <= 100:
            raise DistillError(f"Temperature must be between 0.05 and 100, not {cfg.temperature}.")
        if cfg.alpha is not None and not 0.0 <= cfg.alpha <= 1.0:
            raise DistillError(f"α must be between 0 and 1, not {cfg.alpha}.")
        if cfg.attention is not None and not 0.0 <= cfg.attention <= 1e5:
            raise DistillError(f"The attention-transfer weight must be between 0 and 100000, not {cfg.attention:g}.")
        if cfg.attention and cfg.teacher != ORIGINAL:
            raise DistillError("Attention transfer compares the student's stage outputs with the "
                               "unpruned original's: use the original as the teacher, or set the weight to 0.")
    if cfg.warmup_epochs is not None and not 0.0 <= cfg.warmup_epochs <= cfg.epochs:
        raise DistillError(f"Warm-up must be between 0 and the {cfg.epochs} epochs, not {cfg.warmup_epochs:g}.")


def check_teacher(teacher_spec, student_spec) -> None:
    """A teacher must answer the same question as the student from the same pixels: same
    classes, same input size and resize/crop (normalisation may differ; see
    :class:`Renormalize`)."""
    if teacher_spec.num_classes != student_spec.num_classes or teacher_spec.input_size != student_spec.input_size:
        raise DistillError(
            f"Teacher {teacher_spec.name} predicts {teacher_spec.num_classes} classes from "
            f"{teacher_spec.input_size[1]}×{teacher_spec.input_size[2]} images, the student "
            f"{student_spec.num_classes} classes from {student_spec.input_size[1]}×"
            f"{student_spec.input_size[2]}: choose a teacher trained on the same task.")
    t, s = teacher_spec.preprocess, student_spec.preprocess
    if (t.resize, t.crop) != (s.resize, s.crop):
        raise DistillError(f"Teacher {teacher_spec.name} sees images resized/cropped differently "
                           f"({t.resize}/{t.crop}) than {student_spec.name} ({s.resize}/{s.crop}): "
                           "choose a teacher with the same preprocessing.")


class Renormalize(nn.Module):
    """Feeds a teacher the student's images with the teacher's own normalisation:
    x_teacher = (x · std_s + mean_s − mean_t) / std_t."""

    def __init__(self, teacher: nn.Module, student_pre, teacher_pre):
        super().__init__()
        self.teacher = teacher
        v = lambda t: torch.tensor(t).view(1, 3, 1, 1)   # noqa: E731
        self.register_buffer("scale", v(student_pre.std) / v(teacher_pre.std))
        self.register_buffer("shift", (v(student_pre.mean) - v(teacher_pre.mean)) / v(teacher_pre.std))

    def forward(self, x):
        return self.teacher(x * self.scale + self.shift)


def load_teacher(name: str, student_spec) -> nn.Module:
    """A zoo model as the teacher for ``student_spec``'s task: checked, loaded with its
    trained weights (a missing file is a WeightsUnavailable message naming it) and wrapped
    in :class:`Renormalize` when its normalisation differs."""
    spec = get_spec(name)
    check_teacher(spec, student_spec)
    loaded = load_model(name)
    if not loaded.trained:
        raise DistillError(f"Teacher {name} has no trained weights: a random teacher teaches nothing.")
    if spec.preprocess != student_spec.preprocess:
        return Renormalize(loaded.model, student_spec.preprocess, spec.preprocess).eval()
    return loaded.model


def changed_layers(original: nn.Module, pruned: nn.Module) -> list[str]:
    """Layers whose parameter shapes pruning changed (convs, BatchNorms, linears), in
    network order: what "unfreeze pruned" trains, found by comparing the two models."""
    before = {n: p.shape for n, p in original.named_parameters()}
    names = []
    for n, p in pruned.named_parameters():
        layer = n.rsplit(".", 1)[0]
        if before.get(n) is not None and before[n] != p.shape and layer not in names:
            names.append(layer)
    return names


def recover(pruned: nn.Module, original: nn.Module, cfg: RecoverConfig, train_batches: Iterable,
            device: torch.device, teacher: Optional[nn.Module] = None,
            val_batches: Optional[Iterable] = None, on_progress: Optional[OnProgress] = None,
            cancel: Optional[Cancel] = None, workdir: Optional[Path] = None,
            resume: bool = False, input_size=None,
            holdout_batches: Optional[Iterable] = None) -> tuple[nn.Module, TrainResult]:
    """Train a copy of ``pruned`` back towards ``original``'s accuracy; returns the
    recovered model (CPU, eval mode, every parameter trainable again) and the history.

    ``holdout_batches`` (training photos kept apart) choose the best epoch, the start
    included: top-1 on them when they carry labels, else top-1 agreement with the teacher.

    Distillation uses ``teacher`` when given (a bigger model), else ``original``. With
    ``unfreeze="pruned"`` only :func:`changed_layers`, BatchNorms and the classifier train.
    ``pruned`` and ``original`` are not changed.
    """
    validate_recover(cfg)
    student = copy.deepcopy(pruned)
    trainable = set_trainable(student, cfg.unfreeze, changed_layers(original, pruned))
    if trainable == 0:
        raise DistillError("Nothing to train: no layer was pruned. Choose 'every layer'.")
    teacher = teacher if teacher is not None else original
    kwargs = dict(val_batches=val_batches, on_progress=on_progress, cancel=cancel,
                  workdir=workdir, resume=resume,
                  select=None if holdout_batches is None else
                  with_batchnorm_choice(held_out_score(holdout_batches, teacher, device), train_batches))
    res = cfg.method_entry.handler(student, teacher, cfg, train_batches,
                                   device, input_size, kwargs)
    for p in student.parameters():
        p.requires_grad_(True)
    return student.cpu().eval(), res


BN_IMAGES = 512           # training photos BatchNorm statistics are re-estimated on, per epoch


def with_batchnorm_choice(score: Callable[[nn.Module], float], train_batches: Iterable,
                          max_images: int = BN_IMAGES) -> Callable[[nn.Module], float]:
    """``score`` of the better of two BatchNorm statistics: the running ones training left,
    and ones re-estimated on up to ``max_images`` training photos; the better stay in the
    model. Small-batch training leaves noisy running statistics (measured: 512 photos, one
    epoch of KD on resnet18_cifar10 pruned 0.6 ended at 49.9% on test images, 60.1% with
    its BatchNorm re-estimated; docs/distillation.md), while after long training on many
    photos its own statistics can be the better ones: the held-out photos decide."""
    def choose(m: nn.Module) -> float:
        trained = score(m)
        kept = {k: v.clone() for k, v in m.state_dict().items() if "running_" in k or "num_batches" in k}
        if not kept or reestimate_batchnorm(m, train_batches, max_images=max_images) == 0:
            return trained
        again = score(m)
        if again >= trained:
            return again
        m.load_state_dict(kept, strict=False)
        return trained
    return choose


def held_out_score(batches: Iterable, teacher: nn.Module, device: torch.device) -> Callable[[nn.Module], float]:
    """How a recovery chooses its best epoch on photos kept apart: top-1 (%) when they carry
    labels, else the share (%) of them on which the student's top-1 is the teacher's."""
    batches = list(batches)
    labelled = all(bool((y >= 0).all()) for _, y in batches)
    if labelled:
        return lambda m: evaluate(m, batches, device).top1
    teacher.to(device).eval()
    with torch.no_grad():
        wanted = [teacher(x.to(device)).argmax(1) for x, _ in batches]

    def agreement(m: nn.Module) -> float:
        was = m.training
        m.eval()
        with torch.no_grad():
            same = sum(int((m(x.to(device)).argmax(1) == t).sum()) for (x, _), t in zip(batches, wanted))
        m.train(was)
        return 100.0 * same / max(1, sum(len(t) for t in wanted))
    return agreement


def compatible_teachers(student_spec) -> list[str]:
    """The teachers that can teach this student: "original" (the unpruned model) and every
    zoo entry that answers the same classes from the same pixels (see :func:`check_teacher`)."""
    names = [ORIGINAL]
    for name, s in ZOO.items():
        if name == student_spec.name:
            continue
        try:
            check_teacher(s, student_spec)
            names.append(name)
        except CompressError:
            pass
    return names
