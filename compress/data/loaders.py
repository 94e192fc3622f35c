"""From found photos to batches: datasets, deterministic subsets, the evaluation and
scoring pools kept apart, decoded-tensor caches and loaders.
"""
from __future__ import annotations

import io
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from compress.distributed import world
from compress.errors import DataError, ImageError
from compress.images import open_image_file
from compress.paths import atomic_write, cache_dir
from compress.zoo import describe_data
from compress.data.folders import ImageList, check_labels_fit, for_model, open_labelled, open_training


def open_rgb(path: Path) -> Image.Image:
    """One dataset image as the user sees it (see :func:`compress.images.to_rgb`); a
    DataError naming the file for anything that cannot be read, including images too large
    to decode safely."""
    try:
        return open_image_file(path)
    except ImageError as e:
        raise DataError(f"A dataset image cannot be used: {e}") from None


class ImageListDataset(Dataset):
    """Applies the model's own transform to each image; returns (tensor, label or -1)."""

    def __init__(self, images: ImageList, transform: Callable[[Image.Image], torch.Tensor]):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = self.transform(open_rgb(self.images.paths[i]))
        y = -1 if self.images.labels is None else self.images.labels[i]
        return x, y


def subset_indices(n: int, limit: Optional[int] = None, seed: int = 0) -> list[int]:
    """A deterministic random subset of ``range(n)`` of size ``limit`` (all when None)."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit <= 0:
        raise DataError(f"--limit must be positive, not {limit}.")
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n, size=limit, replace=False).tolist())


def scoring_split(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """A fixed, disjoint split of ``range(n)``: the scoring pool (:func:`scoring_pool_size`
    images, in a seeded order, so "the first k" is well defined) and the rest, from which the
    evaluation subset is drawn. The same (n, seed) always gives the same split."""
    perm = np.random.default_rng(seed).permutation(n).tolist()
    k = scoring_pool_size(n)
    return perm[:k], sorted(perm[k:])


def make_loader(dataset: Dataset, batch_size: int = 64, shuffle: bool = False,
                workers: Optional[int] = None, seed: int = 0) -> DataLoader:
    if workers is None:
        # In-process by default: a bad image then raises a plain DataError (worker processes
        # wrap errors in tracebacks), and small CPUs gain little from workers.
        workers = int(os.environ.get("COMPRESSION_LAB_WORKERS", "0"))
    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      generator=g, persistent_workers=False)


def decode_to_tensor(images: ImageList, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image once into a uint8 N×3×size×size tensor (cached on disk).

    Used for small-image training (CIFAR-10), where decoding JPEGs each epoch would cost
    more than the model's own work on a CPU.
    """
    key = hashlib.sha1(("\n".join(map(str, images.paths)) + f"|{size}").encode()).hexdigest()[:16]
    cached = cache_dir() / f"decoded-{key}.pt"
    if cached.exists():
        try:
            blob = torch.load(cached, weights_only=True)
            return blob["x"], blob["y"]
        except Exception:  # noqa: BLE001 - a damaged cache file is decoded again, never trusted
            pass
    x = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    for i, p in enumerate(images.paths):
        im = open_rgb(p)
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        x[i] = torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1)
    y = torch.tensor(images.labels if images.labels is not None else [-1] * len(images))
    # the cache is a convenience: written whole or not at all (torchrun ranks may decode at
    # once), and a disk that cannot take it (full, read-only) costs only the next decode
    buf = io.BytesIO()
    torch.save({"x": x, "y": y}, buf)
    try:
        with atomic_write(cached) as f:
            f.write(buf.getvalue())
    except OSError:
        pass
    return x, y


class TensorBatches:
    """Mini-batches from an in-memory uint8 image tensor, normalised on the fly.

    ``augment`` applies the standard CIFAR augmentation (4-pixel padded random crop and a
    horizontal flip) per image, on tensors, so no worker processes are needed.

    ``rank``/``world_size`` shard the images for data-parallel training the way
    ``DistributedSampler`` does: every rank draws the same permutation (same seed), takes
    every ``world_size``-th image from its offset, and pads by repeating so that all ranks
    run the same number of steps. ``batch_size`` is per rank.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, mean, std,
                 shuffle: bool = False, augment: bool = False, seed: int = 0,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1):
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std).view(1, 3, 1, 1) * 255
        self.shuffle, self.augment = shuffle, augment
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size

    @property
    def per_rank(self) -> int:
        return -(-len(self.x) // self.world_size)

    def __len__(self) -> int:
        return (self.per_rank + self.batch_size - 1) // self.batch_size

    def _augment(self, xb: torch.Tensor) -> torch.Tensor:
        n, _, h, w = xb.shape
        padded = torch.nn.functional.pad(xb, (4, 4, 4, 4))
        dx = torch.randint(0, 9, (n,), generator=self.generator)
        dy = torch.randint(0, 9, (n,), generator=self.generator)
        flip = torch.rand(n, generator=self.generator) < 0.5
        out = torch.empty_like(xb)
        for i in range(n):
            crop = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
            out[i] = crop.flip(-1) if flip[i] else crop
        return out

    def __iter__(self):
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            total = self.per_rank * self.world_size
            order = torch.cat([order, order[:total - n]])[self.rank::self.world_size]
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            xb = self.x[idx].float()
            if self.augment:
                xb = self._augment(xb)
            xb = (xb - self.mean) / self.std
            yield xb.to(self.device, non_blocking=True), self.y[idx].to(self.device, non_blocking=True)


def eval_loader(images: ImageList, transform, limit: Optional[int] = None, seed: int = 0,
                batch_size: int = 64, exclude: Sequence[int] = (),
                workers: Optional[int] = None) -> tuple[DataLoader, ImageList]:
    """A deterministic evaluation loader over ``images`` (minus ``exclude``, e.g. the
    calibration images), limited to ``limit`` images chosen by ``seed``."""
    excluded = set(exclude)
    keep = [i for i in range(len(images)) if i not in excluded]
    chosen = [keep[i] for i in subset_indices(len(keep), limit, seed)]
    sub = images.subset(chosen)
    return make_loader(ImageListDataset(sub, transform), batch_size=batch_size,
                       workers=workers), sub


SCORING_POOL = 1024        # at most this many images are set apart for calibration/scoring


def scoring_pool_size(n_images: int) -> int:
    """How many of ``n_images`` are set apart for calibration and data criteria: a quarter
    of a small set, at most :data:`SCORING_POOL`. It depends on the set only, never on how
    many calibration photos a page asks for, so the evaluation subset is the same on every
    page for the same (data, limit, seed)."""
    return min(SCORING_POOL, max(n_images // 4, 1))


@dataclass
class EvalSets:
    """The images one compression job measures on, chosen once per (data, limit, seed).

    ``evaluation``: the seeded subset accuracy is reported on (``n_eval`` images), held in
    memory as batches so every page and step sees exactly the same tensors.
    ``scoring``: images from a disjoint pool (never in ``evaluation``) for anything that
    looks at data to decide: activation/Taylor channel scores, INT8 calibration, BatchNorm
    statistics. :meth:`scoring_batches` reads the first ``n`` of the pool on demand.
    """
    evaluation: list
    n_eval: int
    source: str
    pool: Optional["ImageList"] = None          # the scoring pool, in its fixed seeded order
    transform: Optional[Callable] = None
    batch_size: int = 16
    n_scoring_default: int = 64
    _scoring: dict = field(default_factory=dict, repr=False)
    files: tuple = ()                           # the evaluation images' paths, in evaluation order
    labels: tuple = ()                          # and their labels (model class indices)

    @property
    def pool_size(self) -> int:
        return 0 if self.pool is None else len(self.pool)

    def scoring_batches(self, n: Optional[int] = None) -> list:
        """The first ``n`` images of the scoring pool (capped at its size) as batches."""
        n = min(self.n_scoring_default if n is None else n, self.pool_size)
        if n not in self._scoring:
            if n <= 0:
                return []
            ds = ImageListDataset(self.pool.subset(list(range(n))), self.transform)
            self._scoring[n] = list(make_loader(ds, batch_size=self.batch_size))
        return self._scoring[n]

    @property
    def scoring(self) -> list:
        return self.scoring_batches()

    @property
    def n_scoring(self) -> int:
        return min(self.n_scoring_default, self.pool_size)


def eval_sets(path: str | os.PathLike, transform, num_classes: int, model_name: str,
              limit: Optional[int] = 500, seed: int = 0, n_scoring: int = 64,
              batch_size: int = 64, categories: Sequence[str] = ()) -> EvalSets:
    """Open a labelled set, check it fits the model, and set a scoring pool apart.

    The pool (:func:`scoring_pool_size` images, seeded) never overlaps the evaluation
    subset, and its size does not depend on ``n_scoring`` (only how many of it
    ``sets.scoring`` reads by default), so the evaluation images depend on (path, limit,
    seed) alone. Class folders are mapped to the model's classes by name
    (:func:`class_indices`, with ``categories`` the model's class names)."""
    images = open_labelled(path)
    if not images.labelled:
        raise DataError(f"{path} has no labels: accuracy needs labelled images "
                        "(labels.csv or one sub-folder per class).")
    images = for_model(images, num_classes, model_name, categories, where=str(path))
    check_labels_fit(images.labels, num_classes, model_name)
    pool_idx, _ = scoring_split(len(images), seed)
    ev_loader, ev = eval_loader(images, transform, limit=limit, seed=seed, batch_size=batch_size,
                                exclude=pool_idx)
    return EvalSets(list(ev_loader), len(ev), describe_data(str(path)), pool=images.subset(pool_idx),
                    transform=transform, batch_size=min(batch_size, 16), n_scoring_default=n_scoring,
                    files=tuple(str(p) for p in ev.paths), labels=tuple(ev.labels or ()))


def _training(path, limit: Optional[int], seed: int, num_classes: Optional[int], model_name: str,
              categories: Sequence[str], images: Optional[ImageList]) -> ImageList:
    """The training photos a run uses: ``images`` when the caller opened them already (as
    :func:`count_training` returns them), else opened from ``path`` and mapped to the model's
    classes; then the seeded subset of ``limit``."""
    if images is None:
        images = open_training(path)
        if num_classes is not None:             # class folders named as the model's classes
            images = for_model(images, num_classes, model_name, categories)
    return images.subset(subset_indices(len(images), limit, seed))


def _shuffled(images: ImageList, transform, batch_size: int, seed: int) -> DataLoader:
    """Shuffled batches of ``images``; under ``torchrun`` each rank gets its own shard
    through a ``DistributedSampler``."""
    dataset = ImageListDataset(images, transform)
    w = world()
    if w.size > 1:
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(dataset, num_replicas=w.size, rank=w.rank, shuffle=True, seed=seed)
        workers = int(os.environ.get("COMPRESSION_LAB_WORKERS", "0"))
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
    return make_loader(dataset, batch_size=batch_size, shuffle=True, seed=seed)


def train_loader(path: str | os.PathLike, transform, limit: Optional[int] = None, seed: int = 0,
                 batch_size: int = 64, num_classes: Optional[int] = None, model_name: str = "",
                 categories: Sequence[str] = (), images: Optional[ImageList] = None) -> DataLoader:
    """Shuffled training batches: a CIFAR-10 tarball/folder gives its train split, a labelled
    folder its images; a plain folder of photos without labels is accepted too (label -1,
    for label-free distillation). ``limit`` picks a seeded subset. Under ``torchrun`` each
    rank gets its own shard through a ``DistributedSampler``."""
    return train_split(path, transform, limit, seed, batch_size, 0, num_classes, model_name, categories,
                       images)[0]


def train_split(path: str | os.PathLike, transform, limit: Optional[int] = None, seed: int = 0,
                batch_size: int = 64, holdout: int = 0, num_classes: Optional[int] = None, model_name: str = "",
                categories: Sequence[str] = (), images: Optional[ImageList] = None
                ) -> tuple[DataLoader, Optional[list]]:
    """Training batches as :func:`train_loader` gives them, less ``holdout`` photos kept apart
    (a seeded choice, never trained on, the same on every rank), returned as a list of
    batches to choose the best epoch on (None without a held-out slice). ``images``: the
    photos when the caller has opened them already (:func:`count_training`)."""
    images = _training(path, limit, seed, num_classes, model_name, categories, images)
    if holdout <= 0:
        return _shuffled(images, transform, batch_size, seed), None
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed + 1)).tolist()
    held, kept = sorted(order[:holdout]), sorted(order[holdout:])
    train = _shuffled(images.subset(kept), transform, batch_size, seed)
    return train, list(make_loader(ImageListDataset(images.subset(held), transform), batch_size=64))


def count_training(path: str | os.PathLike, limit: Optional[int] = None, num_classes: Optional[int] = None,
                   model_name: str = "", categories: Sequence[str] = ()) -> tuple[int, bool, ImageList]:
    """(how many training photos a run will use, whether they carry labels, the photos)."""
    images = open_training(path)
    if num_classes is not None:
        images = for_model(images, num_classes, model_name, categories)
    n = len(images) if limit is None else min(limit, len(images))
    return n, images.labelled, images


def has_labels(batches) -> bool:
    """Whether training ``batches`` carry labels (a folder without labels gives -1)."""
    images = getattr(getattr(batches, "dataset", None), "images", None)
    if images is not None:
        return images.labels is not None
    y = getattr(batches, "y", None)
    return y is None or bool((y >= 0).any())
