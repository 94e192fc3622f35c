"""Labelled image folders, CIFAR-10, deterministic subsets and loaders.

Layouts understood by :func:`scan_folder`:

* ``images/`` + ``labels.csv`` (columns ``file,label``; label is a class index), as in an
  ImageNet validation sample;
* ImageFolder: one sub-folder per class, classes sorted the torchvision way
  (``sorted(os.scandir)`` by name), so indices match ``torchvision.datasets.ImageFolder``;
* a flat folder of images without labels (for label-free distillation and calibration).

Paths always come from the user (CLI flag, environment variable or the dashboard).
"""
from __future__ import annotations

import csv
import hashlib
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from compress.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


def cache_dir() -> Path:
    """Where derived data (unpacked tarballs, decoded tensors) is kept.

    ``COMPRESSION_LAB_CACHE`` overrides the default ``~/.cache/compression-lab``.
    """
    root = Path(os.environ.get("COMPRESSION_LAB_CACHE", Path.home() / ".cache" / "compression-lab"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass(frozen=True)
class ImageList:
    """What a folder holds: image paths, integer labels (or None) and class names."""
    root: Path
    layout: str                       # "labels.csv", "imagefolder" or "unlabelled"
    paths: tuple[Path, ...]
    labels: Optional[tuple[int, ...]]
    classes: Optional[tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def subset(self, indices: Sequence[int]) -> "ImageList":
        idx = [int(i) for i in indices]
        return ImageList(self.root, self.layout, tuple(self.paths[i] for i in idx),
                         None if self.labels is None else tuple(self.labels[i] for i in idx),
                         self.classes)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS


def scan_folder(path: str | os.PathLike, allow_unlabelled: bool = False) -> ImageList:
    """Detect the layout of ``path`` and list its images. Raises DataError with a reason."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"Dataset folder {root} does not exist.")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder. Give the folder that holds the images "
                        "(or, for CIFAR-10, the .tar.gz itself with the CIFAR-10 loader).")
    labels_csv = root / "labels.csv"
    if labels_csv.is_file():
        return _scan_labels_csv(root, labels_csv)
    subdirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if subdirs:
        paths, labels, classes = [], [], []
        for name in subdirs:
            files = sorted(p for p in (root / name).rglob("*") if _is_image(p))
            if not files:
                continue
            classes.append(name)
            paths.extend(files)
            labels.extend([len(classes) - 1] * len(files))
        if paths:
            return ImageList(root, "imagefolder", tuple(paths), tuple(labels), tuple(classes))
    files = sorted(p for p in root.iterdir() if _is_image(p))
    if files and allow_unlabelled:
        return ImageList(root, "unlabelled", tuple(files), None, None)
    if files:
        raise DataError(
            f"{root} holds {len(files)} images but no labels: add a labels.csv (file,label) "
            "or put the images in one sub-folder per class.")
    raise DataError(
        f"No images found in {root}. Expected images/ + labels.csv, one sub-folder per class "
        f"(ImageFolder), or image files ({', '.join(IMAGE_EXTENSIONS)}).")


def _scan_labels_csv(root: Path, labels_csv: Path) -> ImageList:
    image_dir = root / "images" if (root / "images").is_dir() else root
    paths, labels = [], []
    try:
        with open(labels_csv, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"file", "label"} <= set(reader.fieldnames):
                raise DataError(f"{labels_csv} must have a header with columns 'file' and 'label' "
                                f"(found {reader.fieldnames}).")
            for lineno, row in enumerate(reader, start=2):
                try:
                    label = int(row["label"])
                except (TypeError, ValueError):
                    raise DataError(f"{labels_csv} line {lineno}: label {row['label']!r} is not an "
                                    "integer class index.") from None
                if label < 0:
                    raise DataError(f"{labels_csv} line {lineno}: label {label} is negative.")
                p = image_dir / row["file"]
                if not p.is_file():
                    raise DataError(f"{labels_csv} line {lineno}: image {p} does not exist.")
                paths.append(p)
                labels.append(label)
    except UnicodeDecodeError:
        raise DataError(f"{labels_csv} is not a text CSV file.") from None
    if not paths:
        raise DataError(f"{labels_csv} lists no images.")
    return ImageList(root, "labels.csv", tuple(paths), tuple(labels), None)


WNID_FILE = Path(__file__).resolve().parent.parent / "assets" / "imagenet_wnids.txt"


def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (assets/imagenet_wnids.txt,
    written by scripts/make_imagenet_wnids.sh)."""
    return tuple(WNID_FILE.read_text().split())


def _norm(name: str) -> str:
    import re
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def class_indices(classes: Sequence[str], num_classes: int, model_name: str, categories: Sequence[str] = (),
                  where: str = "") -> list[int]:
    """The model's class index for each class folder name, by what the names are:
    ImageNet WordNet ids (``n01440764``, through assets/imagenet_wnids.txt), the model's
    class names (``tench``, ``airplane``; case, spaces, ``_`` and ``-`` ignored), or
    numbers (``0`` … ``N-1``). A DataError that names both sides when they do not fit:
    sort order alone never decides which class a folder is."""
    import re
    shown = ", ".join(list(classes)[:4]) + (", …" if len(classes) > 4 else "")
    src = f"The class folders of {where} ({shown})" if where else f"The class folders ({shown})"
    if all(re.fullmatch(r"n\d{8}", c) for c in classes):
        if num_classes != 1000:
            raise DataError(f"{src} are ImageNet WordNet ids, but {model_name} has {num_classes} classes, "
                            "not ImageNet's 1000: give photos of its own classes.")
        table = {w: i for i, w in enumerate(imagenet_wnids())}
        unknown = [c for c in classes if c not in table]
        if unknown:
            raise DataError(f"{src}: {', '.join(unknown[:4])} {'is' if len(unknown) == 1 else 'are'} not among "
                            "the 1000 ImageNet-1k WordNet ids.")
        return [table[c] for c in classes]
    if all(c.isdigit() for c in classes):
        bad = [c for c in classes if int(c) >= num_classes]
        if bad:
            raise DataError(f"{src}: folder {bad[0]} is not a class index of {model_name} (0–{num_classes - 1}).")
        return [int(c) for c in classes]
    cats = tuple(categories) or (CIFAR10_CLASSES if num_classes == 10 else ())
    lookup: dict[str, int] = {}
    for i, n in enumerate(cats):
        lookup.setdefault(_norm(n), i)
    unknown = [c for c in classes if _norm(c) not in lookup]
    if cats and not unknown:
        return [lookup[_norm(c)] for c in classes]
    examples = ", ".join(cats[:3]) + ", …" if cats else "no class names known"
    raise DataError(
        f"{src} do not match {model_name}'s {num_classes} classes ({examples})"
        + (f"; {', '.join(unknown[:3])} {'is' if len(unknown) == 1 else 'are'} not one of them" if cats else "")
        + ". Name each folder by the model's class name, by its index (0–"
        + f"{num_classes - 1})" + (", or by ImageNet WordNet id (n01440764)" if num_classes == 1000 else "")
        + ", or give a labels.csv. Nothing was scored.")


def for_model(images: "ImageList", num_classes: int, model_name: str, categories: Sequence[str] = (),
              where: str = "") -> "ImageList":
    """``images`` with class-folder labels turned into the model's class indices (see
    :func:`class_indices`); labels.csv and unlabelled sets are returned as they are."""
    if images.layout != "imagefolder" or images.labels is None or not images.classes:
        return images
    idx = class_indices(images.classes, num_classes, model_name, categories, where=where or str(images.root))
    return ImageList(images.root, images.layout, images.paths, tuple(idx[y] for y in images.labels),
                     images.classes)


def resolve_cifar10(path: str | os.PathLike, split: str = "test") -> Path:
    """Return the folder of one CIFAR-10 split (ImageFolder layout) from what the user gave.

    Accepts the ``cifar10-jpeg.tar.gz`` tarball (unpacked once into the cache), a folder
    holding ``cifar10/<split>`` or ``<split>``, or the split folder itself.
    """
    if split not in ("train", "test"):
        raise DataError(f"CIFAR-10 split must be 'train' or 'test', not {split!r}.")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"CIFAR-10 path {p} does not exist.")
    if p.is_file():
        if not tarfile.is_tarfile(p):
            raise DataError(f"{p} is neither a folder nor a tar archive of CIFAR-10.")
        digest = hashlib.sha1(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime}".encode()).hexdigest()[:12]
        target = cache_dir() / f"cifar10-{digest}"
        done = target / ".unpacked"
        if not done.exists():
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(p) as tar:
                tar.extractall(target, filter="data")
            done.touch()
        p = target
    for candidate in (p / "cifar10" / split, p / split, p):
        if candidate.is_dir() and all((candidate / c).is_dir() for c in CIFAR10_CLASSES):
            return candidate
    raise DataError(f"No CIFAR-10 '{split}' split found under {path}: expected "
                    f"cifar10/{split}/<class>/*.jpg with the ten class folders.")


def has_train_split(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a CIFAR-10 tarball or tree with a train split (which training
    steps use); False for anything else, including paths that do not exist."""
    try:
        resolve_cifar10(path, "train")
        return True
    except (DataError, OSError, tarfile.TarError):
        return False


TORCHVISION_CIFAR10 = "torchvision:cifar10"


def download_cifar10(split: str = "test", root: Optional[Path] = None) -> Path:
    """torchvision's own CIFAR-10 download (for users who are online), written once as an
    ImageFolder of PNGs in the cache so that it flows through the same code as local data."""
    import torchvision
    root = root or cache_dir() / "torchvision-cifar10"
    target = root / "imagefolder" / split
    if (target / ".complete").exists():
        return target
    try:
        ds = torchvision.datasets.CIFAR10(str(root), train=(split == "train"), download=True)
    except Exception as e:  # network errors come in many types
        raise DataError(f"Could not download CIFAR-10 ({type(e).__name__}: {e}). Offline? "
                        "Give a local folder or the cifar10 .tar.gz instead.") from None
    for name in ds.classes:
        (target / name).mkdir(parents=True, exist_ok=True)
    for i in range(len(ds)):
        img, label = ds[i]
        img.save(target / ds.classes[label] / f"{i:05d}.png")
    (target / ".complete").touch()
    return target


def open_rgb(path: Path) -> Image.Image:
    """One dataset image as the user sees it (see :func:`compress.images.to_rgb`); a
    DataError naming the file for anything that cannot be read, including images too large
    to decode safely."""
    from compress.errors import ImageError
    from compress.images import open_image_file
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
        blob = torch.load(cached, weights_only=True)
        return blob["x"], blob["y"]
    x = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    for i, p in enumerate(images.paths):
        im = open_rgb(p)
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        x[i] = torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1)
    y = torch.tensor(images.labels if images.labels is not None else [-1] * len(images))
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")   # atomic: torchrun ranks may decode at once
    torch.save({"x": x, "y": y}, tmp)
    os.replace(tmp, cached)
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


def open_labelled(path: str | os.PathLike, split: str = "test") -> ImageList:
    """A labelled set from any of the accepted forms: a CIFAR-10 tarball or tree (its
    ``split``), a labels.csv folder, an ImageFolder, or ``torchvision:cifar10`` (download)."""
    if str(path) == TORCHVISION_CIFAR10:
        return scan_folder(download_cifar10(split))
    p = Path(path).expanduser()
    if p.is_file() and tarfile.is_tarfile(p):
        return scan_folder(resolve_cifar10(p, split))
    if p.is_dir() and ((p / "cifar10" / split).is_dir() or (p / split / CIFAR10_CLASSES[0]).is_dir()):
        return scan_folder(resolve_cifar10(p, split))
    return scan_folder(p)


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
    from compress.measure import check_labels_fit
    images = open_labelled(path)
    if not images.labelled:
        raise DataError(f"{path} has no labels: accuracy needs labelled images "
                        "(labels.csv or one sub-folder per class).")
    images = for_model(images, num_classes, model_name, categories, where=str(path))
    check_labels_fit(images.labels, num_classes, model_name)
    pool_idx, _ = scoring_split(len(images), seed)
    ev_loader, ev = eval_loader(images, transform, limit=limit, seed=seed, batch_size=batch_size,
                                exclude=pool_idx)
    from compress.zoo import describe_data
    return EvalSets(list(ev_loader), len(ev), describe_data(str(path)), pool=images.subset(pool_idx),
                    transform=transform, batch_size=min(batch_size, 16), n_scoring_default=n_scoring,
                    files=tuple(str(p) for p in ev.paths), labels=tuple(ev.labels or ()))


def open_training(path: str | os.PathLike) -> ImageList:
    """Training photos: a CIFAR-10 tarball/folder's train split, a labelled folder, or a
    plain folder of photos without labels (``labels is None``). Empty or missing folders
    are a DataError."""
    try:
        return open_labelled(path, split="train")
    except DataError:
        return scan_folder(path, allow_unlabelled=True)


def train_loader(path: str | os.PathLike, transform, limit: Optional[int] = None, seed: int = 0,
                 batch_size: int = 64, num_classes: Optional[int] = None, model_name: str = "",
                 categories: Sequence[str] = ()) -> DataLoader:
    """Shuffled training batches: a CIFAR-10 tarball/folder gives its train split, a labelled
    folder its images; a plain folder of photos without labels is accepted too (label -1,
    for label-free distillation). ``limit`` picks a seeded subset. Under ``torchrun`` each
    rank gets its own shard through a ``DistributedSampler``."""
    images = open_training(path)
    if num_classes is not None:                 # class folders named as the model's classes
        images = for_model(images, num_classes, model_name, categories)
    images = images.subset(subset_indices(len(images), limit, seed))
    dataset = ImageListDataset(images, transform)
    from compress.distributed import world
    w = world()
    if w.size > 1:
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(dataset, num_replicas=w.size, rank=w.rank, shuffle=True, seed=seed)
        workers = int(os.environ.get("COMPRESSION_LAB_WORKERS", "0"))
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
    return make_loader(dataset, batch_size=batch_size, shuffle=True, seed=seed)
