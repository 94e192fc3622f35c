"""Where the product keeps what it derives: the cache folder (bottom layer, no imports)."""
from __future__ import annotations

import os
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def cache_dir() -> Path:
    """Where derived data (unpacked tarballs, decoded tensors, history) is kept.

    ``COMPRESSION_LAB_CACHE`` overrides the default ``~/.cache/compression-lab``.
    """
    root = Path(os.environ.get("COMPRESSION_LAB_CACHE", Path.home() / ".cache" / "compression-lab"))
    root.mkdir(parents=True, exist_ok=True)
    return root
