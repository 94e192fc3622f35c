"""Where the product keeps what it derives: the cache folder (next to the bottom layer: it
imports only ``errors``), and the one way it writes a file that must never be left
half-written."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from compress.errors import CacheError

ASSETS = Path(__file__).resolve().parent.parent / "assets"

_UMASK = os.umask(0o022)
os.umask(_UMASK)                                # read once: the permissions a plain open() would give


def cache_dir() -> Path:
    """Where derived data (unpacked tarballs, decoded tensors, history) is kept.

    ``COMPRESSION_LAB_CACHE`` overrides the default ``~/.cache/compression-lab``. A folder
    that cannot be made is a CacheError that says how to choose another; one that cannot be
    written is found by what writes there (a read-only cache only slows a speed-up table).
    """
    root = Path(os.environ.get("COMPRESSION_LAB_CACHE", Path.home() / ".cache" / "compression-lab"))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CacheError(f"The cache folder {root} cannot be made ({e.strerror}: {e.filename}). Set "
                         "COMPRESSION_LAB_CACHE to a folder you can write.") from None
    return root


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Write ``path`` whole or not at all. The block writes into an open binary file: a
    temporary file in the same folder (hidden, ``.<name>.…part``), flushed to disk and then
    renamed onto ``path`` (``os.replace``, atomic on one file system) when the block ends.
    When anything fails (no space, a read-only folder, Ctrl-C) the temporary file is
    removed, an earlier ``path`` is left as it was, and the error is raised."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
