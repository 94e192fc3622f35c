"""One at a time: work that uses process-wide state of PyTorch's exporters and compilers.

``torch.onnx.export`` keeps a global "in export" flag, ``torch.export`` / dynamo and
Inductor keep process-wide caches and config patches, and ExecuTorch's passes register
custom operators globally. The dashboard is shared by design: two sessions (threads of one
Streamlit server) that export or compile at the same moment corrupt each other's state
("GLOBALS.in_onnx_export must be False", "KeyError: 'custom'", a PT2E export that falls
back). Every such step runs inside :func:`one_at_a_time`; a step that has to wait says so
through its progress callback, so a page shows "waiting for another session's …" rather
than nothing. The lock is re-entrant: a step may call another (pt2e exports, then compiles).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Optional

from compress.progress import OnProgress, emit

_LOCK = threading.RLock()


@contextmanager
def one_at_a_time(what: str, on_progress: Optional[OnProgress] = None) -> Iterator[None]:
    """Hold the process-wide exporter/compiler lock for ``what`` (e.g. "ONNX export");
    when another thread holds it, say so through ``on_progress`` and wait."""
    if not _LOCK.acquire(blocking=False):
        emit(on_progress, "wait", 0.0, f"waiting for another session's {what} to finish")
        _LOCK.acquire()
    try:
        yield
    finally:
        _LOCK.release()
