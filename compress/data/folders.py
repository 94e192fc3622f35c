"""Finding labelled photos: folders (labels.csv, ImageFolder incl. WordNet ids, flat),
CIFAR-10 (tarball, folder, torchvision), and mapping folder classes to a model's classes.

Paths always come from the user (CLI flag, environment variable or the dashboard).
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from compress.errors import CacheError, DataError
from compress.paths import ASSETS, cache_dir


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class ImageList:
    """What a folder holds: image paths, integer labels (or None) and class names."""
    root: Path
    layout: str                       # "labels.csv", "imagefolder" or "unlabelled"
    paths: tuple[Path, ...]
    labels: Optional[tuple[int, ...]]
    classes: Optional[tuple[str, ...]]
    notes: tuple[str, ...] = ()       # what the user should know about the set (empty class folders)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def subset(self, indices: Sequence[int]) -> "ImageList":
        idx = [int(i) for i in indices]
        return ImageList(self.root, self.layout, tuple(self.paths[i] for i in idx),
                         None if self.labels is None else tuple(self.labels[i] for i in idx),
                         self.classes, self.notes)


def is_hidden(path: Path, root: Path) -> bool:
    """Whether ``path`` (under ``root``) is hidden: it, or a folder between, is named with a
    leading dot. That covers macOS's ``.DS_Store`` and its AppleDouble ``._photo.jpg`` files
    (metadata with a photo's suffix, not photos) and folders such as ``.ipynb_checkpoints``.
    Every scan of the user's folders skips them (datasets here, photos to classify)."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _images_under(folder: Path, root: Path, recursive: bool = True) -> list[Path]:
    """The image files (by suffix, hidden ones skipped) under ``folder``, sorted."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not is_hidden(p, root))


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
        paths, labels, classes, empty = [], [], [], []
        for name in subdirs:
            files = _images_under(root / name, root)
            if not files:
                empty.append(name)
                continue
            classes.append(name)
            paths.extend(files)
            labels.extend([len(classes) - 1] * len(files))
        if paths:
            notes = (f"{len(empty)} class folder{'s' if len(empty) > 1 else ''} of {root} "
                     f"{'hold' if len(empty) > 1 else 'holds'} no images and {'are' if len(empty) > 1 else 'is'} "
                     f"left out: {', '.join(empty[:8])}{', …' if len(empty) > 8 else ''}. Accuracy is over "
                     f"the other {len(classes)} classes only.",) if empty else ()
            return ImageList(root, "imagefolder", tuple(paths), tuple(labels), tuple(classes), notes)
    files = _images_under(root, root, recursive=False)
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
        # utf-8-sig: Excel's "CSV UTF-8" starts the file with a byte-order mark
        with open(labels_csv, newline="", encoding="utf-8-sig") as f:
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


WNID_FILE = ASSETS / "imagenet_wnids.txt"


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
                     images.classes, images.notes)


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
        p = unpack_to_cache(p, "cifar10")
    for candidate in (p / "cifar10" / split, p / split, p):
        if candidate.is_dir() and all((candidate / c).is_dir() for c in CIFAR10_CLASSES):
            return candidate
    raise DataError(f"No CIFAR-10 '{split}' split found under {path}: expected "
                    f"cifar10/{split}/<class>/*.jpg with the ten class folders.")


def unpack_to_cache(tarball: Path, kind: str) -> Path:
    """The cache folder ``tarball`` is unpacked in, unpacked now if it is not yet.

    The cache never holds a partial unpack: the archive is unpacked into a temporary folder
    next to the final one, which is renamed only when every file is out (a folder of the
    final name is complete; one from an earlier version without its ``.unpacked`` mark is
    unpacked again). A truncated or damaged archive, or a cache that cannot be written,
    is a DataError / CacheError naming the file, and leaves nothing behind."""
    st = tarball.stat()
    digest = hashlib.sha1(f"{tarball.resolve()}:{st.st_size}:{st.st_mtime}".encode()).hexdigest()[:12]
    cache = cache_dir()
    target = cache / f"{kind}-{digest}"
    if (target / ".unpacked").exists():
        return target
    try:
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{target.name}.", suffix=".partial"))
    except OSError as e:
        raise CacheError(f"The cache folder {cache} cannot be written ({e.strerror}); {tarball.name} is unpacked "
                         "there. Set COMPRESSION_LAB_CACHE to a folder you can write.") from None
    try:
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        (tmp / ".unpacked").touch()
        if not (target / ".unpacked").exists():     # else another process finished first: use its
            if target.exists():                      # an earlier version's unpack, stopped part-way
                shutil.rmtree(target)
            try:
                os.rename(tmp, target)
            except OSError:
                if not (target / ".unpacked").exists():   # not another process's complete unpack
                    raise
    except tarfile.FilterError as e:
        raise DataError(f"{tarball} holds a file that would be unpacked outside its folder ({e}); it is not "
                        "a dataset archive this program unpacks.") from None
    except (EOFError, tarfile.TarError, zlib.error) as e:
        raise DataError(f"{tarball} is truncated or damaged: {e}. Download or copy it again.") from None
    except OSError as e:                        # no space, a read-only cache, or a gzip that is not one
        what = "is truncated or damaged" if isinstance(e, gzip.BadGzipFile) else "cannot be unpacked into the cache"
        raise DataError(f"{tarball} {what} ({e.strerror or e}). "
                        + ("" if isinstance(e, gzip.BadGzipFile) else
                           f"Free space in {cache} or set COMPRESSION_LAB_CACHE to another folder.")) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


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


def check_labels_fit(labels: Iterable[int], num_classes: int, model_name: str) -> None:
    mx = max(labels, default=-1)
    if mx >= num_classes:
        raise DataError(f"The dataset has label {mx}, but {model_name} has only {num_classes} "
                        "classes: this data does not belong to this model.")


def open_training(path: str | os.PathLike) -> ImageList:
    """Training photos: a CIFAR-10 tarball/folder's train split, a labelled folder, or a
    plain folder of photos without labels (``labels is None``). Empty or missing folders
    are a DataError."""
    try:
        return open_labelled(path, split="train")
    except DataError:
        return scan_folder(path, allow_unlabelled=True)
