"""Where the product keeps what it derives: the cache folder (bottom layer, no imports), and
the one way it writes a file that must never be left half-written."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

ASSETS = Path(__file__).resolve().parent.parent / "assets"

_UMASK = os.umask(0o022)
os.umask(_UMASK)                                # read once: the permissions a plain open() would give


def cache_dir() -> Path:
    """Where derived data (unpacked tarballs, decoded tensors, history) is kept.

    ``COMPRESSION_LAB_CACHE`` overrides the default ``~/.cache/compression-lab``.
    """
    root = Path(os.environ.get("COMPRESSION_LAB_CACHE", Path.home() / ".cache" / "compression-lab"))
    root.mkdir(parents=True, exist_ok=True)
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
